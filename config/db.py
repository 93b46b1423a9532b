"""Database helpers shared by the apps' background threads and jobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection, transaction


def drop_broken_connection() -> None:
    """Close this thread's connection if it is unusable, so the next query opens a fresh one.

    Django replaces a connection broken by a database restart only between requests; a worker thread or a
    long job has to drop it itself.
    """
    try:
        connection.close()
    except DatabaseError:  # closing a dead socket may complain; the connection is discarded either way
        connection.connection = None


@contextmanager
def cursor_with_setting(name: str, value: str) -> Iterator:
    """A cursor whose statements run with the PostgreSQL setting `name` = `value`; the setting is put back after.

    The setting is made with `set_config(..., true)` inside a transaction (a savepoint if one is open), and since
    such a setting lasts until the outermost transaction ends, the one it replaced is restored for whoever
    shares that transaction.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s), set_config(%s, %s, true)", [name, name, value])
        previous = cursor.fetchone()[0]
        yield cursor
        cursor.execute("SELECT set_config(%s, %s, true)", [name, previous])
