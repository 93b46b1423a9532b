"""Celery tasks: the only bridge between Django rows and the torch training code."""
from __future__ import annotations

from celery import shared_task

from rlhf_worker.jobs.runner import execute_job


@shared_task(bind=True, acks_late=False, name="rlhf_worker.run_training_job")
def run_training_job(self, job_id: int) -> str:
    """Run one TrainingJob by id; its row records state, progress and the outcome."""
    return execute_job(job_id, celery_task_id=self.request.id or "")


@shared_task(name="rlhf_worker.mark_lost_jobs")
def mark_lost_jobs() -> int:
    from rlhf_worker.services.jobs import jobs_mark_lost

    return jobs_mark_lost()


@shared_task(name="rlhf_worker.purge_job_outputs")
def purge_job_outputs() -> int:
    """Scheduled: checkpoints of failed, cancelled and lost jobs older than JOB_RETENTION_DAYS are deleted."""
    from rlhf_worker.services.jobs import job_outputs_purge

    return job_outputs_purge()
