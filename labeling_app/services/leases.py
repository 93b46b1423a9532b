"""The labeler's queue: leasing the next task (SELECT ... FOR UPDATE SKIP LOCKED) and renewing a lease."""
from __future__ import annotations

import random
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, Assignment, Project, RankingTask

# How many locked-but-full candidates one request re-examines before giving up (see _lock_candidate).
_MAX_ATTEMPTS = 16
# First key of the per-labeler advisory lock taken while handing out a task.
_ADVISORY_NAMESPACE = 3_0001


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
        cur.execute(
            """
            SELECT t.submitted_count + (
                       SELECT count(*) FROM labeling_app_assignment s
                       WHERE s.task_id = t.id AND s.expires_at > %s
                         AND s.labeler_id IS DISTINCT FROM %s
                   ) < t.overlap
            FROM labeling_app_rankingtask t WHERE t.id = %s
            """,
            [_now(), exclude_labeler_id, task_id],
        )
        row = cur.fetchone()
    return bool(row and row[0])


# Candidates: open tasks of the project (task_open_idx / task_started_idx), not labeled by this
# labeler in any way, with room left, oldest first; rows another transaction is assigning are skipped.
# "OFFSET 0" keeps each NOT EXISTS a per-row probe of a unique index: without it PostgreSQL may turn it
# into an anti-join that reads all of this labeler's annotations, which grows with their history.
_CANDIDATE_FILTER = """
    t.project_id = %(project)s AND t.submitted_count < t.overlap
    AND NOT EXISTS (SELECT 1 FROM labeling_app_annotation a
                    WHERE a.task_id = t.id AND a.labeler_id = %(labeler)s OFFSET 0)
    AND NOT EXISTS (SELECT 1 FROM labeling_app_assignment s
                    WHERE s.task_id = t.id AND s.labeler_id = %(labeler)s OFFSET 0)
    AND t.submitted_count + (SELECT count(*) FROM labeling_app_assignment s
                             WHERE s.task_id = t.id AND s.expires_at > %(now)s) < t.overlap
    AND NOT (t.id = ANY(%(tried)s))
"""

# Tasks someone already started (a submitted label, or a live lease): finished first, so labels
# complete tasks instead of spreading thin. Both sources are small sets reached by index; the
# materialized CTE makes the query start from them rather than walk the project's open tasks.
_STARTED_SQL = f"""
    WITH started AS MATERIALIZED (
        SELECT st.id FROM labeling_app_rankingtask st
        WHERE st.project_id = %(project)s AND st.submitted_count > 0 AND st.submitted_count < st.overlap
        UNION
        SELECT s.task_id FROM labeling_app_assignment s WHERE s.expires_at > %(now)s
    )
    SELECT t.id FROM started c JOIN labeling_app_rankingtask t ON t.id = c.id
    WHERE {_CANDIDATE_FILTER}
    ORDER BY c.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED
"""

# Any open task, oldest first, walking task_open_idx.
_FRESH_SQL = f"""
    SELECT t.id FROM labeling_app_rankingtask t
    WHERE {_CANDIDATE_FILTER}
    ORDER BY t.project_id, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED
"""


# Last resort when every candidate is locked by a concurrent hand-out (a nearly empty queue, or
# overlap > 1 with a burst of requests): wait for the lock instead of wrongly answering "none left".
_WAIT_SQL = _FRESH_SQL.replace("SKIP LOCKED", "")


def _lock_candidate(*, project: Project, labeler) -> int | None:
    """Lock and return the id of the task to hand out next, or None when none is left for this labeler."""
    tried: list[int] = []
    params = {"project": project.pk, "labeler": labeler.pk, "tried": tried, "now": _now()}
    for _ in range(_MAX_ATTEMPTS):
        task_id = None
        with connection.cursor() as cur:
            for sql in (_STARTED_SQL, _FRESH_SQL, _WAIT_SQL):
                cur.execute(sql, params)
                row = cur.fetchone()
                if row:
                    task_id = row[0]
                    break
        if task_id is None:
            return None
        # The candidate query's snapshot may predate a lease committed just before we locked the
        # row; re-check under the lock (a new statement sees it) and try the next one if full.
        if _has_room(task_id):
            return task_id
        tried.append(task_id)
    return None


def _shown_order(task: RankingTask) -> list[int]:
    ids = list(task.task_completions.values_list("completion_id", flat=True))
    random.SystemRandom().shuffle(ids)
    return ids


def _own_open_assignment(*, project: Project, labeler) -> Assignment | None:
    """This labeler's lease in this project on a task they have not yet submitted or skipped."""
    finished = Annotation.objects.filter(
        task=OuterRef("task"), labeler=labeler, status__in=[Annotation.Status.SUBMITTED, Annotation.Status.SKIPPED]
    )
    return (
        Assignment.objects.select_related("task__project")
        .filter(labeler=labeler, task__project=project)
        .exclude(Exists(finished))
        .order_by("-expires_at")
        .first()
    )


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


def task_assign_next(*, project: Project, labeler) -> Assignment | None:
    """Lease the next task of `project` to `labeler`, or None when nothing is left for them.

    The labeler's own open lease in this project comes back first (renewed). Otherwise the oldest
    task others already started, then the oldest open task: never one this labeler has an
    annotation for (draft, submitted or skipped), never one whose submitted labels plus live leases
    already reach its overlap. An expired lease counts for nothing, so its task is back in the pool.
    The draft annotation is created with the random order the completions will be shown in.
    """
    with transaction.atomic():
        # One hand-out per labeler at a time: a double click on "Start labeling" must not lease two tasks.
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ADVISORY_NAMESPACE, labeler.pk])
        own = _own_open_assignment(project=project, labeler=labeler)
        if own is not None:
            kept = _retake(own)
            if kept is not None:
                _ensure_draft(kept.task, labeler)
                return kept
        task_id = _lock_candidate(project=project, labeler=labeler)
        if task_id is None:
            return None
        task = RankingTask.objects.get(pk=task_id)
        task.project = project
        assignment = Assignment.objects.create(task=task, labeler=labeler, expires_at=_lease_until(project))
        # The candidate query excluded tasks this labeler has any annotation on: create the draft directly.
        Annotation.objects.create(task=task, labeler=labeler, shown_order=_shown_order(task))
        return assignment


def _ensure_draft(task: RankingTask, labeler) -> Annotation:
    annotation = Annotation.objects.filter(task=task, labeler=labeler).first()
    if annotation is None:
        annotation = Annotation.objects.create(task=task, labeler=labeler, shown_order=_shown_order(task))
    return annotation


def assignment_renew(*, task: RankingTask, labeler) -> Assignment:
    """Extend the labeler's lease on `task` (the open page calls this while the labeler works).

    Raises ServiceError when the lease is gone and the task has meanwhile been filled by others.
    """
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
