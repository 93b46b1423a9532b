"""Writes on training jobs: start (validated), cancel, re-run, resume, the sweep that keeps no job lost or stuck, and
deleting the outputs of jobs that ended without a model once they are older than JOB_RETENTION_DAYS.

The sweep (`jobs_sweep`, run by Celery beat every JOB_SWEEP_SECONDS, never by a page view) marks running
jobs whose worker died as lost and queues again the queued jobs whose message the broker no longer holds.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone
from redis.exceptions import RedisError

from config.errors import NON_FIELD, ServiceError
from labeling_app.selectors.training_data import all_project_ids
from rlhf_worker.broker import BrokerUnavailable, broker_errors, task_ids_held, task_send, workers_running
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.selectors import SWEEP_CACHE_KEY
from rlhf_worker.training.config_base import NOT_ONE_FIELD, collect_config_errors, config_to_dict

logger = logging.getLogger(__name__)


def job_config_validate(*, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The normalised config of a `kind` job, validated once for every caller: first its values on their own
    (every wrong field at once), then what it refers to in the database (the job module's `check`).
    Raises ServiceError naming the fields that are wrong."""
    # Imported here, not with the URLs: the job modules load torch, which only starting a job needs.
    from rlhf_worker.jobs import job_module

    if kind not in TrainingJob.Kind.values:
        raise ServiceError(
            f"unknown job kind {kind!r}; choose one of {', '.join(TrainingJob.Kind.values)}", field="kind"
        )
    try:
        module = job_module(kind)
    except LookupError:
        raise ServiceError(f"{kind} jobs are not available in this installation", field="kind") from None
    cfg, errors = collect_config_errors(module.Config, config)
    if errors:
        raise ServiceError(
            {(NON_FIELD if name == NOT_ONE_FIELD else name): [message] for name, message in errors.items()}
        )
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
        raise ServiceError(
            "there are no projects yet, so there is no data to train on: create a project and add prompts first",
            field="project_ids",
        )
    return dataclasses.replace(cfg, project_ids=every)


def job_start(*, kind: str, config: dict[str, Any], user) -> TrainingJob:
    """Validate the config (ServiceError naming the wrong fields), store the job, and queue it once the row is committed.

    When the broker cannot take the message, the row is deleted again and BrokerUnavailable (a ServiceError
    with status 503) says so, within about a second: nothing is left queued that no worker will ever see.
    """
    normalised = job_config_validate(kind=kind, config=config)
    with transaction.atomic():
        job = TrainingJob.objects.create(kind=kind, config=normalised, created_by=user)
        transaction.on_commit(lambda: _job_enqueue_or_withdraw(job_id=job.pk))
    return job


def _job_enqueue_or_withdraw(*, job_id: int) -> None:
    try:
        job_enqueue(job_id=job_id)
    except BrokerUnavailable:
        TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.QUEUED).delete()
        raise


def job_enqueue(*, job_id: int) -> str:
    """Send the job's message to TRAINING_QUEUE and note its task id on the row (while it is still queued);
    BrokerUnavailable when the broker does not take it."""
    from rlhf_worker.tasks import run_training_job

    task_id = task_send(run_training_job, args=[job_id], queue=settings.TRAINING_QUEUE)
    TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.QUEUED).update(celery_task_id=task_id)
    return task_id


def job_rerun(*, job: TrainingJob, user) -> TrainingJob:
    """A new job with the same kind and config."""
    return job_start(kind=job.kind, config=job.config, user=user)


def job_resume(*, job: TrainingJob, user) -> TrainingJob:
    """A new job continuing `job` from its last checkpoint: its kind and settings, with resume_job_id = job.
    The job's `check` refuses (ServiceError on resume_job_id) a job still queued or running, one without a
    checkpoint, and a kind that has none."""
    if "resume_job_id" not in _config_field_names(job.kind):
        raise ServiceError(f"{job.get_kind_display()} jobs have no checkpoints to resume from", field="resume_job_id")
    return job_start(kind=job.kind, config={**(job.config or {}), "resume_job_id": job.pk}, user=user)


def _config_field_names(kind: str) -> set[str]:
    from rlhf_worker.jobs import job_module

    return {f.name for f in dataclasses.fields(job_module(kind).Config)}


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
            transaction.on_commit(lambda: _job_ended_notify(job.pk))
        elif job.status == TrainingJob.Status.RUNNING:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job


def jobs_sweep(*, now=None) -> dict[str, int]:
    """The scheduled check (Celery beat, every JOB_SWEEP_SECONDS): running jobs whose worker died become lost,
    queued jobs whose message vanished are queued again. Returns how many of each, and notes when it ran
    (`selectors.jobs_sweep_age`: the workers page and the scheduler's healthcheck read it)."""
    done = {"lost": jobs_mark_lost(now=now), "requeued": jobs_requeue_vanished(now=now)}
    try:
        cache.set(SWEEP_CACHE_KEY, time.time(), timeout=None)
    except (RedisError, OSError):  # the sweep itself is done; only its note is missing
        logger.warning("could not note the job sweep's time in the cache")
    return done


def jobs_mark_lost(*, now=None) -> int:
    """Running jobs whose worker died become lost, with the reason; returns how many.

    A job silent for JOB_LOST_AFTER_SECONDS is lost whatever its worker says. One silent for three heartbeats
    is lost sooner when Celery tells us its worker is gone: the worker does not answer, or answers without
    the job's task among those it runs (it was restarted). While the broker cannot be reached only the long
    rule applies. A worker whose pool process dies reports it at once instead (`tasks.job_worker_lost`).
    """
    now = now or timezone.now()
    long_cutoff = now - timedelta(seconds=settings.JOB_LOST_AFTER_SECONDS)
    short_cutoff = now - timedelta(seconds=3 * settings.JOB_HEARTBEAT_SECONDS)
    silent = list(
        TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING, heartbeat_at__lt=short_cutoff).only(
            "pk", "worker", "heartbeat_at", "celery_task_id"
        )
    )
    if not silent:
        return 0
    answers = None
    if any(job.heartbeat_at >= long_cutoff for job in silent):
        answers = workers_running(job.worker for job in silent if job.worker)
    count = 0
    for job in silent:
        since = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
        worker = job.worker or "(unknown)"
        if job.heartbeat_at < long_cutoff:
            reason = (
                f"Lost: no heartbeat from worker {worker} since {since} (more than "
                f"{settings.JOB_LOST_AFTER_SECONDS:.0f} s); the worker process probably died or was killed."
            )
        elif answers is None:
            continue
        elif job.worker not in answers:
            reason = (
                f"Lost: no heartbeat from worker {worker} since {since}, and the worker does not answer Celery; "
                "the worker process probably died or was killed."
            )
        elif job.celery_task_id not in answers[job.worker]:
            reason = (
                f"Lost: no heartbeat from worker {worker} since {since}, and that worker answers but no longer "
                "runs this job (it was restarted)."
            )
        else:
            continue
        count += job_mark_lost(job_id=job.pk, reason=reason, heartbeat_before=job.heartbeat_at, now=now)
    return count


def job_mark_lost(*, job_id: int, reason: str, heartbeat_before=None, now=None) -> int:
    """The running job becomes lost with `reason` (only if it is still running and, with `heartbeat_before`,
    has not beaten since); returns 1 if it did."""
    running = TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.RUNNING)
    if heartbeat_before is not None:
        running = running.filter(heartbeat_at__lte=heartbeat_before)
    lost = running.update(status=TrainingJob.Status.LOST, error=reason, finished_at=now or timezone.now())
    if lost:
        _job_ended_notify(job_id)
    return lost


def jobs_requeue_vanished(*, now=None) -> int:
    """Queued jobs whose message the broker no longer holds are queued again; returns how many.

    Only jobs queued for JOB_REQUEUE_AFTER_SECONDS are looked at, so a job whose message is being sent or has
    just been taken by a worker is left alone. Should a worker take a message at the moment of the check, the
    second message finds the job no longer queued and does nothing (the runner claims only queued rows).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_REQUEUE_AFTER_SECONDS)
    waiting = list(
        TrainingJob.objects.filter(status=TrainingJob.Status.QUEUED, created_at__lt=cutoff).values_list(
            "pk", "celery_task_id"
        )
    )
    if not waiting:
        return 0
    try:
        held = task_ids_held((task_id for _, task_id in waiting), queues=[settings.TRAINING_QUEUE])
    except broker_errors() as exc:
        logger.warning("could not read the broker's queues, no job re-queued: %s", exc)
        return 0
    count = 0
    for job_id, task_id in waiting:
        if task_id in held:
            continue
        logger.warning(
            "job %s is queued but the broker no longer holds its message (%s): queueing it again",
            job_id,
            task_id or "never sent",
        )
        try:
            job_enqueue(job_id=job_id)
        except BrokerUnavailable as exc:
            logger.warning("job %s: could not queue it again: %s", job_id, exc)
            return count
        line = f"\n[{timezone.now():%H:%M:%S}] queued again: the broker had lost its message (was Redis restarted?)"
        TrainingJob.objects.filter(pk=job_id).update(log=Concat(F("log"), Value(line)))
        count += 1
    return count


def _job_ended_notify(job_id: int) -> None:
    from rlhf_worker.services.autopilot import job_ended_notify

    job_ended_notify(job_id=job_id)


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
    version_paths = [
        Path(path).resolve() for path in ModelVersion.objects.exclude(path="").values_list("path", flat=True)
    ]
    resumed = {
        config.get("resume_job_id")
        for config in TrainingJob.objects.exclude(status__in=TrainingJob.FINISHED).values_list("config", flat=True)
        if isinstance(config, dict)
    }
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
