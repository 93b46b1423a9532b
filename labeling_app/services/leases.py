"""The labeler's queue: leasing the next task (SELECT ... FOR UPDATE SKIP LOCKED) and renewing a lease."""

from __future__ import annotations

import json
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, Assignment, Project, Prompt, RankingTask
from labeling_app.selectors.labeling import model_from_row
from labeling_app.services.task_archive import TASK_ARCHIVED


def _now():
    return timezone.now()


def _lease_until(project: Project):
    return _now() + timedelta(minutes=project.lease_minutes)


def _has_room(task_id: int, *, exclude_labeler_id: int | None = None) -> bool:
    """Submitted labels plus other labelers' live leases leave room for one more.

    Call only while holding the task's row lock: every writer of leases takes that lock first,
    so this statement (a fresh snapshot under READ COMMITTED) sees every committed lease.
    """
    with connection.cursor() as cur:
        cur.execute("SELECT labeling_task_has_room(%s, %s, %s)", [task_id, _now(), exclude_labeler_id])
        row = cur.fetchone()
    return bool(row and row[0])


def task_assign_next(*, project: Project, labeler) -> Assignment | None:
    """Lease the next task of `project` to `labeler`, or None when nothing is left for them.

    The labeler's own open lease in this project comes back first (renewed). Otherwise a task others
    already started, then any open task, both in the project's queue order (Project.queue_order:
    oldest, newest, fewest labels, a chosen source or the reward model's least certain first,
    migration 0014_queue_order): never one this labeler has an
    annotation for (draft, submitted or skipped), never one whose submitted labels plus live leases
    already reach its overlap. An expired lease counts for nothing, so its task is back in the pool.
    The draft annotation is created with the random order the completions will be shown in.

    One round trip: the function labeling_task_assign_next (migration 0006) makes the whole
    hand-out one transaction and answers what the labeler needs to start. The assignment returned
    carries it: `assignment.task` with its `project` and `prompt`, `assignment.shown_completions`
    ([(completion id, text)] in this labeler's shown order) and `assignment.checks_version` (for
    selectors.labeling.active_checks). Raises Project.DoesNotExist when the project is gone.
    """
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM labeling_task_assign_next(%s, %s, %s)", [project.pk, labeler.pk, _now()])
        row = dict(zip((c.name for c in cur.description), cur.fetchone()))
    if row["outcome"] == "no_project":
        raise Project.DoesNotExist(f"No project with id {project.pk}.")
    if row["outcome"] == "none":
        return None
    task = model_from_row(
        RankingTask,
        {
            "id": row["task_id"],
            "project_id": project.pk,
            "prompt_id": row["task_prompt_id"],
            "overlap": row["task_overlap"],
            "submitted_count": row["task_submitted_count"],
            "created_at": row["task_created_at"],
            "archived_at": None,
        },
    )  # the hand-out never gives out an archived task
    task.project = project
    task.prompt = model_from_row(
        Prompt,
        {
            "id": row["task_prompt_id"],
            "project_id": project.pk,
            "text": row["prompt_text"],
            "messages": row["prompt_messages"],
        },
    )
    assignment = model_from_row(
        Assignment,
        {
            "id": row["assignment_id"],
            "task_id": row["task_id"],
            "labeler_id": labeler.pk,
            "created_at": row["assignment_created_at"],
            "expires_at": row["expires_at"],
        },
    )
    assignment.task, assignment.labeler = task, labeler
    # Django has psycopg read jsonb as text (for JSONField's decoders).
    assignment.shown_completions = [(cid, text) for cid, text in json.loads(row["completions"])]
    assignment.checks_version = row["checks_version"]
    return assignment


def _retake(assignment: Assignment) -> Assignment | None:
    """Extend a lease; an expired one only if the task still has room (the lease row is deleted if not)."""
    project = assignment.task.project
    if assignment.expires_at > _now():
        assignment.expires_at = _lease_until(project)
        assignment.save(update_fields=["expires_at"])
        return assignment
    RankingTask.objects.select_for_update().filter(pk=assignment.task_id).first()
    if _has_room(assignment.task_id, exclude_labeler_id=assignment.labeler_id):
        assignment.expires_at = _lease_until(project)
        assignment.save(update_fields=["expires_at"])
        return assignment
    assignment.delete()
    return None


def assignment_renew(*, task: RankingTask, labeler) -> Assignment:
    """Extend the labeler's lease on `task` (the open page calls this while the labeler works).

    Raises ServiceError when the lease is gone and the task has meanwhile been filled by others, and
    (409) when the task was archived: the lease is left to run out, so a restore gives the task back.
    """
    if RankingTask.objects.filter(pk=task.pk, archived_at__isnull=False).exists():
        raise ServiceError(TASK_ARCHIVED, status=409)
    with transaction.atomic():
        assignment = Assignment.objects.select_related("task__project").filter(task=task, labeler=labeler).first()
        if assignment is None:
            annotation = Annotation.objects.filter(task=task, labeler=labeler).first()
            if annotation is None or annotation.status != Annotation.Status.DRAFT:
                raise ServiceError("You no longer hold this task. Take the next task from the queue.")
            RankingTask.objects.select_for_update().filter(pk=task.pk).first()
            assignment = Assignment(task=task, labeler=labeler, expires_at=_now())
            if not _has_room(task.pk, exclude_labeler_id=labeler.pk):
                raise ServiceError("Your lease expired and other labelers have finished this task. Take the next task.")
            assignment.expires_at = _lease_until(task.project)
            assignment.save()
            return assignment
        kept = _retake(assignment)
        if kept is None:
            raise ServiceError("Your lease expired and other labelers have finished this task. Take the next task.")
        return kept
