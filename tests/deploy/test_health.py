"""/healthz and /readyz against the real PostgreSQL, Redis and a real Celery worker."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from django.conf import settings as django_settings


def dead_redis_url() -> str:
    """A Redis URL on a port nothing listens on (bound once to find it free, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def assert_no_secrets(body: str) -> None:
    secrets = (
        django_settings.SECRET_KEY,
        django_settings.DATABASE_URL,
        django_settings.REDIS_URL,
        django_settings.DATABASES["default"]["PASSWORD"],
    )
    for secret in filter(None, secrets):
        assert secret not in body


# No database mark: pytest-django fails any query, so this also proves /healthz never touches PostgreSQL.
def test_healthz_is_200_without_database_or_redis(client, settings):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]

    dead = dead_redis_url()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead}}
    settings.CELERY_BROKER_URL = dead
    assert client.get("/healthz").status_code == 200
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_readyz_is_200_when_a_worker_consumes_every_queue(client, celery_worker, training_queue):
    deadline = time.monotonic() + 15  # a worker started for this test may need a moment to answer broadcasts
    while (response := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    body = response.json()
    assert response.status_code == 200, body
    assert body == {"status": "ok", "checks": {"database": "ok", "cache": "ok", "redis": "ok", "celery": "ok"}}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_503_naming_the_queue_no_worker_consumes(client, celery_worker, settings):
    settings.TRAINING_QUEUE = missing = f"nobody-{uuid.uuid4().hex[:8]}"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert missing in body["checks"]["celery"]
    assert celery_worker.test_queue not in body["checks"]["celery"]  # the default queue has its worker
    assert {k: v for k, v in body["checks"].items() if k != "celery"} == {
        "database": "ok",
        "cache": "ok",
        "redis": "ok",
    }


@pytest.mark.django_db
def test_readyz_is_503_naming_redis_when_redis_is_down(client, settings):
    dead = dead_redis_url()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead}}
    settings.CELERY_BROKER_URL = dead
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert "Redis" in body["checks"]["redis"]
    assert body["checks"]["cache"] != "ok"
    assert "broker" in body["checks"]["celery"]
    assert_no_secrets(response.content.decode())
    assert dead.split("//")[1].split("/")[0] not in response.content.decode()  # not even the host:port
