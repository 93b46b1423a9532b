"""A job whose worker process dies (SIGKILL, no chance to clean up) is marked lost, with the reason shown."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rlhf_worker.jobs.runner import _Heartbeat
from rlhf_worker.models import TrainingJob
from rlhf_worker.services.jobs import job_enqueue

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_heartbeat_thread_beats_while_running_and_stops_when_told(admin_user):
    job = TrainingJob.objects.create(kind="reward", status="running", heartbeat_at=timezone.now(), created_by=admin_user)
    first = job.heartbeat_at
    beat = _Heartbeat(job.pk, 0.05)
    beat.start()
    deadline = time.monotonic() + 10
    while TrainingJob.objects.get(pk=job.pk).heartbeat_at == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert TrainingJob.objects.get(pk=job.pk).heartbeat_at > first
    beat.stopped.set()
    beat.join(5)
    assert not beat.is_alive()
    last = TrainingJob.objects.get(pk=job.pk).heartbeat_at
    time.sleep(0.3)
    assert TrainingJob.objects.get(pk=job.pk).heartbeat_at == last


def _test_database_url() -> str:
    parts = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/rlhf"))
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


def test_a_killed_worker_process_leaves_a_lost_job_with_the_reason_on_its_page(settings, researcher):
    queue = f"killtest-{uuid.uuid4().hex[:8]}"
    node = f"{queue}@%h"
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "JOB_HEARTBEAT_SECONDS": "0.3",
           "MODEL_STORE": settings.MODEL_STORE, "TRAINING_QUEUE": queue, "PYTHONUNBUFFERED": "1"}
    log_path = Path(settings.MODEL_STORE) / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, str(REPO / "tests/rlhf_worker/sleepy_worker.py"), queue, node],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        settings.TRAINING_QUEUE = queue
        job = TrainingJob.objects.create(kind="reward", config={"steps": 10_000})
        job_enqueue(job_id=job.pk)
        # wait until the worker runs the job and its heartbeat has moved at least once
        deadline, beats = time.monotonic() + 60, set()
        while time.monotonic() < deadline and len(beats) < 2:
            job.refresh_from_db()
            if job.status == "running" and job.heartbeat_at:
                beats.add(job.heartbeat_at)
            assert worker.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert len(beats) >= 2, f"job is {job.status}; worker log:\n{log_path.read_text()[-3000:]}"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and anything it forked: no cleanup runs
        worker.wait(10)

    job.refresh_from_db()
    assert job.status == "running"  # nothing told the database
    last_beat = job.heartbeat_at
    time.sleep(1.0)
    job.refresh_from_db()
    assert job.heartbeat_at == last_beat, "the heartbeat must stop with the process"

    settings.JOB_LOST_AFTER_SECONDS = 0.5
    c = Client()
    c.force_login(researcher)
    html = c.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()
    job.refresh_from_db()
    assert job.status == "lost" and job.finished_at is not None
    assert "Why it was marked lost" in html and f"no heartbeat from worker {job.worker}" in html
