"""People, teams and tokens in Chromium: an admin adds a labeler with a set-password link, the labeler sets a
password, logs in, makes an API token on their profile and labels through the API, and the admin then limits
the project to a team the labeler is not in."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from labeling_app.models import Annotation
from labeling_app.roles import user_roles
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "Lantern-harbour-9-quiet"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"people-{name}.png"), full_page=True)


def login_to(page, live_server, username: str, next_path: str, password: str = "pw-for-tests-123") -> None:
    """Log in straight to `next_path` (the admin's landing page, the training dashboard, is not this test's)."""
    page.goto(f"{live_server.url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_path}")


def api_next(live_server, project_id: int, key: str) -> tuple[int, dict]:
    """POST the next-task call over real HTTP with only the token: no browser cookies."""
    request = urllib.request.Request(
        f"{live_server.url}/api/label/projects/{project_id}/next/",
        method="POST",
        headers={"Authorization": f"Token {key}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_admin_invites_a_labeler_who_sets_a_password_makes_a_token_and_is_then_left_out_of_a_team(
    page, browser, live_server, admin_user, labeler, demo_project
):
    # The admin adds "nora" as a labeler and is shown her one-time link.
    page.set_default_timeout(30_000)  # a loaded 2-core machine
    login_to(page, live_server, "adm1", "/people/")
    assert page.locator("nav >> text=People").get_attribute("href") == "/people/"
    page.fill("#id_username", "nora")
    page.fill("#id_email", "nora@example.org")
    assert page.is_checked("#person-form input[name=roles][value=labeler]")
    page.click("text=Create and get link")
    page.wait_for_selector("#invite-link")
    link = page.input_value("#invite-link")
    assert re.match(rf"{re.escape(live_server.url)}/accounts/set-password/\w+/[\w-]+/$", link), link
    assert page.locator("tr[data-username=nora]").inner_text().count("Invited") == 1
    shot(page, "1-admin-people-invite")
    nora = User.objects.get(username="nora")
    assert user_roles(nora) == {"labeler"} and not nora.has_usable_password()

    # Nora, in a browser of her own, sets her password through the link and logs in.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    nora_page = context.new_page()
    nora_page.set_default_timeout(30_000)
    try:
        nora_page.goto(link)
        nora_page.fill("#id_new_password1", PASSWORD)
        nora_page.fill("#id_new_password2", PASSWORD)
        shot(nora_page, "2-set-password")
        nora_page.click("text=Set password")
        nora_page.wait_for_url("**/accounts/login/")
        assert "Password set for nora" in nora_page.inner_text(".messages")
        nora_page.goto(link)
        assert "This link no longer works" in nora_page.inner_text("main")
        login_to(nora_page, live_server, "nora", "/label/", PASSWORD)

        # Her profile: create a token, shown once in full, then only its prefix.
        nora_page.click("header >> text=nora")
        nora_page.wait_for_url("**/accounts/profile/")
        assert nora_page.is_visible("#no-token")
        nora_page.click("text=Create a token")
        nora_page.wait_for_selector("#new-token")
        key = nora_page.input_value("#new-token")
        assert key == Token.objects.get(user__username="nora").key
        assert nora_page.inner_text("#token-prefix") == key[:8] + "…"
        shot(nora_page, "3-profile-new-token")
        nora_page.goto(f"{live_server.url}/accounts/profile/")
        assert key not in nora_page.content() and nora_page.inner_text("#token-prefix") == key[:8] + "…"
        shot(nora_page, "4-profile-prefix-only")
    finally:
        context.close()

    # The token works against the API: Nora gets a task of the open project.
    status, body = api_next(live_server, demo_project.pk, key)
    assert status == 200 and body["task_id"], body
    assert Annotation.objects.filter(labeler__username="nora", task_id=body["task_id"]).exists()

    # The admin limits the project to a team of lab1 only.
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/")
    page.check("#team input[name=access][value=team]")
    page.check(f"#team input[name=members][value='{labeler.pk}']")
    assert not page.is_checked(f"#team input[name=members][value='{nora.pk}']")
    page.click("text=Save who may label")
    page.wait_for_selector(".messages")
    assert "Only the team may label" in page.inner_text(".messages")
    assert page.inner_text("#access-summary") == "team only: lab1"
    shot(page, "5-project-team")

    # Nora's token now finds no such project, and her open task there is closed to her.
    status, body = api_next(live_server, demo_project.pk, key)
    assert status == 404, body
    demo_project.refresh_from_db()
    assert demo_project.team_only and list(demo_project.team.values_list("username", flat=True)) == ["lab1"]

    # Deactivating Nora (her label stays) also ends her token.
    page.goto(f"{live_server.url}/people/")
    page.click("tr[data-username=nora] >> text=Deactivate")
    page.wait_for_selector(".messages")
    assert "nora deactivated" in page.inner_text(".messages")
    shot(page, "6-people-deactivated")
    status, _ = api_next(live_server, demo_project.pk, key)
    assert status == 401
    assert Annotation.objects.filter(labeler__username="nora").count() == 1
