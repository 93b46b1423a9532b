"""The People page and the profile page as an admin and a user use them: the link and the key shown once,
errors said on the page, and an admin who cannot lock the app out of its last admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from rest_framework.authtoken.models import Token

from labeling_app.roles import user_roles

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_create_shows_the_link_on_that_answer_only(admin_client):
    r = admin_client.post(
        reverse("people:create"), {"username": "tina", "email": "", "roles": ["labeler", "researcher"]}
    )
    assert r.status_code == 200
    link = r.context["invite"]["link"]
    assert link.startswith("http://testserver/accounts/set-password/") and link in r.content.decode()
    assert user_roles(User.objects.get(username="tina")) == {"labeler", "researcher"}
    listing = admin_client.get(reverse("people:list")).content.decode()
    assert "tina" in listing and link not in listing and "Invited: no password yet" in listing


def test_create_errors_are_shown_beside_the_fields(admin_client, labeler):
    r = admin_client.post(reverse("people:create"), {"username": "lab1", "roles": ["labeler"]})
    assert r.status_code == 400 and "A user named &#x27;lab1&#x27; already exists" in r.content.decode()
    r = admin_client.post(reverse("people:create"), {"username": "uma"})
    assert r.status_code == 400 and "This field is required" in r.content.decode()
    assert not User.objects.filter(username="uma").exists()


def test_an_admin_cannot_demote_or_deactivate_themselves_as_the_last_admin(admin_client, admin_user):
    r = admin_client.post(reverse("people:roles", args=[admin_user.pk]), {"roles": ["labeler"]}, follow=True)
    assert "adm1 is the last active admin" in r.content.decode()
    r = admin_client.post(reverse("people:active", args=[admin_user.pk]), {"active": "0"}, follow=True)
    assert "adm1 is the last active admin" in r.content.decode()
    admin_user.refresh_from_db()
    assert admin_user.is_active and "admin" in user_roles(User.objects.get(pk=admin_user.pk))


def test_roles_and_deactivation_from_the_page(admin_client, labeler):
    admin_client.post(reverse("people:roles", args=[labeler.pk]), {"roles": ["labeler", "researcher"]})
    assert user_roles(User.objects.get(pk=labeler.pk)) == {"labeler", "researcher"}
    admin_client.post(reverse("people:active", args=[labeler.pk]), {"active": "0"})
    assert not User.objects.get(pk=labeler.pk).is_active
    r = admin_client.post(reverse("people:invite", args=[labeler.pk]), follow=True)
    assert "reactivate them before sending a link" in r.content.decode()
    admin_client.post(reverse("people:active", args=[labeler.pk]), {"active": "1"})
    assert User.objects.get(pk=labeler.pk).is_active


def test_profile_token_key_once_then_prefix_and_revoke(client, researcher):
    client.force_login(researcher)
    assert "You have no API token" in client.get(reverse("profile")).content.decode()
    created = client.post(reverse("profile_token_create")).content.decode()
    key = Token.objects.get(user=researcher).key
    assert key in created
    page = client.get(reverse("profile")).content.decode()
    assert key not in page and f"{key[:8]}…" in page
    r = client.post(reverse("profile_token_revoke"), follow=True)
    assert "API token revoked" in r.content.decode() and not Token.objects.filter(user=researcher).exists()
