"""Health endpoints for compose healthchecks and load balancers: /healthz (alive) and /readyz (ready to serve)."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from health_check.base import HealthCheck
from health_check.checks import Cache, Database
from health_check.contrib.redis import Redis
from health_check.exceptions import ServiceUnavailable
from kombu.exceptions import KombuError
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

# Seconds the workers get to answer the broadcast; the answer to /readyz takes about this long.
WORKER_REPLY_SECONDS = 1.0
BROKER_CONNECT_SECONDS = 2.0


@never_cache
@require_safe
def healthz(request):
    """Liveness: the web process answers. It touches neither the database nor Redis, so an outage
    of those never makes an orchestrator restart healthy web containers."""
    return JsonResponse({"status": "ok"})


@dataclasses.dataclass
class CeleryQueues(HealthCheck):
    """At least one live Celery worker consumes each queue in `queues`."""

    queues: tuple[str, ...] = ()
    broker_url: str = dataclasses.field(default="", repr=False)

    def run(self) -> None:
        from config.celery import app

        try:
            with app.connection_for_write(self.broker_url or None) as connection:
                # One attempt: Celery's own retry loop would keep the probe waiting far past its timeout.
                connection.ensure_connection(max_retries=0, timeout=BROKER_CONNECT_SECONDS)
                replies = app.control.inspect(timeout=WORKER_REPLY_SECONDS, connection=connection).active_queues() or {}
        except (OSError, KombuError, RedisError) as exc:
            raise ServiceUnavailable("cannot reach the Celery broker (Redis)") from exc
        consumed = {queue.get("name") for queues in replies.values() for queue in queues or ()}
        missing = [name for name in self.queues if name not in consumed]
        if missing:
            raise ServiceUnavailable(f"no worker consumes queue {', '.join(repr(name) for name in missing)}")


def readiness_queues() -> tuple[str, ...]:
    """The queues work is sent to: the app's default queue (imports, exports) and the training queue."""
    from config.celery import app

    return tuple(dict.fromkeys((app.conf.task_default_queue, settings.TRAINING_QUEUE)))


def readiness_checks() -> dict[str, HealthCheck]:
    """Name -> check. Names are what the JSON answer shows: never hosts, URLs or passwords."""
    broker_url = settings.CELERY_BROKER_URL
    return {
        "database": Database(),
        "cache": Cache(),
        "redis": Redis(
            client_factory=lambda: AsyncRedis.from_url(
                broker_url, socket_connect_timeout=BROKER_CONNECT_SECONDS, socket_timeout=BROKER_CONNECT_SECONDS
            )
        ),
        "celery": CeleryQueues(queues=readiness_queues(), broker_url=broker_url),
    }


@never_cache
@require_safe
async def readyz(request):
    """Readiness: 200 when PostgreSQL, Redis (cache and broker) and a worker for every queue answer, else 503.

    The body names each check and, for a failing one, what is wrong, e.g.
    {"status": "unavailable", "checks": {"database": "ok", "celery": "Unavailable: no worker consumes queue 'training'", ...}}.
    """
    checks = readiness_checks()
    executor = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    try:
        results = await asyncio.gather(*(check.get_result(executor) for check in checks.values()))
    finally:
        executor.shutdown(wait=False)  # a check stuck past its timeout must not hold the answer back
    report = {name: str(result.error) if result.error else "ok" for name, result in zip(checks, results)}
    ready = all(value == "ok" for value in report.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": report}, status=200 if ready else 503)
