"""People services: creating users, set-password links, roles, deactivation with the last-admin rule, API tokens."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth import authenticate
from django.test import Client, RequestFactory
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from rest_framework.authtoken.models import Token

from config.errors import ServiceError
from labeling_app.roles import user_roles
from labeling_app.selectors.people import people_list, token_of
from labeling_app.services.people import (
    token_create,
    token_revoke,
    user_create,
    user_invite_path,
    user_set_active,
    user_set_roles,
)
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
GOOD_PASSWORD = "a-long-and-unusual-passphrase-7"


def fresh(user) -> User:
    return User.objects.get(pk=user.pk)


def test_create_without_password_gets_a_link_that_sets_it_once():
    user = user_create(username="nina", email="nina@example.org", roles=["labeler"])
    assert not user.has_usable_password() and user_roles(fresh(user)) == {"labeler"}
    path = user_invite_path(user=user)
    uidb64, token = path.rstrip("/").split("/")[-2:]
    assert force_str(urlsafe_base64_decode(uidb64)) == str(user.pk)
    assert default_token_generator.check_token(user, token)

    client = Client()
    follow = client.get(path)  # Django moves the token into the session and redirects to .../set-password/
    assert follow.status_code == 302
    page = client.post(follow["Location"], {"new_password1": GOOD_PASSWORD, "new_password2": GOOD_PASSWORD})
    assert page.status_code == 302 and page["Location"] == "/accounts/login/"
    assert fresh(user).check_password(GOOD_PASSWORD)
    # Used once: the same link no longer works.
    again = Client().get(path)
    assert again.status_code == 200 and b"This link no longer works" in again.content


def test_link_expires(settings):
    user = user_create(username="olga", roles=["labeler"])
    path = user_invite_path(user=user)
    settings.PASSWORD_RESET_TIMEOUT = -1  # any age is past the limit: what a link older than 3 days sees
    page = Client().get(path, follow=True)
    assert b"This link no longer works" in page.content


def test_link_of_a_deactivated_user_stops_working_and_none_is_made():
    user = user_create(username="pia", roles=["labeler"])
    path = user_invite_path(user=user)
    user_set_active(user=user, active=False)
    assert b"This link no longer works" in Client().get(path, follow=True).content
    with pytest.raises(ServiceError, match="deactivated"):
        user_invite_path(user=user)


def test_create_refuses_bad_input_with_what_to_fix():
    user_create(username="quinn", roles=["labeler"])
    with pytest.raises(ServiceError, match="already exists") as exc:
        user_create(username="quinn", roles=["researcher"])
    assert exc.value.field == "username" and exc.value.status == 409
    with pytest.raises(ServiceError, match="at least one role"):
        user_create(username="rita", roles=[])
    with pytest.raises(ServiceError, match="Unknown role 'boss'"):
        user_create(username="rita", roles=["boss"])
    with pytest.raises(ServiceError) as exc:
        user_create(username="rita and sam", roles=["labeler"])
    assert exc.value.field == "username"
    with pytest.raises(ServiceError, match="too common") as exc:
        user_create(username="rita", roles=["labeler"], password="password")
    assert exc.value.field == "password"
    assert not User.objects.filter(username__startswith="rita").exists()


def test_roles_are_replaced_and_listed():
    user = user_create(username="sam", roles=["labeler"], password=GOOD_PASSWORD)
    user_set_roles(user=user, roles=["researcher", "admin"])
    assert user_roles(fresh(user)) == {"researcher", "admin"}
    listed = {u.username: u for u in people_list()}
    assert listed["sam"].roles == ["researcher", "admin"] and not listed["sam"].invite_pending


def test_the_last_admin_cannot_be_demoted_or_deactivated_but_one_of_two_can():
    first = make_user("boss1", "admin")
    with pytest.raises(ServiceError, match="last active admin") as exc:
        user_set_roles(user=first, roles=["labeler"])
    assert exc.value.status == 409
    with pytest.raises(ServiceError, match="last active admin"):
        user_set_active(user=first, active=False)
    assert user_roles(fresh(first)) == {"admin", "researcher"} and fresh(first).is_active

    second = make_user("boss2", "admin")
    user_set_active(user=first, active=False)
    # Now boss2 is the last active one: the deactivated boss1 does not count.
    with pytest.raises(ServiceError, match="boss2 is the last active admin"):
        user_set_roles(user=second, roles=["researcher"])
    user_set_active(user=first, active=True)
    user_set_roles(user=second, roles=["researcher"])
    assert user_roles(fresh(second)) == {"researcher"}


def test_a_deactivated_user_cannot_log_in_nor_use_a_token_and_labels_stay(demo_project, labeler):
    from labeling_app.services.leases import task_assign_next

    token = token_create(user=labeler)
    assignment = task_assign_next(project=demo_project, labeler=labeler)
    api = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get(f"/api/label/tasks/{assignment.task_id}/").status_code == 200
    session = Client()
    session.force_login(labeler)

    user_set_active(user=labeler, active=False)
    assert api.get(f"/api/label/tasks/{assignment.task_id}/").status_code == 401
    assert authenticate(RequestFactory().post("/accounts/login/"), username="lab1", password="pw-for-tests-123") is None
    assert session.get("/label/").status_code == 302  # the open session ends too
    assert labeler.annotations.count() == 1  # nothing of theirs is deleted


def test_token_create_replaces_and_revoke_deletes(labeler):
    first = token_create(user=labeler)
    second = token_create(user=labeler)
    assert first.key != second.key and token_of(labeler).key == second.key
    assert Client(HTTP_AUTHORIZATION=f"Token {first.key}").get("/api/schema/").status_code == 401
    assert Client(HTTP_AUTHORIZATION=f"Token {second.key}").get("/api/schema/").status_code == 200
    assert token_revoke(user=labeler) is True and token_revoke(user=labeler) is False
    assert not Token.objects.filter(user=labeler).exists()
    assert Client(HTTP_AUTHORIZATION=f"Token {second.key}").get("/api/schema/").status_code == 401
