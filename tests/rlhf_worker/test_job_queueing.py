"""A queued job goes to an idle worker: a busy worker holds only the job it runs (acks_late, prefetch 1)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from config.celery import app
from rlhf_worker.models import TrainingJob
from rlhf_worker.services.jobs import job_enqueue
from rlhf_worker.tasks import run_training_job
from tests.rlhf_worker.helpers import status_in, wait_for
from tests.rlhf_worker.worker_processes import SleepyWorker

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_training_task_is_acknowledged_when_it_ends_and_workers_prefetch_one():
    assert run_training_job.acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1


@pytest.mark.slow
def test_two_workers_run_two_queued_jobs_at_once(settings):
    queue = f"pairtest-{uuid.uuid4().hex[:8]}"
    settings.TRAINING_QUEUE = queue
    jobs = [TrainingJob.objects.create(kind="reward", config={"steps": 10_000}) for _ in range(2)]
    for job in jobs:
        job_enqueue(job_id=job.pk)
    env = {"MODEL_STORE": settings.MODEL_STORE}
    # Prefork pools, as `make run` and compose run them: the worker's main process keeps fetching while its
    # pool process trains, which is when an early-acking worker reserves the next job for itself.
    first = SleepyWorker(queue, f"{queue}-a@%h", Path(settings.MODEL_STORE), pool="prefork", env=env)
    second = None
    try:
        deadline = time.monotonic() + 90
        while not TrainingJob.objects.filter(pk__in=[j.pk for j in jobs], status="running").exists():
            assert time.monotonic() < deadline and first.process.poll() is None, first.log()
            time.sleep(0.2)
        time.sleep(3)  # time enough for a worker that prefetches to have taken the second message too
        second = SleepyWorker(queue, f"{queue}-b@%h", Path(settings.MODEL_STORE), pool="prefork", env=env)
        for job in jobs:
            wait_for(job, status_in("running"), timeout=90)
        assert {job.worker.split("@")[0] for job in jobs} == {f"{queue}-a", f"{queue}-b"}
        assert TrainingJob.objects.filter(pk__in=[j.pk for j in jobs], status="running").count() == 2
    finally:
        TrainingJob.objects.filter(pk__in=[j.pk for j in jobs]).update(cancel_requested=True)
        for worker in (first, second):
            if worker is not None:
                worker.stop()
