"""Redis down when an autopilot cycle's next step starts: the job is refused (no orphan row), the cycle waits with
the reason instead of failing, and the scheduler's next tick starts the step once Redis is back."""

from __future__ import annotations

import uuid

import pytest

from rlhf_worker.broker import task_ids_held
from rlhf_worker.jobs.runner import _finish
from rlhf_worker.models import PipelineRun, TrainingJob
from rlhf_worker.services.autopilot import autopilot_configure, autopilots_tick, pipeline_start
from tests.rlhf_worker.autopilot_fixtures import labelers, project, rank, reward_version  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_step_refused_by_a_down_broker_waits_and_starts_once_it_is_back(
    private_broker,
    project,
    labelers,  # noqa: F811
    admin_user,
    settings,
):
    settings.TRAINING_QUEUE = queue = f"autopilot-outage-{uuid.uuid4().hex[:8]}"
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    reward_job = run.steps.get().job
    reward_job.refresh_from_db()
    assert task_ids_held([reward_job.celery_task_id], queues=[queue]) == {reward_job.celery_task_id}

    private_broker.stop()
    _finish(reward_job, TrainingJob.Status.SUCCEEDED, version=reward_version(reward_job, 0.7))
    run.refresh_from_db()
    assert run.status == "running", "a broker outage is not a failed step"
    assert run.reason.startswith("Waiting: The job queue (Redis) cannot be reached")
    score_step = run.steps.get(position=2)
    assert score_step.kind == "score" and score_step.job is None
    assert not TrainingJob.objects.filter(kind="score").exists(), "no orphan queued job"
    assert autopilots_tick() == {"started": 0, "checked": 1}
    assert run.steps.get(position=2).job is None

    private_broker.start()
    autopilots_tick()
    run.refresh_from_db()
    score_job = run.steps.get(position=2).job
    assert score_job is not None and score_job.status == "queued" and run.reason == ""
    assert task_ids_held([score_job.celery_task_id], queues=[queue]) == {score_job.celery_task_id}
    assert PipelineRun.objects.count() == 1 and run.steps.count() == 2
