"""Database helpers shared by the apps' background threads and jobs."""

from __future__ import annotations

from django.db import DatabaseError, connection


def drop_broken_connection() -> None:
    """Close this thread's connection if it is unusable, so the next query opens a fresh one.

    Django replaces a connection broken by a database restart only between requests; a worker thread or a
    long job has to drop it itself.
    """
    try:
        connection.close()
    except DatabaseError:  # closing a dead socket may complain; the connection is discarded either way
        connection.connection = None
