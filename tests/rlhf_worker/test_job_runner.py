"""The job runner through a real Celery worker: queued → running → succeeded / failed / cancelled / lost."""

from __future__ import annotations

import dataclasses
import time
import types
from datetime import timedelta

import pytest
from django.utils import timezone

from config.errors import ServiceError
from rlhf_worker.jobs import JOB_MODULES
from rlhf_worker.models import JobMetric, ModelVersion, TrainingJob
from rlhf_worker.services.jobs import job_cancel, job_start, jobs_mark_lost
from rlhf_worker.training.config_base import ConfigError
from tests.rlhf_worker.helpers import status_in, wait_for


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    steps: int = dataclasses.field(default=5, metadata={"help": "steps to run"})
    step_seconds: float = 0.0
    fail_at: int = -1

    def validate(self):
        if self.steps < 1:
            raise ConfigError("steps", "must be at least 1")


def fake_run(job, ctx):
    for step in range(1, ctx.config.steps + 1):
        if ctx.should_stop():
            return None
        if step == ctx.config.fail_at:
            raise RuntimeError(f"boom at step {step}")
        time.sleep(ctx.config.step_seconds)
        ctx.report(step, ctx.config.steps, {"train/loss": 1.0 / step})
    return ModelVersion.objects.create(kind="reward", name=f"fake-{job.pk}", path=str(ctx.out_dir), training_job=job)


FAKE = types.SimpleNamespace(Config=FakeConfig, check=lambda cfg: None, run=fake_run)


@pytest.fixture
def fake_kind(monkeypatch):
    monkeypatch.setitem(JOB_MODULES, "reward", FAKE)


pytestmark = pytest.mark.django_db(transaction=True)


def test_job_succeeds_with_metrics_and_a_model(fake_kind, training_queue, admin_user):
    job = job_start(kind="reward", config={"steps": 4}, user=admin_user)
    job = wait_for(job, timeout=30)
    assert job.status == "succeeded", job.error
    assert job.progress == 1.0 and job.step == 4 and job.total_steps == 4
    assert job.result_version is not None and job.result_version.training_job_id == job.pk
    losses = list(JobMetric.objects.filter(job=job, key="train/loss").order_by("step").values_list("value", flat=True))
    assert losses == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert job.summary["train/loss"] == pytest.approx(0.25)
    assert job.started_at and job.finished_at and job.worker


def test_failure_records_the_error_and_registers_no_model(fake_kind, training_queue, admin_user):
    job = wait_for(job_start(kind="reward", config={"steps": 5, "fail_at": 3}, user=admin_user), timeout=30)
    assert job.status == "failed"
    assert "RuntimeError: boom at step 3" in job.error
    assert job.result_version is None
    assert not ModelVersion.objects.exists()


def test_cancel_stops_a_running_job(fake_kind, training_queue, admin_user):
    job = job_start(kind="reward", config={"steps": 200, "step_seconds": 0.05}, user=admin_user)
    wait_for(job, status_in("running"), timeout=30)
    job_cancel(job=job)
    job = wait_for(job, timeout=30)
    assert job.status == "cancelled"
    assert job.step < 200
    assert job.result_version is None


def test_cancel_of_a_queued_job_is_immediate(fake_kind, admin_user):
    job = TrainingJob.objects.create(kind="reward", config={}, created_by=admin_user)
    job = job_cancel(job=job)
    assert job.status == "cancelled" and job.finished_at is not None


def test_bad_config_raises_a_field_error_and_creates_no_job(fake_kind, admin_user):
    with pytest.raises(ServiceError) as err:
        job_start(kind="reward", config={"steps": 0}, user=admin_user)
    assert err.value.field == "steps"
    with pytest.raises(ServiceError) as err:
        job_start(kind="reward", config={"steps": "many"}, user=admin_user)
    assert err.value.field == "steps"
    with pytest.raises(ServiceError) as err:
        job_start(kind="reward", config={"learning_rat": 1}, user=admin_user)
    assert err.value.field == "learning_rat"
    assert not TrainingJob.objects.exists()


def test_a_job_whose_heartbeat_stopped_is_marked_lost(admin_user):
    stale = TrainingJob.objects.create(
        kind="reward",
        status="running",
        worker="w1",
        created_by=admin_user,
        heartbeat_at=timezone.now() - timedelta(minutes=10),
    )
    fresh = TrainingJob.objects.create(
        kind="reward", status="running", worker="w2", created_by=admin_user, heartbeat_at=timezone.now()
    )
    assert jobs_mark_lost() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "lost" and "no heartbeat from worker w1" in stale.error
    assert fresh.status == "running"


def test_a_progress_write_retried_after_its_commit_is_not_doubled(monkeypatch, admin_user, tmp_path):
    """The commit happened but its reply was lost (PostgreSQL restarted at that moment): the retry writes the same
    points again, and each point of a series is stored once."""
    from django.db import OperationalError

    from rlhf_worker.jobs import runner

    real = runner.with_db_retry
    lost_replies = []

    def reply_lost_once(write, *, what):
        def write_then_lose_reply():
            result = write()
            if not lost_replies:
                lost_replies.append(what)
                raise OperationalError("server closed the connection unexpectedly")
            return result

        return real(write_then_lose_reply, what=what)

    monkeypatch.setattr(runner, "with_db_retry", reply_lost_once)
    job = TrainingJob.objects.create(kind="reward", status="running", created_by=admin_user)
    ctx = runner.JobContext(job, FakeConfig(), write_interval=3600)
    ctx.report(1, 3, {"train/loss": 0.9, "train/acc": 0.5})
    ctx.report(1, 3, {"train/loss": 0.8})  # the same series twice at one step: the later value stands
    ctx.flush()
    assert lost_replies, "the write was not retried"
    assert sorted(JobMetric.objects.filter(job=job).values_list("key", "step", "value")) == [
        ("train/acc", 1, 0.5),
        ("train/loss", 1, 0.8),
    ]
