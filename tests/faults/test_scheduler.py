"""The job sweep runs on a schedule (Celery beat and a worker on the default queue), never on page views."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from rlhf_worker.models import TrainingJob
from rlhf_worker.selectors import jobs_sweep_age
from tests.rlhf_worker.worker_processes import REPO, database_url_of_this_test

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def celery(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "config", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_beat_has_the_default_worker_sweep_jobs_every_few_seconds(private_redis, tmp_path, settings):
    stale = TrainingJob.objects.create(
        kind="reward", status="running", worker="gone@nowhere", heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_this_test(),
        "REDIS_URL": private_redis.url(),
        "RLHF_VAR_DIR": str(tmp_path / "var"),
        "JOB_SWEEP_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    processes = [
        celery(
            [
                "worker",
                "-Q",
                "default",
                "-P",
                "solo",
                "-c",
                "1",
                "-n",
                "sweeper@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            env,
            tmp_path / "worker.log",
        ),
        celery(["beat", "--loglevel", "INFO"], env, tmp_path / "beat.log"),
    ]
    try:
        deadline = time.monotonic() + 120
        while stale.status == "running" and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), [
                (tmp_path / n).read_text()[-2000:] for n in ("worker.log", "beat.log")
            ]
            time.sleep(0.5)
            stale.refresh_from_db()
        assert stale.status == "lost", (tmp_path / "beat.log").read_text()[-2000:] + (
            tmp_path / "worker.log"
        ).read_text()[-2000:]
        assert list((tmp_path / "var").glob("celerybeat-schedule*")), "beat keeps its schedule under RLHF_VAR_DIR"
        # Every JOB_SWEEP_SECONDS, not once: the note of its last run (what the workers page shows) stays fresh.
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url()}}
        time.sleep(3)
        assert jobs_sweep_age() is not None and jobs_sweep_age() < 3, (tmp_path / "beat.log").read_text()[-2000:]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
