"""Reads for the import pages and the command line: a project's import jobs, a running job's progress, what an import did."""
from __future__ import annotations

import os

from django.core.cache import cache
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from labeling_app.models import ImportJob, Project


def import_job_or_404(project_id: int, job_id: int) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("project", "created_by"), pk=job_id, project_id=project_id)


def recent_import_jobs(project: Project, limit: int) -> QuerySet[ImportJob]:
    return project.import_jobs.all()[:limit]


def import_job_running(job: ImportJob) -> bool:
    return job.status not in ImportJob.FINISHED


def import_job_retryable(job: ImportJob) -> bool:
    """A failed or lost job whose saved file is still kept can run again."""
    return job.status in (ImportJob.Status.FAILED, ImportJob.Status.LOST) and bool(job.file_path) and os.path.exists(job.file_path)


def import_job_progress(job: ImportJob) -> dict:
    """{phase, done, total} for a job's page: the live cache entry while importing, else the row."""
    live = cache.get(job.progress_cache_key) if job.status in ImportJob.RUNNING else None
    if live:
        return live
    done = job.total_lines if job.status == ImportJob.Status.SUCCEEDED else job.processed_lines
    return {"phase": job.status, "done": done, "total": job.total_lines}


def import_result_lines(result: dict, *, kind: str, source_name: str = "") -> list[str]:
    """What an import wrote, reused and skipped, one sentence per kind of row (the job page and the command line)."""
    get = lambda key: result.get(key, 0)  # noqa: E731  (results stored before a count existed lack it)
    out = [f"{get('lines')} lines read"]
    prompts = f"{get('prompts_created')} new prompts"
    if get("prompts_existing"):
        prompts += f", {get('prompts_existing')} already in the project " + (
            "(skipped, not doubled)" if kind == ImportJob.Kind.PROMPTS else "(reused)")
    out.append(prompts)
    if kind in (ImportJob.Kind.COMPLETIONS, ImportJob.Kind.PREFERENCES):
        out.append(f"{get('completions_created')} completions, {get('tasks_created')} ranking tasks")
        if get("completions_reused"):
            out.append(f"{get('completions_reused')} completions reused (the same text and model were already imported)")
        if get("tasks_existing"):
            out.append(f"{get('tasks_existing')} tasks already there (the same prompt and completions), not made again")
    if kind == ImportJob.Kind.DEMONSTRATIONS:
        out.append(f"{get('demonstrations_created')} demonstrations")
        if get("demonstrations_skipped"):
            out.append(f"{get('demonstrations_skipped')} identical demonstrations skipped")
    if kind == ImportJob.Kind.PREFERENCES:
        out.append(f"{get('annotations_created')} labels attributed to import:{source_name}")
        if get("annotations_skipped"):
            out.append(f"{get('annotations_skipped')} identical labels from {source_name} skipped")
    if get("invalid_skipped"):
        out.append(f"{get('invalid_skipped')} invalid lines skipped")
    return out
