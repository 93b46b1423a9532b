"""Login lockout: failed logins lock one username from one address for a while, with a page that says until when."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user
from django.core.management import call_command
from django.test import Client, RequestFactory
from rest_framework import exceptions
from rest_framework.authentication import BasicAuthentication
from rest_framework.request import Request

from tests.conftest import make_user

PASSWORD = "pw-for-tests-123"
LOGIN = "/accounts/login/"


def attempt(client: Client, username: str, password: str, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def logged_in_as(client: Client) -> str | None:
    user = get_user(client)
    return user.username if user.is_authenticated else None


def fail(client: Client, username: str, times: int, **extra):
    response = None
    for _ in range(times):
        response = attempt(client, username, "wrong-password", **extra)
    return response


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    """These tests check many passwords; how slow a hash is to compute is not what they are about."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def lab(db):
    return make_user("lockme", "labeler")


def test_defaults_lock_after_ten_failures_for_fifteen_minutes_per_username_and_address():
    assert settings.AXES_FAILURE_LIMIT == 10
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_right_password_after_eleven_wrong_ones_is_refused_with_the_lockout_page(lab):
    client = Client()
    response = fail(client, "lockme", 11)
    assert response.status_code == 429
    response = attempt(client, "lockme", PASSWORD)
    assert response.status_code == 429
    page = response.content.decode()
    assert "This account is temporarily locked" in page and "Try again at" in page
    assert "didn&#x27;t match" not in page
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert 'value="lockme"' in page  # the form is still there, with the username kept
    assert logged_in_as(client) is None


def test_nine_failures_then_the_right_password_logs_in_and_clears_the_count(lab):
    client = Client()
    assert fail(client, "lockme", 9).status_code == 200  # the form again, "didn't match"
    assert attempt(client, "lockme", PASSWORD).status_code == 302
    assert logged_in_as(client) == "lockme"
    assert not AccessAttempt.objects.filter(username="lockme").exists()


def test_lockout_is_for_that_username_from_that_address_only(lab):
    make_user("neighbour", "labeler")
    fail(Client(), "lockme", 10)
    same_address_other_user = Client()
    assert attempt(same_address_other_user, "neighbour", PASSWORD).status_code == 302
    other_address_same_user = Client(REMOTE_ADDR="10.1.2.3")
    assert attempt(other_address_same_user, "lockme", PASSWORD).status_code == 302
    assert attempt(Client(), "lockme", PASSWORD).status_code == 429


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(lab):
    client = Client()
    fail(client, "lockme", 10, HTTP_X_FORWARDED_FOR="203.0.113.1")
    assert attempt(client, "lockme", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99").status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(lab, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    fail(Client(), "lockme", 10, HTTP_X_FORWARDED_FOR="203.0.113.1")
    assert attempt(Client(), "lockme", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 429
    assert attempt(Client(), "lockme", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 302


def test_login_works_again_once_the_window_has_passed(lab, settings):
    settings.AXES_COOLOFF_TIME = timedelta(minutes=5)
    fail(Client(), "lockme", 10)
    assert attempt(Client(), "lockme", PASSWORD).status_code == 429
    # Five minutes and a second later, as far as the stored failures are concerned.
    rows = AccessAttempt.objects.filter(username="lockme")
    rows.update(attempt_time=rows.get().attempt_time - timedelta(minutes=5, seconds=1))
    client = Client()
    assert attempt(client, "lockme", PASSWORD).status_code == 302
    assert logged_in_as(client) == "lockme"


def test_attempts_during_the_lockout_do_not_push_the_retry_time_back(lab):
    fail(Client(), "lockme", 10)
    first = AccessAttempt.objects.get(username="lockme")
    fail(Client(), "lockme", 3)
    again = AccessAttempt.objects.get(username="lockme")
    assert (again.attempt_time, again.failures_since_start) == (first.attempt_time, first.failures_since_start)


def test_axes_reset_unlocks_at_once(lab):
    fail(Client(), "lockme", 10)
    call_command("axes_reset_username", "lockme")
    assert attempt(Client(), "lockme", PASSWORD).status_code == 302


def test_limit_and_window_follow_the_settings(lab, settings):
    settings.AXES_FAILURE_LIMIT = 3
    assert fail(Client(), "lockme", 2).status_code == 200
    response = fail(Client(), "lockme", 1)
    assert response.status_code == 429 and "temporarily locked" in response.content.decode()


def test_password_authentication_through_drf_is_locked_too(lab):
    """No API endpoint takes a password today; DRF's password authentication would hit the same lockout."""
    fail(Client(), "lockme", 10)
    credentials = base64.b64encode(f"lockme:{PASSWORD}".encode()).decode()
    request = Request(RequestFactory().get("/api/label/", HTTP_AUTHORIZATION=f"Basic {credentials}"))
    with pytest.raises(exceptions.AuthenticationFailed):
        BasicAuthentication().authenticate(request)
    fresh = Request(
        RequestFactory().get("/api/label/", REMOTE_ADDR="10.9.9.9", HTTP_AUTHORIZATION=f"Basic {credentials}")
    )
    assert BasicAuthentication().authenticate(fresh)[0] == lab


def test_api_authentication_takes_no_password():
    """Token and session only: a password-taking class added here must show the lockout answer to API clients."""
    assert settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] == [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ]


def test_limit_and_window_come_from_the_environment_and_zero_is_refused(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()))"
    )
    env = dict(
        os.environ,
        LOGIN_FAILURE_LIMIT="5",
        LOGIN_LOCKOUT_MINUTES="30",
        RLHF_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[-2:] == ["5", "1800"]
    env["LOGIN_LOCKOUT_MINUTES"] = "0"  # would silently turn the lockout off
    refused = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "LOGIN_LOCKOUT_MINUTES must be at least 1, got 0" in refused.stderr
