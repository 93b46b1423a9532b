"""A real `celery worker` process for the killed-worker test: every job kind runs a slow fake body.

Usage (tests start it through worker_processes.start_sleepy_worker):
    python tests/rlhf_worker/sleepy_worker.py <queue> <node name> [solo|prefork]
with DATABASE_URL pointing at the test database. Tests kill it (or its pool process) with SIGKILL mid-job.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from rlhf_worker.jobs import JOB_MODULES  # noqa: E402


@dataclasses.dataclass(frozen=True)
class SleepyConfig:
    steps: int = 10_000


def sleepy_run(job, ctx):
    for step in range(1, ctx.config.steps + 1):
        if ctx.should_stop():
            return None
        ctx.report(step, ctx.config.steps, {"train/loss": 1.0 / step})
        time.sleep(0.1)
    return None


JOB_MODULES.update(
    {
        kind: types.SimpleNamespace(Config=SleepyConfig, check=lambda cfg: None, run=sleepy_run)
        for kind in list(JOB_MODULES)
    }
)

if __name__ == "__main__":
    from config.celery import app

    queue, node = sys.argv[1], sys.argv[2]
    pool = sys.argv[3] if len(sys.argv) > 3 else "solo"
    app.worker_main(
        [
            "worker",
            "-Q",
            queue,
            "-n",
            node,
            "--pool",
            pool,
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
