"""Redis (the Celery broker) down or restarted: no training job is silently lost, none left queued that nothing will run.

- A start during the outage is refused within about a second with a clear message (503, the form kept)
  and stores nothing.
- The embedded Valkey keeps its append-only file: a queued job's message survives the server being killed.
- A broker that lost its data (restarted without one): the scheduled sweep queues the job again and a
  worker runs it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import types
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rlhf_worker.broker import task_ids_held
from rlhf_worker.jobs import JOB_MODULES
from rlhf_worker.models import TrainingJob
from rlhf_worker.services.jobs import job_start, jobs_sweep
from tests.faults.conftest import PrivateRedis, celery_broker_at
from tests.rlhf_worker.helpers import wait_for
from tests.rlhf_worker.worker_processes import SleepyWorker

pytestmark = pytest.mark.django_db(transaction=True)


@dataclasses.dataclass(frozen=True)
class StepsConfig:
    steps: int = dataclasses.field(default=3, metadata={"help": "Steps to run."})


@pytest.fixture
def steps_kind(monkeypatch, settings):
    """A reward kind with one setting (what tests/rlhf_worker/sleepy_worker.py runs), on a queue of this test's own."""
    monkeypatch.setitem(
        JOB_MODULES,
        "reward",
        types.SimpleNamespace(Config=StepsConfig, check=lambda cfg: None, run=lambda job, ctx: None),
    )
    settings.TRAINING_QUEUE = f"outage-{uuid.uuid4().hex[:8]}"
    return settings.TRAINING_QUEUE


def long_ago(job: TrainingJob) -> None:
    """As if queued an hour ago, so the sweep looks at it."""
    TrainingJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))


def test_a_start_while_redis_is_down_is_refused_at_once_with_a_form_error_and_stores_nothing(
    private_broker, steps_kind, admin_user
):
    c = Client()
    c.force_login(admin_user)
    url = reverse("jobs:start", kwargs={"kind": "reward"})
    private_broker.stop()
    started = time.monotonic()
    response = c.post(url, {"steps": "7"})
    took = time.monotonic() - started
    html = response.content.decode()
    assert response.status_code == 503, html[:2000]
    assert took < 3, f"the refusal took {took:.1f} s"
    assert (
        "The job queue (Redis) cannot be reached, so the job was not started" in html and "Nothing was started." in html
    )
    assert "127.0.0.1" not in html, "no broker address on the page"
    assert 'value="7"' in html, "the form keeps what was typed"
    assert not TrainingJob.objects.exists(), "no orphan queued row"

    # Once Redis is back the same form starts the job.
    private_broker.start()
    response = c.post(url, {"steps": "7"})
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and job.status == "queued"
    assert task_ids_held([job.celery_task_id], queues=[steps_kind]) == {job.celery_task_id}


def test_the_embedded_valkey_keeps_a_queued_job_when_it_is_killed(private_broker, steps_kind, admin_user, settings):
    from config.launcher import VALKEY_CONFIG

    assert VALKEY_CONFIG["appendonly"] == "yes" and VALKEY_CONFIG["appendfsync"] == "everysec"
    job = job_start(kind="reward", config={"steps": 3}, user=admin_user)
    job.refresh_from_db()
    time.sleep(1.5)  # appendfsync everysec: what was written a second ago is on disk
    pid = redis.Redis.from_url(private_broker.url()).info("server")["process_id"]
    os.kill(pid, signal.SIGKILL)
    private_broker.stop()
    private_broker.start()
    assert task_ids_held([job.celery_task_id], queues=[steps_kind]) == {job.celery_task_id}
    settings.JOB_REQUEUE_AFTER_SECONDS = 0
    long_ago(job)
    assert jobs_sweep()["requeued"] == 0, "a job whose message is still there is not queued twice"


@pytest.fixture
def forgetful_broker(tmp_path):
    """A Redis without persistence as the broker: a restart empties it."""
    server = PrivateRedis(tmp_path / "forgetful", append_only=False)
    server.start()
    with celery_broker_at(server.url()):
        yield server
    server.stop()


@pytest.mark.slow
def test_a_job_whose_message_the_broker_lost_is_queued_again_by_the_sweep_and_runs(
    forgetful_broker, steps_kind, admin_user, settings
):
    forgetful = forgetful_broker
    job = job_start(kind="reward", config={"steps": 3}, user=admin_user)
    job.refresh_from_db()
    first_message = job.celery_task_id
    assert task_ids_held([first_message], queues=[steps_kind]) == {first_message}

    forgetful.stop()
    forgetful.start()  # back, empty
    assert task_ids_held([first_message], queues=[steps_kind]) == set()
    settings.JOB_REQUEUE_AFTER_SECONDS = 30
    assert jobs_sweep()["requeued"] == 0, "a job queued moments ago is left alone (its message may be on its way)"
    long_ago(job)
    assert jobs_sweep() == {"lost": 0, "requeued": 1}
    job.refresh_from_db()
    assert job.status == "queued" and job.celery_task_id != first_message
    assert "queued again: the broker had lost its message" in job.log
    assert jobs_sweep()["requeued"] == 0, "queued again once, not at every sweep"

    worker = SleepyWorker(
        steps_kind,
        f"{steps_kind}@%h",
        Path(settings.MODEL_STORE),
        env={"REDIS_URL": forgetful.url(), "MODEL_STORE": settings.MODEL_STORE},
    )
    try:
        job = wait_for(job, timeout=90)
    finally:
        worker.stop()
    assert job.status == "succeeded", f"{job.status}: {job.error}\n{worker.log()}"
