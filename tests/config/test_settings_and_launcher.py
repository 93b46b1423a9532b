"""Settings read the environment; the launcher uses external servers by URL or starts embedded ones."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import pytest
import redis

from config.env import database_from_url
from config.launcher import Services


def test_database_url_with_host_port_and_socket_dir():
    tcp = database_from_url("postgresql://app:s%40cret@db.example:6543/rlhf")
    assert (tcp["HOST"], tcp["PORT"], tcp["USER"], tcp["PASSWORD"], tcp["NAME"]) == (
        "db.example",
        "6543",
        "app",
        "s@cret",
        "rlhf",
    )
    sock = database_from_url("postgresql://postgres@/rlhf?host=/tmp/pg")
    assert (sock["HOST"], sock["NAME"], sock["OPTIONS"]) == ("/tmp/pg", "rlhf", {})
    with pytest.raises(ValueError, match="DATABASE_URL must start with postgres"):
        database_from_url("mysql://x@y/z")


def test_production_requires_a_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(RLHF_ENV="production", RLHF_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_local_secret_key_is_generated_once(tmp_path, monkeypatch):
    import config.env as env

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setattr(env, "VAR_DIR", tmp_path)
    first = env.secret_key(production=False)
    assert len(first) > 40 and env.secret_key(production=False) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_external_servers_are_used_when_urls_are_set(monkeypatch):
    from django.conf import settings

    monkeypatch.setenv("DATABASE_URL", settings.DATABASE_URL)
    monkeypatch.setenv("REDIS_URL", settings.REDIS_URL)
    services = Services()
    services.ensure_postgres()
    services.ensure_redis()
    assert services.database_url == settings.DATABASE_URL and services.redis_url == settings.REDIS_URL
    assert services.stop_actions == []  # nothing was started, so nothing will be stopped


def test_embedded_servers_start_serve_and_stop(tmp_path, monkeypatch):
    """The fresh-machine path: no URLs, so real embedded PostgreSQL and Valkey start under var/."""
    import config.launcher as launcher

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(launcher, "VAR_DIR", tmp_path)
    services = Services()
    try:
        services.ensure_postgres(database="rlhf_embedded")
        services.ensure_redis()
        with psycopg.connect(services.database_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "rlhf_embedded"
        client = redis.Redis.from_url(services.redis_url)
        client.set("launcher-test", "1")
        assert client.get("launcher-test") == b"1"
    finally:
        services.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(services.database_url, connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(services.redis_url, socket_connect_timeout=2).ping()


def test_processes_starting_at_once_share_one_generated_secret_key(tmp_path):
    """gunicorn's workers generate the local key together on a first start: one key, no process fails."""

    env = {**os.environ, "RLHF_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    # Every process imports first, then all ask for the key at the same moment.
    start = time.time() + 3
    code = f"import time; from config.env import secret_key; time.sleep(max(0, {start} - time.time())); print(secret_key(False))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    keys = {out.strip() for out, _ in results}
    assert len(keys) == 1 and (tmp_path / "secret_key").read_text().strip() in keys
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]
