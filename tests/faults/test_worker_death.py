"""A worker that dies running a job (SIGKILL, no chance to clean up): the job shows as lost within seconds, with the reason.

Two ways Celery tells: a worker whose pool process dies reports WorkerLostError at once (make run's workers
are prefork); a worker killed whole stops answering Celery, which the scheduled sweep asks once the job's
heartbeat has been silent for three beats, long before JOB_LOST_AFTER_SECONDS (kept at its 120 s default here).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rlhf_worker.jobs.runner import _Heartbeat
from rlhf_worker.models import TrainingJob
from rlhf_worker.services.jobs import job_enqueue, jobs_sweep
from tests.rlhf_worker.worker_processes import SleepyWorker

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_heartbeat_thread_beats_while_running_and_stops_when_told(admin_user):
    job = TrainingJob.objects.create(
        kind="reward", status="running", heartbeat_at=timezone.now(), created_by=admin_user
    )
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


def start_running_job(settings, worker_pool: str) -> tuple[TrainingJob, SleepyWorker]:
    """A sleepy job running on a fresh worker of its own queue, its heartbeat seen moving."""
    assert settings.JOB_LOST_AFTER_SECONDS == 120
    queue = f"killtest-{uuid.uuid4().hex[:8]}"
    settings.TRAINING_QUEUE = queue
    settings.JOB_HEARTBEAT_SECONDS = 0.3  # the workers' and the sweep's setting alike
    worker = SleepyWorker(
        queue,
        f"{queue}@%h",
        Path(settings.MODEL_STORE),
        pool=worker_pool,
        env={"JOB_HEARTBEAT_SECONDS": "0.3", "MODEL_STORE": settings.MODEL_STORE},
    )
    try:
        job = TrainingJob.objects.create(kind="reward", config={"steps": 10_000})
        job_enqueue(job_id=job.pk)
        deadline, beats = time.monotonic() + 90, set()
        while time.monotonic() < deadline and len(beats) < 2:
            job.refresh_from_db()
            if job.status == "running" and job.heartbeat_at:
                beats.add(job.heartbeat_at)
            assert worker.process.poll() is None, worker.log()
            time.sleep(0.1)
        assert len(beats) >= 2, f"job is {job.status}; worker log:\n{worker.log()}"
        assert job.worker.startswith(f"{queue}@"), "the job names the Celery node that runs it"
    except BaseException:
        worker.kill()
        raise
    return job, worker


@pytest.mark.slow
def test_a_killed_pool_process_is_reported_by_its_worker_and_the_job_is_lost_at_once(settings):
    job, worker = start_running_job(settings, "prefork")
    try:
        (child,) = worker.pool_processes()
        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        while job.status == "running" and time.monotonic() - killed_at < 10:
            time.sleep(0.1)
            job.refresh_from_db()
        assert job.status == "lost", f"still {job.status} 10 s after the kill; worker log:\n{worker.log()}"
        assert "the worker process running it died" in job.error and "SIGKILL" in job.error
        assert worker.process.poll() is None, "the worker itself lives on and takes the next job"
    finally:
        worker.kill()


@pytest.mark.slow
def test_a_worker_killed_whole_is_marked_lost_by_the_sweep_within_seconds_with_the_reason_on_its_page(
    settings, researcher
):
    job, worker = start_running_job(settings, "solo")
    worker.kill()
    killed_at = time.monotonic()

    assert jobs_sweep() == {"lost": 0, "requeued": 0}, "a beat or two missed is not a death"
    job.refresh_from_db()
    assert job.status == "running"  # nothing told the database
    last_beat = job.heartbeat_at
    time.sleep(1.0)
    job.refresh_from_db()
    assert job.heartbeat_at == last_beat, "the heartbeat must stop with the process"

    # The sweep as the scheduler runs it (every JOB_SWEEP_SECONDS): three beats silent and the worker not
    # answering Celery make the job lost, long before JOB_LOST_AFTER_SECONDS.
    while job.status == "running" and time.monotonic() - killed_at < 15:
        time.sleep(0.5)
        jobs_sweep()
        job.refresh_from_db()
    assert job.status == "lost" and job.finished_at is not None
    assert time.monotonic() - killed_at < 15
    assert f"no heartbeat from worker {job.worker}" in job.error and "does not answer Celery" in job.error

    c = Client()
    c.force_login(researcher)
    html = c.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()
    assert "Why it was marked lost" in html and "does not answer Celery" in html
