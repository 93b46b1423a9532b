"""Real `celery worker` processes for tests, running every job kind as a slow fake body (sleepy_worker.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]


def database_url_of_this_test() -> str:
    """DATABASE_URL naming the test database (the one this test process uses)."""
    from django.db import connection

    parts = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/rlhf"))
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


class SleepyWorker:
    """One worker process consuming `queue` as `node` (pool "solo" or "prefork", one slot)."""

    def __init__(self, queue: str, node: str, log_dir: Path, *, pool: str = "solo", env: dict[str, str] | None = None):
        self.node = node
        self.log_path = log_dir / f"worker-{node.split('@')[0]}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": database_url_of_this_test(),
            "PYTHONUNBUFFERED": "1",
            "TRAINING_QUEUE": queue,
            **(env or {}),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "tests/rlhf_worker/sleepy_worker.py"), queue, node, pool],
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def pool_processes(self) -> list[int]:
        import psutil

        return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]

    def kill(self) -> None:
        """SIGKILL to the worker and everything it forked: no cleanup runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20) -> None:
        """A warm shutdown (SIGTERM), then SIGKILL if it takes too long."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
