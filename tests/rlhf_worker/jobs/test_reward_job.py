"""Reward job through a real Celery worker on PostgreSQL + Redis, with a tiny random backbone."""

from __future__ import annotations

import pytest
import torch
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, Demonstration
from labeling_app.selectors.training_data import rankings_for_training
from rlhf_worker.models import JobMetric, ModelVersion, TrainingJob
from rlhf_worker.services.jobs import job_cancel, job_config_validate, job_start
from rlhf_worker.training.reward_model import RewardScorer
from tests.rlhf_worker.helpers import finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def job_config(project, backbone_dir, **overrides):
    config = {
        "project_ids": [project.pk],
        "backbone": backbone_dir,
        "learning_rate": 1e-3,
        "epochs": 2,
        "batch_size": 4,
        "max_length": 48,
        "eval_fraction": 0.25,
        "eval_every": 2,
        "device": "cpu",
    }
    config.update(overrides)
    return config


def test_reward_job_trains_registers_a_loadable_model_and_metrics(
    labeled_project, backbone_dir, training_queue, admin_user
):
    job = job_start(kind="reward", config=job_config(labeled_project, backbone_dir), user=admin_user)
    statuses = {job.status}
    job = wait_for(job, lambda j: statuses.add(j.status) or finished(j))
    assert job.status == "succeeded", job.error
    assert statuses >= {"queued", "running", "succeeded"}
    assert job.step == job.total_steps > 0 and job.progress == 1.0

    version = job.result_version
    assert version.kind == "reward" and version.training_job_id == job.pk and version.parent is None
    for key in ("train/loss", "train/accuracy", "eval/loss", "eval/accuracy", "eval/labeler_agreement"):
        assert key in version.metrics, key
        assert JobMetric.objects.filter(job=job, key=key).exists(), key
    assert 0 < version.metrics["eval/labeler_agreement"] <= 1
    submitted = set(Annotation.objects.filter(status="submitted").values_list("pk", flat=True))
    assert set(version.data_snapshot["annotation_ids"]) == submitted
    assert version.data_snapshot["normalised_on"] == "demonstrations"

    scorer = RewardScorer.from_pretrained(version.path, device="cpu")
    demos = list(Demonstration.objects.select_related("prompt"))
    scores = scorer.score([d.prompt.text for d in demos], [d.text for d in demos])
    assert scores.shape == (len(demos),) and torch.isfinite(scores).all()

    # A second job continuing from this version records it as the parent.
    child = job_start(
        kind="reward",
        config=job_config(labeled_project, backbone_dir, epochs=1, base_version_id=version.pk),
        user=admin_user,
    )
    child = wait_for(child, finished)
    assert child.status == "succeeded", child.error
    assert child.result_version.parent_id == version.pk


@pytest.mark.slow
def test_cancel_while_running_then_resume_from_the_checkpoint(
    labeled_project, backbone_dir, training_queue, admin_user
):
    config = job_config(labeled_project, backbone_dir, epochs=600, eval_every=0)
    job = job_start(kind="reward", config=config, user=admin_user)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 1 or finished(j))
    assert job.status == "running", job.error
    job_cancel(job=job)
    job = wait_for(job, finished)
    assert job.status == "cancelled", job.error
    assert 1 <= job.step < job.total_steps
    assert job.result_version is None and not ModelVersion.objects.exists()
    stopped_at = max(JobMetric.objects.filter(job=job).values_list("step", flat=True))

    resumed = job_start(kind="reward", config={**config, "resume_job_id": job.pk}, user=admin_user)
    resumed = wait_for(resumed, finished, timeout=300)
    assert resumed.status == "succeeded", resumed.error
    steps = sorted(set(JobMetric.objects.filter(job=resumed, key="train/loss").values_list("step", flat=True)))
    assert steps[0] == stopped_at + 1 and steps[-1] == resumed.total_steps == job.total_steps
    assert resumed.result_version.data_snapshot["resumed_from_job"] == job.pk


def test_failure_marks_the_job_failed_with_the_error_and_registers_no_model(
    labeled_project, training_queue, admin_user, tmp_path
):
    missing = str(tmp_path / "no-such-backbone")
    job = wait_for(job_start(kind="reward", config=job_config(labeled_project, missing), user=admin_user), finished)
    assert job.status == "failed"
    assert "no-such-backbone" in job.error
    assert job.result_version is None and not ModelVersion.objects.exists()


def test_no_submitted_rankings_is_refused_at_start_saying_what_to_do(plain_project, backbone_dir, admin_user):
    with pytest.raises(ServiceError) as err:
        job_start(kind="reward", config=job_config(plain_project, backbone_dir), user=admin_user)
    assert err.value.field == "project_ids" and "label some tasks" in err.value.message
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize(
    "overrides, field_name",
    [
        ({"project_ids": []}, "project_ids"),
        ({"project_ids": [999999]}, "project_ids"),
        ({"date_from": "31/01/2026"}, "date_from"),
        ({"date_from": "2026-02-01", "date_to": "2026-01-01"}, "date_to"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"base_version_id": 999999}, "base_version_id"),
        ({"resume_job_id": 999999}, "resume_job_id"),
    ],
)
def test_reward_job_config_errors_name_the_field(plain_project, backbone_dir, overrides, field_name):
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="reward", config=job_config(plain_project, backbone_dir, **overrides))
    assert err.value.field == field_name


def test_date_range_selects_annotations(labeled_project, backbone_dir):
    today = timezone.now().date().isoformat()
    assert len(list(rankings_for_training(project_ids=[labeled_project.pk], date_from=today, date_to=today))) == 24
    assert len(list(rankings_for_training(project_ids=[labeled_project.pk], date_to="2000-01-01"))) == 0
