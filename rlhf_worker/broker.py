"""The Celery broker (Redis) as training jobs see it: send a job's message without waiting long, and which messages it still holds.

Reading what the broker holds uses the Redis layout of kombu's Redis transport: a queue is a list per
priority step (named by the channel's `_q_for_pri`), and a message delivered to a worker but not yet
acknowledged is kept in the channel's `unacked_key` hash until the worker acks it (or it is restored to
its queue). A task id found in neither is gone: the broker lost it (restarted without its append-only
file, flushed), or a worker took it and died before the job row said so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.exceptions import RedisError

from config.errors import ServiceError

logger = logging.getLogger(__name__)

# One quick try: a start during an outage is refused within about a second, not after Celery's retry loop.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.2}
BROKER_CONNECT_SECONDS = 2.0


class BrokerUnavailable(ServiceError):
    """The broker did not take a message: the caller answers 503 and stores nothing."""

    status = 503


def broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    return OperationalError, RedisError, OSError


def task_send(task, *, args: list, queue: str) -> str:
    """Publish `task(*args)` to `queue` with one quick retry; its task id, or BrokerUnavailable."""
    try:
        return task.apply_async(args=args, queue=queue, retry=True, retry_policy=PUBLISH_RETRY_POLICY).id
    except broker_errors() as exc:
        logger.warning("could not send %s to queue %s: %s: %s", task.name, queue, type(exc).__name__, exc)
        raise BrokerUnavailable(
            "The job queue (Redis) cannot be reached, so the job was not started. Try again once Redis is back, "
            "or ask an administrator to check it."
        ) from exc


def task_ids_held(task_ids: Iterable[str], *, queues: Iterable[str]) -> set[str]:
    """Those of `task_ids` whose message is still in the broker: waiting in one of `queues`, or delivered to a
    worker and not acknowledged yet. Raises the broker's error when it cannot be reached."""
    from config.celery import app

    wanted = {task_id for task_id in task_ids if task_id}
    if not wanted:
        return set()
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=0, timeout=BROKER_CONNECT_SECONDS)
        channel = connection.default_channel
        client = channel.client
        raw: list[bytes] = []
        for queue in queues:
            for priority in channel.priority_steps:
                raw.extend(client.lrange(channel._q_for_pri(queue, priority), 0, -1))
        raw.extend(client.hvals(channel.unacked_key))
    # A task id is a UUID: finding it anywhere in a message means the message is that task's.
    return {task_id for task_id in wanted if any(task_id.encode() in message for message in raw)}


def workers_running(names: Iterable[str], *, timeout: float = 1.0) -> dict[str, set[str]] | None:
    """{worker node name: ids of the tasks it runs} for each of `names` that answers within `timeout`; a worker
    missing from the answer did not answer. None when the broker cannot be reached (nothing can be told)."""
    from config.celery import app

    names = sorted(set(names))
    if not names:
        return {}
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=BROKER_CONNECT_SECONDS)
            replies = (
                app.control.inspect(
                    destination=names, timeout=timeout, limit=len(names), connection=connection
                ).active()
                or {}
            )
    except broker_errors():
        return None
    return {name: {task.get("id") for task in tasks or ()} for name, tasks in replies.items()}
