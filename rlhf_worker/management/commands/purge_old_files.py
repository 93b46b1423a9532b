"""Delete what the retention settings say has expired: old jobs' checkpoints and old rejected uploads."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from labeling_app.services.imports import import_uploads_purge
from rlhf_worker.services.jobs import job_outputs_purge


class Command(BaseCommand):
    help = (
        "Delete the checkpoints of failed, cancelled and lost training jobs that ended more than JOB_RETENTION_DAYS "
        "ago, and the saved files of rejected (failed or lost) uploads older than IMPORT_RETENTION_DAYS. "
        "Succeeded jobs' models, anything a model version uses, and succeeded uploads are never deleted. "
        "The Celery tasks rlhf_worker.purge_job_outputs and labeling_app.import_uploads_purge do the same on a schedule."
    )

    def handle(self, *args, **options):
        jobs = job_outputs_purge()
        uploads = import_uploads_purge()
        self.stdout.write(
            f"deleted the outputs of {jobs} training job(s) older than {settings.JOB_RETENTION_DAYS:g} days "
            f"and {uploads} rejected upload(s) older than {settings.IMPORT_RETENTION_DAYS:g} days"
        )
