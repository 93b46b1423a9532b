"""Database writes of a running job that survive a PostgreSQL restart: reconnect and retry for a bounded time.

A training job runs for minutes or hours while PostgreSQL may restart (an upgrade, a failover, a 0.5 s
`pg_ctl restart`). Every connection the job held is then dead, and Django does not reconnect on its own in
the middle of a task. `with_db_retry` drops the broken connection and runs the write again, with backoff,
for at most `JOB_DB_RETRY_SECONDS`; past that it raises `DatabaseUnavailable`, which fails the job with a
message that says so (or, if even that cannot be written, the lost-job sweep marks it lost).

Only whole units are retried: a function that opens its own transaction (or runs one statement in
autocommit). Inside an outer `transaction.atomic()` nothing can be retried, so the error goes up as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from config.db import drop_broken_connection

logger = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0


class DatabaseUnavailable(OperationalError):
    """The database stayed unreachable for longer than JOB_DB_RETRY_SECONDS."""


def retry_seconds() -> float:
    return float(getattr(settings, "JOB_DB_RETRY_SECONDS", 60))


def with_db_retry(write: Callable[[], T], *, what: str) -> T:
    """Run `write()`; on a lost or refused connection reconnect and run it again, for at most JOB_DB_RETRY_SECONDS."""
    budget = retry_seconds()
    started = time.monotonic()
    delay = FIRST_DELAY_SECONDS
    attempts = 0
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block:
                raise  # an outer transaction is broken as a whole; only its owner can start it again
            attempts += 1
            elapsed = time.monotonic() - started
            if elapsed >= budget:
                raise DatabaseUnavailable(
                    f"{what}: the database was unreachable for {elapsed:.1f} s ({attempts} attempts; "
                    f"JOB_DB_RETRY_SECONDS={budget:g}): {str(exc).strip()}"
                ) from exc
            logger.warning("%s: database error (%s); reconnecting, attempt %d", what, str(exc).strip(), attempts)
            drop_broken_connection()
            time.sleep(min(delay, max(0.0, budget - elapsed)))
            delay = min(delay * 2, MAX_DELAY_SECONDS)
