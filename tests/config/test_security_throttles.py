"""API throttles: past its rate a user gets 429 with Retry-After, counted per user in Redis, and rates come from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.db import connections
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from tests.conftest import make_user


@pytest.fixture(autouse=True)
def _own_counters(settings):
    """Counters live in the shared Redis: a key prefix of its own keeps this test's counts from other runs'."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"throttle-test-{uuid.uuid4().hex}"}}


def rates(settings, **scopes):
    """Test rates are per day: the counting window is aligned to the clock, and a day-long one is not crossed mid-test."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **scopes},
    }


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


ALLOWED = 404  # the cheapest labeler call: an annotation that does not exist, answered after the throttle let it in


def call(client) -> int:
    return client.get(reverse("api:label-annotation", args=[0])).status_code


def test_default_rates_leave_labeling_alone_and_keep_anonymous_callers_low(settings):
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] == {"user": "1200/min", "anon": "60/min"}


def test_past_the_user_rate_the_api_answers_429_with_retry_after(db, settings):
    rates(settings, user="3/day")
    labeler = make_user("fast", "labeler")
    client = token_client(labeler)
    assert [call(client) for _ in range(3)] == [ALLOWED] * 3
    refused = client.get(reverse("api:label-annotation", args=[0]))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 24 * 3600
    assert "throttled" in refused.json()["detail"].lower()
    # The count is per user: another user is not held back by the first one's calls.
    assert call(token_client(make_user("calm", "labeler"))) == ALLOWED


def test_session_users_share_the_same_per_user_count(db, settings):
    rates(settings, user="2/day")
    user = make_user("browser-user", "labeler")
    session = APIClient()
    session.force_login(user)
    tokened = token_client(user)
    assert [call(session), call(tokened), call(session)] == [ALLOWED, ALLOWED, 429]


class OpenApi(APIView):
    """A view anyone may call: the app's API has none (every endpoint needs a user), so the anon rate is tried here."""

    permission_classes = [AllowAny]

    def get(self, request):
        return Response({})


def test_anonymous_callers_are_counted_per_address(settings):
    rates(settings, anon="2/day")
    view = OpenApi.as_view()
    factory = APIRequestFactory()
    statuses = [view(factory.get("/open/", REMOTE_ADDR="192.0.2.1")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert view(factory.get("/open/", REMOTE_ADDR="192.0.2.2")).status_code == 200


def test_rate_off_means_no_limit(db, settings):
    rates(settings, user=None)
    client = token_client(make_user("unlimited", "labeler"))
    assert all(call(client) == ALLOWED for _ in range(30))


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_are_each_counted(settings):
    """Parallel requests (several gunicorn workers) must not overwrite each other's counts."""
    rates(settings, user="20/day")
    client_token = Token.objects.create(user=make_user("parallel", "labeler")).key
    statuses: list[int] = []

    def hammer():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {client_token}")
        try:
            for _ in range(6):
                statuses.append(call(client))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hammer) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(ALLOWED) == 20 and statuses.count(429) == 10


def test_rates_come_from_the_environment_and_typos_stop_the_start(tmp_path):
    env = dict(
        os.environ,
        API_THROTTLE_USER="50/sec",
        API_THROTTLE_ANON="off",
        RLHF_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    code = "import django; django.setup(); from django.conf import settings; print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])"
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "{'user': '50/sec', 'anon': None}"
    env["API_THROTTLE_USER"] = "50 per minute"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "API_THROTTLE_USER must look like 600/min" in bad.stderr


def test_a_window_counter_is_one_redis_integer_that_expires_after_two_windows(db, settings):
    """The count lives in one key per user and window, under the cache's prefix, and expires on its own."""
    import redis as redis_lib
    from django.core.cache import cache

    rates(settings, user="5/min")
    labeler = make_user("counted", "labeler")
    client = token_client(labeler)
    assert [call(client) for _ in range(2)] == [ALLOWED] * 2
    server = redis_lib.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    keys = server.keys(cache.make_key("throttle_user_*"))
    # One key, or two when the calls straddled a minute boundary.
    assert 1 <= len(keys) <= 2 and all(k.decode().rsplit(":", 1)[0].endswith(f"_{labeler.pk}") for k in keys)
    window = int(keys[0].decode().rsplit(":", 1)[1])
    assert abs(window - int(time.time() // 60)) <= 1
    assert sum(int(server.get(k)) for k in keys) == 2
    assert all(60 < server.ttl(k) <= 120 for k in keys)
