"""Writes on training jobs: start (validated), cancel, re-run, marking jobs whose worker died as lost, and deleting
the outputs of jobs that ended without a model once they are older than JOB_RETENTION_DAYS."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from config.errors import NON_FIELD, ServiceError
from labeling_app.selectors.training_data import all_project_ids
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.training.config_base import NOT_ONE_FIELD, collect_config_errors, config_to_dict

logger = logging.getLogger(__name__)


def job_config_validate(*, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The normalised config of a `kind` job, validated once for every caller: first its values on their own
    (every wrong field at once), then what it refers to in the database (the job module's `check`).
    Raises ServiceError naming the fields that are wrong."""
    # Imported here, not with the URLs: the job modules load torch, which only starting a job needs.
    from rlhf_worker.jobs import job_module

    if kind not in TrainingJob.Kind.values:
        raise ServiceError(f"unknown job kind {kind!r}; choose one of {', '.join(TrainingJob.Kind.values)}", field="kind")
    try:
        module = job_module(kind)
    except LookupError:
        raise ServiceError(f"{kind} jobs are not available in this installation", field="kind") from None
    cfg, errors = collect_config_errors(module.Config, config)
    if errors:
        raise ServiceError({(NON_FIELD if name == NOT_ONE_FIELD else name): [message] for name, message in errors.items()})
    cfg = with_every_project_if_none_chosen(cfg)
    module.check(cfg)
    return config_to_dict(cfg)


def with_every_project_if_none_chosen(cfg):
    """No project chosen (and no prompt ids) means every project: the ids that exist now are written into the
    config, so the stored job says exactly which projects it read and a re-run reads the same ones."""
    names = {f.name for f in dataclasses.fields(cfg)}
    if "project_ids" not in names or cfg.project_ids or getattr(cfg, "prompt_ids", None):
        return cfg
    every = all_project_ids()
    if not every:
        raise ServiceError("there are no projects yet, so there is no data to train on: create a project and add "
                           "prompts first", field="project_ids")
    return dataclasses.replace(cfg, project_ids=every)


def job_start(*, kind: str, config: dict[str, Any], user) -> TrainingJob:
    """Validate the config (ServiceError naming the wrong fields), store the job, and queue it once the row is committed."""
    normalised = job_config_validate(kind=kind, config=config)
    with transaction.atomic():
        job = TrainingJob.objects.create(kind=kind, config=normalised, created_by=user)
        transaction.on_commit(lambda: job_enqueue(job_id=job.pk))
    return job


def job_enqueue(*, job_id: int) -> None:
    from rlhf_worker.tasks import run_training_job

    result = run_training_job.apply_async(args=[job_id], queue=settings.TRAINING_QUEUE)
    TrainingJob.objects.filter(pk=job_id).update(celery_task_id=result.id)


def job_rerun(*, job: TrainingJob, user) -> TrainingJob:
    """A new job with the same kind and config."""
    return job_start(kind=job.kind, config=job.config, user=user)


def job_cancel(*, job: TrainingJob) -> TrainingJob:
    """A queued job is cancelled at once; a running one stops within one optimisation step."""
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.status == TrainingJob.Status.QUEUED:
            job.status = TrainingJob.Status.CANCELLED
            job.cancel_requested = True
            job.finished_at = now
            job.save(update_fields=["status", "cancel_requested", "finished_at"])
        elif job.status == TrainingJob.Status.RUNNING:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job


def jobs_mark_lost(*, now=None) -> int:
    """Running jobs whose heartbeat stopped (the worker died) become lost; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_LOST_AFTER_SECONDS)
    stale = TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING, heartbeat_at__lt=cutoff)
    count = 0
    for job in stale:
        reason = (
            f"Lost: no heartbeat from worker {job.worker or '(unknown)'} since "
            f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC (more than {settings.JOB_LOST_AFTER_SECONDS:.0f} s); "
            "the worker process probably died or was killed."
        )
        count += TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.RUNNING, heartbeat_at__lt=cutoff).update(
            status=TrainingJob.Status.LOST, error=reason, finished_at=now
        )
    return count


# Jobs that ended without a model: their folders hold only checkpoints (a reward checkpoint is ~260 MB).
PURGEABLE = (TrainingJob.Status.FAILED, TrainingJob.Status.CANCELLED, TrainingJob.Status.LOST)


def job_outputs_purge(*, now=None) -> int:
    """Delete the output folders of failed, cancelled and lost jobs that ended more than JOB_RETENTION_DAYS ago;
    returns how many folders went.

    Kept whatever their age: a succeeded job's outputs, any folder holding a registered model version (promoted
    or not), and the checkpoint a queued or running job resumes from. The job row stays, with a log line.
    """
    now = now or timezone.now()
    days = float(settings.JOB_RETENTION_DAYS)
    cutoff = now - timedelta(days=days)
    store = (Path(settings.MODEL_STORE) / "jobs").resolve()
    version_paths = [Path(path).resolve() for path in ModelVersion.objects.exclude(path="").values_list("path", flat=True)]
    resumed = {config.get("resume_job_id") for config in TrainingJob.objects.exclude(status__in=TrainingJob.FINISHED)
               .values_list("config", flat=True) if isinstance(config, dict)}
    count = 0
    expired = TrainingJob.objects.filter(status__in=PURGEABLE, finished_at__lt=cutoff, result_version__isnull=True)
    for job in expired.only("pk", "kind"):
        folder = job.output_dir.resolve()
        if folder.parent != store or not folder.is_dir() or job.pk in resumed:
            continue
        if any(path == folder or folder in path.parents for path in version_paths):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            logger.warning("job %s: could not delete all of %s", job.pk, folder)
            continue
        line = f"\n[{now:%Y-%m-%d %H:%M:%S}] outputs deleted: the job ended more than {days:g} days ago (JOB_RETENTION_DAYS)"
        TrainingJob.objects.filter(pk=job.pk).update(log=Concat(F("log"), Value(line)))
        count += 1
    return count
