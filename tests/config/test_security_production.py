"""Production settings: TLS redirect, HSTS and the proxy's TLS header from the environment, and no weak SECRET_KEY."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from config.env import GENERATE_SECRET_KEY

SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({k: getattr(s, k) for k in "
    "('SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_SSL_REDIRECT', 'SECURE_PROXY_SSL_HEADER', "
    "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE')}))"
)


def start(tmp_path, code: str = SHOW, args: tuple[str, ...] = (), **env_vars: str) -> subprocess.CompletedProcess:
    """A fresh interpreter loading the settings (they are read once, at start) with the given environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SECURE_") and k not in ("SECRET_KEY", "RLHF_ENV", "ALLOWED_HOSTS")
    }
    env.update({"RLHF_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings", **env_vars})
    command = [sys.executable, *args] if args else [sys.executable, "-c", code]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def shown(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


PRODUCTION = {"RLHF_ENV": "production", "ALLOWED_HOSTS": "rlhf.example.org"}


@pytest.mark.parametrize(
    "weak_key, why",
    [
        ("short-but-varied-0123456789", "it has 27 characters, fewer than 50"),
        ("ab" * 40, "it has 2 different characters, fewer than 5"),
        ("django-insecure-" + secrets.token_urlsafe(64), "it starts with 'django-insecure-'"),
    ],
)
def test_a_weak_secret_key_stops_production_with_how_to_make_one(tmp_path, weak_key, why):
    result = start(tmp_path, SECRET_KEY=weak_key, **PRODUCTION)
    assert result.returncode != 0
    assert "SECRET_KEY is too weak for RLHF_ENV=production" in result.stderr and why in result.stderr
    assert GENERATE_SECRET_KEY in result.stderr
    assert weak_key not in result.stderr  # the key itself is never printed


def test_weak_keys_are_fine_outside_production(tmp_path):
    assert shown(start(tmp_path, SECRET_KEY="dev"))["SECURE_HSTS_SECONDS"] == 0


def test_production_with_a_strong_key_turns_on_tls_redirect_hsts_and_secure_cookies(tmp_path):
    values = shown(
        start(
            tmp_path,
            SECRET_KEY=secrets.token_urlsafe(64),
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
            **PRODUCTION,
        )
    )
    assert values == {
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_each_tls_setting_can_be_changed_from_the_environment(tmp_path):
    values = shown(
        start(
            tmp_path,
            SECRET_KEY=secrets.token_urlsafe(64),
            SECURE_SSL_REDIRECT="off",
            SECURE_HSTS_SECONDS="600",
            SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_SSL,on",
            **PRODUCTION,
        )
    )
    assert (values["SECURE_SSL_REDIRECT"], values["SECURE_HSTS_SECONDS"], values["SECURE_HSTS_INCLUDE_SUBDOMAINS"]) == (
        False,
        600,
        False,
    )
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL", "on"]


def test_a_malformed_proxy_header_stops_the_start(tmp_path):
    result = start(
        tmp_path, SECRET_KEY=secrets.token_urlsafe(64), SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https", **PRODUCTION
    )
    assert result.returncode != 0 and "SECURE_PROXY_SSL_HEADER must be HEADER,VALUE" in result.stderr


def test_production_passes_djangos_deployment_checks(tmp_path):
    result = start(
        tmp_path,
        args=("manage.py", "check", "--deploy", "--fail-level", "WARNING"),
        SECRET_KEY=secrets.token_urlsafe(64),
        **PRODUCTION,
    )
    # HSTS preload (W021) is a commitment to browser vendors' lists that each deployment makes for itself.
    reported = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if "security.W" in line]
    assert [line for line in reported if "security.W021" not in line] == []


def test_behind_the_proxy_https_requests_are_served_and_plain_ones_redirected(tmp_path):
    """The real middleware stack in production mode: a request the proxy marks as https is not redirected."""
    code = """
import django; django.setup()
from django.test import Client
c = Client(HTTP_HOST="rlhf.example.org")
plain = c.get("/accounts/login/")
tls = c.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
print(plain.status_code, plain.get("Location"), tls.status_code, tls.get("Strict-Transport-Security"))
"""
    # config.settings_test: the page links static files, and no collectstatic ran for hashed names.
    result = start(
        tmp_path,
        code,
        SECRET_KEY=secrets.token_urlsafe(64),
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        DJANGO_SETTINGS_MODULE="config.settings_test",
        **PRODUCTION,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "301",
        "https://rlhf.example.org/accounts/login/",
        "200",
        "max-age=31536000;",
        "includeSubDomains",
    ]
