"""Redis down during labeling: labelers keep labeling; the API throttle and the cache fail open (the labels are in PostgreSQL)."""

from __future__ import annotations

import time

import pytest
import redis
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling_app.models import Annotation
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = pytest.mark.django_db


def next_and_submit(api, project, labeler) -> int:
    nxt = api.post(reverse("api:label-next", args=[project.pk]))
    assert nxt.status_code == 200, nxt.content
    task_id = nxt.json()["task_id"]
    ann = Annotation.objects.get(task_id=task_id, labeler=labeler)
    submitted = api.post(
        reverse("api:label-submit", args=[task_id]), {"ratings": valid_ratings(ann.task, labeler)}, format="json"
    )
    assert submitted.status_code == 200, submitted.content
    return task_id


def test_labelers_keep_labeling_through_the_api_and_the_page_while_redis_is_down(
    private_redis, settings, demo_project, labeler
):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url()}}
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    page = Client()
    page.force_login(labeler)

    first = next_and_submit(api, demo_project, labeler)
    counters = redis.Redis.from_url(private_redis.url()).keys("*throttle*")
    assert counters, "the API throttle counts in this Redis while it is up"

    private_redis.stop()
    started = time.monotonic()
    second = next_and_submit(api, demo_project, labeler)
    nxt = page.post(reverse("labeler:next", args=[demo_project.pk]))
    assert nxt.status_code == 302, nxt.content[:500]
    shown = page.get(nxt["Location"])
    assert shown.status_code == 200 and b"Response A" in shown.content
    assert page.get(reverse("labeler:home")).status_code == 200
    assert time.monotonic() - started < 10, "a Redis outage must not make each request wait"

    stored = Annotation.objects.filter(labeler=labeler, status=Annotation.Status.SUBMITTED)
    assert set(stored.values_list("task_id", flat=True)) == {first, second}
