"""Reads for the import pages: a project's import jobs and a running job's progress."""
from __future__ import annotations

from django.core.cache import cache
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from labeling_app.models import ImportJob, Project


def import_job_or_404(project_id: int, job_id: int) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("project", "created_by"), pk=job_id, project_id=project_id)


def recent_import_jobs(project: Project, limit: int) -> QuerySet[ImportJob]:
    return project.import_jobs.all()[:limit]


def import_job_running(job: ImportJob) -> bool:
    return job.status not in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED)


def import_job_progress(job: ImportJob) -> dict:
    """{phase, done, total} for a job's page: the live cache entry while importing, else the row."""
    live = cache.get(job.progress_cache_key) if job.status in (ImportJob.Status.VALIDATING, ImportJob.Status.IMPORTING) else None
    if live:
        return live
    done = job.total_lines if job.status == ImportJob.Status.SUCCEEDED else job.processed_lines
    return {"phase": job.status, "done": done, "total": job.total_lines}

