"""The per-request connection health check: a connection PostgreSQL ended is replaced before a request uses it,
and a healthy idle one is kept without a round trip (config/db_backend)."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, connection

from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _admin_conn() -> psycopg.Connection:
    s = settings.DATABASES["default"]
    return psycopg.connect(
        host=s["HOST"] or None, port=s["PORT"] or None, user=s["USER"], dbname=s["NAME"], autocommit=True
    )


def _last_query_of(pid: int) -> str:
    with _admin_conn() as admin:
        return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def _terminate(pid: int) -> None:
    with _admin_conn() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
        for _ in range(100):  # the backend exits asynchronously
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there")


def test_the_backend_is_this_projects():
    assert settings.DATABASES["default"]["ENGINE"] == "config.db_backend"
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True


def test_a_healthy_idle_connection_is_kept_without_asking_the_server():
    with connection.cursor() as cur:
        cur.execute("SELECT 'health-check-marker'")
        pid = connection.connection.info.backend_pid
    assert connection.is_usable()
    # Django's own check would have sent SELECT 1: the server's last query is still ours.
    assert _last_query_of(pid) == "SELECT 'health-check-marker'"
    assert connection.connection.info.backend_pid == pid


def test_a_connection_the_server_ended_fails_the_check():
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    _terminate(pid)
    try:
        assert not connection.is_usable()
    finally:
        connection.close()


def test_after_the_server_ended_the_connection_the_next_request_gets_a_new_one():
    assert User.objects.count() == 0
    old_pid = connection.connection.info.backend_pid
    _terminate(old_pid)
    # What Django does when a request starts (the test client leaves it out): the health check is due again.
    close_old_connections()
    make_user("after-restart", "labeler")
    assert User.objects.filter(username="after-restart").exists()
    assert connection.connection.info.backend_pid != old_pid
