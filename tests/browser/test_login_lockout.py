"""Login lockout in a real browser: wrong passwords until the page says the account is locked and until when."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.conftest import ARTIFACTS, login, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"login-{name}.png"), full_page=True)


def test_wrong_passwords_lock_the_account_and_the_page_says_until_when(page, live_server, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    make_user("lab-lock", "labeler")
    make_user("lab-next-desk", "labeler")

    for _ in range(2):
        login(page, live_server, "lab-lock", "not-my-password")
        assert page.locator("[role=alert]").inner_text() == "Your username and password didn't match. Please try again."
    shot(page, "1-wrong-password")

    login(page, live_server, "lab-lock", "not-my-password")  # the third failure locks
    alert = page.locator("#lockout")
    assert "This account is temporarily locked" in alert.inner_text()
    assert re.search(r"Try again at \d\d:\d\d UTC \(in 1[45]\sminutes\)", alert.inner_text())

    login(page, live_server, "lab-lock")  # the right password now: still refused, same message
    assert page.locator("#lockout").is_visible()
    assert page.url.endswith("/accounts/login/")
    assert page.input_value("#id_username") == "lab-lock"
    shot(page, "2-locked")

    # A colleague at the next desk (same address) logs in as usual.
    login(page, live_server, "lab-next-desk")
    assert page.url.endswith("/label/")
