"""Django's PostgreSQL backend, but the per-request connection health check does not ask the server.

With `CONN_HEALTH_CHECKS`, Django checks a persistent connection before its first use in each request, so that a
connection PostgreSQL dropped (a restart, `pg_terminate_backend`, an idle timeout) is replaced instead of
failing the request. Django's check sends `SELECT 1` and waits for the answer: one round trip per request, a
quarter of a labeler's hand-out.

A connection between requests is idle: it has sent nothing and expects nothing, so its socket has nothing to
read. When the server ends the connection it sends a FATAL error and closes the socket, which then reads as
ready. So the check here asks the kernel (a select with zero timeout) instead of the server; only when the socket
has something to read, or the connection is not idle, does it fall back to Django's `SELECT 1`, which then
decides (a notice that arrived in between is read and the connection kept; a closed one fails the check and is
replaced). What this does not see, Django's check would not save either: a server that vanished without closing
the socket makes `SELECT 1` wait for the network timeout just as the request's own first query would.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed:
            return False
        pgconn = conn.pgconn
        if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        try:
            readable, _, _ = select.select([pgconn.socket], [], [], 0)
        except (OSError, ValueError):  # the socket is gone
            return False
        return super().is_usable() if readable else True
