"""Reads for the import pages and the command line: a project's import jobs, a running job's progress, what an import did."""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Exists, OuterRef, QuerySet
from django.shortcuts import get_object_or_404

from labeling_app.models import (
    Annotation,
    Completion,
    Demonstration,
    ImportJob,
    Project,
    Prompt,
    Rating,
    RankingTask,
    TaskCompletion,
)


def import_job_or_404(project_id: int, job_id: int) -> ImportJob:
    return get_object_or_404(
        ImportJob.objects.select_related("project", "created_by"), pk=job_id, project_id=project_id
    )


def recent_import_jobs(project: Project, limit: int) -> QuerySet[ImportJob]:
    return project.import_jobs.all()[:limit]


def import_jobs_of_project(project: Project) -> QuerySet[ImportJob]:
    """Every import of a project, newest first (the Import tab pages through them)."""
    return project.import_jobs.select_related("created_by", "undone_by").defer("errors")


def import_job_counts(job: ImportJob) -> dict[str, int]:
    """A job's rows in three numbers for the list: created, reused (already there and used) and skipped
    (already there and left out, or invalid lines)."""
    r = job.result or {}
    get = lambda key: r.get(key, 0)  # noqa: E731  (results stored before a count existed lack it)
    prompts_only = job.kind == ImportJob.Kind.PROMPTS
    return {
        "created": sum(
            get(k)
            for k in (
                "prompts_created",
                "completions_created",
                "tasks_created",
                "demonstrations_created",
                "annotations_created",
            )
        ),
        "reused": (0 if prompts_only else get("prompts_existing")) + get("completions_reused") + get("tasks_existing"),
        "skipped": (get("prompts_existing") if prompts_only else 0)
        + get("demonstrations_skipped")
        + get("annotations_skipped")
        + get("invalid_skipped"),
    }


UNDO_KINDS = ("annotations", "tasks", "completions", "demonstrations", "prompts")


@dataclass
class UndoPlan:
    """What undoing an import would delete: the rows it created that nothing else uses, as querysets.

    The querysets are evaluated in UNDO_KINDS order, each over what the ones before left: the undo
    service deletes them in that order, and deleting a kind does not change what the later ones select.
    `human_labels` counts labelers' draft and submitted labels on tasks the import created: while
    there is one, the import cannot be undone.
    """

    job: ImportJob
    annotations: QuerySet
    tasks: QuerySet
    completions: QuerySet
    demonstrations: QuerySet
    prompts: QuerySet
    created: dict[str, int]
    human_labels: int

    def counts(self) -> dict[str, int]:
        return {kind: getattr(self, kind).count() for kind in UNDO_KINDS}


def import_undo_plan(job: ImportJob) -> UndoPlan:
    """The rows an undo of `job` would delete (created by it, used by nothing outside it) and the human labels in the way.

    A row the import created but another import or a person has used since (a completion in a task
    made by hand, a prompt a later file added completions to, a task another source added labels to)
    is kept; rows the import merely reused were never its own.
    """
    j = job.pk
    annotations = Annotation.objects.filter(import_job_id=j)
    other_labels = Annotation.objects.filter(task=OuterRef("pk"), labeler__isnull=True).exclude(import_job_id=j)
    tasks = RankingTask.objects.filter(import_job_id=j).exclude(Exists(other_labels))
    in_other_task = TaskCompletion.objects.filter(completion=OuterRef("pk")).exclude(task__in=tasks)
    rated_elsewhere = (
        Rating.objects.filter(completion=OuterRef("pk"))
        .exclude(annotation__import_job_id=j)
        .exclude(annotation__task__in=tasks)
    )
    completions = (
        Completion.objects.filter(import_job_id=j).exclude(Exists(in_other_task)).exclude(Exists(rated_elsewhere))
    )
    demonstrations = Demonstration.objects.filter(import_job_id=j).exclude(
        Exists(Completion.objects.filter(demonstration=OuterRef("pk")).exclude(pk__in=completions))
    )
    prompts = (
        Prompt.objects.filter(import_job_id=j)
        .exclude(Exists(Completion.objects.filter(prompt=OuterRef("pk")).exclude(pk__in=completions)))
        .exclude(Exists(RankingTask.objects.filter(prompt=OuterRef("pk")).exclude(pk__in=tasks)))
        .exclude(Exists(Demonstration.objects.filter(prompt=OuterRef("pk")).exclude(pk__in=demonstrations)))
    )
    human_labels = Annotation.objects.filter(
        task__import_job_id=j, labeler__isnull=False, status__in=(Annotation.Status.DRAFT, Annotation.Status.SUBMITTED)
    ).count()
    created = {
        "annotations": annotations.count(),
        "tasks": RankingTask.objects.filter(import_job_id=j).count(),
        "completions": Completion.objects.filter(import_job_id=j).count(),
        "demonstrations": Demonstration.objects.filter(import_job_id=j).count(),
        "prompts": Prompt.objects.filter(import_job_id=j).count(),
    }
    return UndoPlan(
        job=job,
        annotations=annotations,
        tasks=tasks,
        completions=completions,
        demonstrations=demonstrations,
        prompts=prompts,
        created=created,
        human_labels=human_labels,
    )


UNDO_WORDS = {
    "prompts": "prompts",
    "completions": "completions",
    "tasks": "ranking tasks",
    "demonstrations": "demonstrations",
    "annotations": "imported labels",
}


def import_undo_summary(counts: dict[str, int]) -> str:
    """'3 prompts, 6 completions, 3 ranking tasks' from undo counts (kinds with none left out), or 'nothing'."""
    said = [f"{counts[kind]} {word}" for kind, word in UNDO_WORDS.items() if counts.get(kind)]
    return ", ".join(said) or "nothing"


def import_job_undo_refusal(job: ImportJob) -> str:
    """Why this job cannot be undone whatever its rows, or "" (the labels on its rows are checked separately)."""
    if job.status == ImportJob.Status.UNDONE:
        by = f" by {job.undone_by}" if job.undone_by_id else ""
        return f"This import was already undone{by} on {job.undone_at:%Y-%m-%d %H:%M} UTC."
    if job.status in (ImportJob.Status.FAILED, ImportJob.Status.LOST):
        return "This import wrote nothing (it failed or stopped), so there is nothing to undo."
    if job.status != ImportJob.Status.SUCCEEDED:
        return "This import is still running; wait for it to finish before undoing it."
    if not job.rows_recorded:
        return (
            "This import ran before imports recorded the rows they create, so which rows are its own cannot be "
            "told apart from rows other imports reused or people made; it cannot be undone. Delete its rows by hand "
            "if you must."
        )
    return ""


def import_job_running(job: ImportJob) -> bool:
    return job.status not in ImportJob.FINISHED


def import_job_retryable(job: ImportJob) -> bool:
    """A failed or lost job whose saved file is still kept can run again."""
    return (
        job.status in (ImportJob.Status.FAILED, ImportJob.Status.LOST)
        and bool(job.file_path)
        and os.path.exists(job.file_path)
    )


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
            "(skipped, not doubled)" if kind == ImportJob.Kind.PROMPTS else "(reused)"
        )
    out.append(prompts)
    if kind in (ImportJob.Kind.COMPLETIONS, ImportJob.Kind.PREFERENCES):
        out.append(f"{get('completions_created')} completions, {get('tasks_created')} ranking tasks")
        if get("completions_reused"):
            out.append(
                f"{get('completions_reused')} completions reused (the same text and model were already imported)"
            )
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
