"""Retention: the checkpoints of failed, cancelled and lost jobs go after JOB_RETENTION_DAYS; models never do."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from labeling_app.models import ImportJob
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.services.jobs import job_outputs_purge
from rlhf_worker.tasks import purge_job_outputs

pytestmark = pytest.mark.django_db


def make_job(status, *, ended_days_ago, kind="reward", config=None, with_checkpoint=True):
    job = TrainingJob.objects.create(
        kind=kind, status=status, config=config or {}, finished_at=timezone.now() - timedelta(days=ended_days_ago)
    )
    if with_checkpoint:
        (job.output_dir / "checkpoint").mkdir(parents=True)
        (job.output_dir / "checkpoint" / "model.safetensors").write_bytes(b"\0" * 1024)
    return job


def test_old_checkpoints_of_jobs_without_a_model_go_and_everything_else_stays(settings):
    settings.JOB_RETENTION_DAYS = 14
    failed = make_job("failed", ended_days_ago=15)
    cancelled = make_job("cancelled", ended_days_ago=20)
    lost = make_job("lost", ended_days_ago=30, kind="ppo")
    recent = make_job("failed", ended_days_ago=13)
    succeeded = make_job("succeeded", ended_days_ago=400)
    running = make_job("running", ended_days_ago=400)
    # a cancelled job whose folder holds a registered (promoted) version, and one whose checkpoint a queued job resumes
    holds_version = make_job("cancelled", ended_days_ago=60, kind="sft")
    (holds_version.output_dir / "policy").mkdir()
    ModelVersion.objects.create(
        kind="policy", name="kept", path=str(holds_version.output_dir / "policy"), is_promoted=True
    )
    resumed = make_job("cancelled", ended_days_ago=60)
    TrainingJob.objects.create(kind="reward", status="queued", config={"resume_job_id": resumed.pk})

    assert job_outputs_purge() == 3
    for job in (failed, cancelled, lost):
        assert not job.output_dir.exists(), job
        job.refresh_from_db()
        assert "outputs deleted: the job ended more than 14 days ago (JOB_RETENTION_DAYS)" in job.log
    for job in (recent, succeeded, running, holds_version, resumed):
        assert (job.output_dir / "checkpoint" / "model.safetensors").is_file(), job
    assert TrainingJob.objects.filter(pk__in=[failed.pk, cancelled.pk, lost.pk]).count() == 3  # rows stay
    assert job_outputs_purge() == 0  # nothing left to delete; jobs without a folder are skipped

    # the retention counts from now: a day later the 13-day-old failure goes too
    assert job_outputs_purge(now=timezone.now() + timedelta(days=2)) == 1
    assert not recent.output_dir.exists()


def test_the_celery_task_and_the_management_command_purge_jobs_and_uploads(settings, tmp_path):
    settings.JOB_RETENTION_DAYS = 1
    settings.IMPORT_RETENTION_DAYS = 1
    settings.IMPORT_DIR = str(tmp_path / "imports")
    (tmp_path / "imports").mkdir()
    first = make_job("failed", ended_days_ago=2)
    assert purge_job_outputs.apply().get() == 1 and not first.output_dir.exists()

    second = make_job("lost", ended_days_ago=2)
    upload = tmp_path / "imports" / "rejected.jsonl"
    upload.write_text('{"prompt": ""}\n')
    from labeling_app.services.projects import project_create
    from tests.conftest import make_user

    researcher = make_user("retention-res", "researcher")
    project = project_create(name="Retention", user=researcher, completions_per_task=2)
    ImportJob.objects.create(
        project=project,
        kind="prompts",
        status=ImportJob.Status.FAILED,
        file_path=str(upload),
        finished_at=timezone.now() - timedelta(days=2),
        created_by=researcher,
    )
    out = StringIO()
    call_command("purge_old_files", stdout=out)
    assert not second.output_dir.exists() and not upload.exists()
    assert (
        "deleted the outputs of 1 training job(s) older than 1 days and 1 rejected upload(s) older than 1 days"
        in out.getvalue()
    )
