"""Celery tasks: the only bridge between Django rows and the torch training code."""

from __future__ import annotations

from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.signals import task_failure

from rlhf_worker.jobs.runner import execute_job


# acks_late: the message is acknowledged when the job ends, not when it starts. A busy worker therefore
# holds its one unacknowledged message (prefetch multiplier 1) and takes no other, so the next job goes to an
# idle worker instead of waiting behind a running one. What it means for a crashed job: its message is not
# acknowledged, and the broker hands it out again (when the worker restarts, or after Redis's visibility
# timeout). That second delivery never re-runs half-done training: the runner claims only a *queued* row, and
# the crashed job's row is running (then lost). Continuing a lost job is an explicit choice: Resume on its page
# (a new job with resume_job_id; reward, SFT and PPO jobs).
@shared_task(bind=True, acks_late=True, name="rlhf_worker.run_training_job")
def run_training_job(self, job_id: int) -> str:
    """Run one TrainingJob by id; its row records state, progress and the outcome."""
    return execute_job(job_id, celery_task_id=self.request.id or "", worker=self.request.hostname or "")


@shared_task(name="rlhf_worker.jobs_sweep")
def jobs_sweep() -> dict[str, int]:
    """Scheduled (CELERY_BEAT_SCHEDULE): marks jobs of dead workers lost, queues again jobs whose message vanished."""
    from rlhf_worker.services.jobs import jobs_sweep as sweep

    return sweep()


@task_failure.connect
def job_worker_lost(sender=None, exception=None, args=None, **kwargs) -> None:
    """A worker whose pool process died while running a job says so at once (Celery's WorkerLostError, in the
    worker's main process): the job is lost now, not after its heartbeat has been silent for long."""
    if getattr(sender, "name", None) != run_training_job.name or not isinstance(exception, WorkerLostError) or not args:
        return
    from rlhf_worker.services.jobs import job_mark_lost

    job_mark_lost(job_id=int(args[0]), reason=f"Lost: the worker process running it died ({exception}).")


@shared_task(name="rlhf_worker.purge_job_outputs")
def purge_job_outputs() -> int:
    """Scheduled: checkpoints of failed, cancelled and lost jobs older than JOB_RETENTION_DAYS are deleted."""
    from rlhf_worker.services.jobs import job_outputs_purge

    return job_outputs_purge()


@shared_task(name="rlhf_worker.autopilots_tick")
def autopilots_tick() -> dict[str, int]:
    """Scheduled (CELERY_BEAT_SCHEDULE): starts the autopilot cycles that are due and moves running ones on."""
    from rlhf_worker.services.autopilot import autopilots_tick as tick

    return tick()
