"""The labeler's queue and annotations: leases, drafts, submissions and skips."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Sequence

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckAnswer, CheckQuestion, Project, Rating, RankingTask

MAX_DRAFT_BYTES = 64_000
MAX_COMMENT_CHARS = 5_000
MAX_SKIP_REASON_CHARS = 300
# How many locked-but-full candidates one request re-examines before giving up (see _lock_candidate).
_MAX_ATTEMPTS = 16
# First key of the per-labeler advisory lock taken while handing out a task.
_ADVISORY_NAMESPACE = 3_0001


class LabelingError(Exception):
    """A request the labeler can fix; `errors` maps a field name to messages that say what to do."""

    def __init__(self, errors: dict[str, list[str]] | str):
        if isinstance(errors, str):
            errors = {"non_field_errors": [errors]}
        self.errors = errors
        super().__init__("; ".join(m for msgs in errors.values() for m in msgs))


class AnnotationInvalid(LabelingError):
    """A submission that does not pass validation; the draft keeps what was sent."""


@dataclass(frozen=True)
class SubmitResult:
    annotation: Annotation
    created: bool  # False when this call repeated an earlier, already stored submission
    contradictions: list[tuple[int, int]] = field(default_factory=list)  # (ranked higher, rated higher) pairs


# ---------------------------------------------------------------------------------------------
# Leases

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

    Raises LabelingError when the lease is gone and the task has meanwhile been filled by others.
    """
    with transaction.atomic():
        assignment = Assignment.objects.select_related("task__project").filter(task=task, labeler=labeler).first()
        if assignment is None:
            annotation = Annotation.objects.filter(task=task, labeler=labeler).first()
            if annotation is None or annotation.status != Annotation.Status.DRAFT:
                raise LabelingError("You no longer hold this task. Take the next task from the queue.")
            RankingTask.objects.select_for_update().filter(pk=task.pk).first()
            assignment = Assignment(task=task, labeler=labeler, expires_at=_now())
            if not _has_room(task.pk, exclude_labeler_id=labeler.pk):
                raise LabelingError("Your lease expired and other labelers have finished this task. Take the next task.")
            assignment.expires_at = _lease_until(task.project)
            assignment.save()
            return assignment
        kept = _retake(assignment)
        if kept is None:
            raise LabelingError("Your lease expired and other labelers have finished this task. Take the next task.")
        return kept


# ---------------------------------------------------------------------------------------------
# Drafts

def _own_annotation(*, task: RankingTask, labeler, lock: bool = False) -> Annotation:
    qs = Annotation.objects.filter(task=task, labeler=labeler)
    if lock:
        qs = qs.select_for_update()
    annotation = qs.first()
    if annotation is None:
        raise LabelingError("You have not been given this task. Start labeling from the project list.")
    return annotation


def annotation_save_draft(*, task: RankingTask, labeler, draft: dict[str, Any]) -> Annotation:
    """Store the page's unsaved state (any JSON object up to 64 kB) on the labeler's draft annotation."""
    if not isinstance(draft, dict):
        raise LabelingError({"draft": ["Send the draft as a JSON object."]})
    if len(json.dumps(draft)) > MAX_DRAFT_BYTES:
        raise LabelingError({"draft": [f"The draft is larger than {MAX_DRAFT_BYTES // 1000} kB; shorten the comment."]})
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        if annotation.status != Annotation.Status.DRAFT:
            raise LabelingError(f"This task is already {annotation.get_status_display().lower()}; the draft can no longer change.")
        annotation.draft = draft
        annotation.save(update_fields=["draft", "updated_at"])
    return annotation


# ---------------------------------------------------------------------------------------------
# Submission

def _letter(i: int) -> str:
    return f"Response {chr(ord('A') + i)}"


def _validate(*, annotation: Annotation, task: RankingTask, ratings: Sequence[dict], comment: str,
              checks: list[CheckQuestion]) -> tuple[dict[str, list[str]], dict[int, dict]]:
    """Check a submission against the task; returns (errors by field, clean rows by completion id)."""
    errors: dict[str, list[str]] = {}

    def err(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    task_completions = set(task.task_completions.values_list("completion_id", flat=True))
    order = [c for c in annotation.shown_order if c in task_completions]
    order += sorted(task_completions - set(order))
    name = {cid: _letter(i) for i, cid in enumerate(order)}

    if not isinstance(ratings, (list, tuple)):
        return {"ratings": ["Send one rating per completion as a list."]}, {}
    given: dict[int, dict] = {}
    for row in ratings:
        cid = row.get("completion") if isinstance(row, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in task_completions:
            err("ratings", f"{cid!r} is not one of this task's completions; rate exactly these: {sorted(task_completions)}.")
            continue
        if cid in given:
            err("ratings", f"{name[cid]} is rated twice; send one rating per completion.")
            continue
        given[cid] = row

    clean: dict[int, dict] = {}
    ranks: dict[int, int] = {}
    for cid in order:
        row = given.get(cid, {})
        prefix = f"ratings.{cid}"
        likert = row.get("likert")
        if likert is None or likert == "":
            err(f"{prefix}.likert", f"Rate {name[cid]} from 1 (terrible) to 7 (excellent).")
        elif isinstance(likert, bool) or not isinstance(likert, int) or not 1 <= likert <= 7:
            err(f"{prefix}.likert", f"{name[cid]}: the rating must be a whole number from 1 to 7, not {likert!r}.")
        answers = row.get("checks") or {}
        if not isinstance(answers, dict):
            err(f"{prefix}.checks", f"{name[cid]}: send the checks as an object of check key to yes/no.")
            answers = {}
        clean_answers: dict[int, bool] = {}
        for check in checks:
            value = answers.get(check.key)
            if value is None or value == "":
                err(f"{prefix}.checks.{check.key}", f"{name[cid]}: answer yes or no to “{check.question}”.")
            elif not isinstance(value, bool):
                err(f"{prefix}.checks.{check.key}", f"{name[cid]}: “{check.question}” takes yes or no, not {value!r}.")
            else:
                clean_answers[check.pk] = value
        unknown = set(answers) - {c.key for c in checks}
        if unknown:
            err(f"{prefix}.checks", f"{name[cid]}: unknown checks {sorted(unknown)}; answer only this project's checks.")
        rank = row.get("rank")
        if rank is None or rank == "":
            err(f"{prefix}.rank", f"Place {name[cid]} in the ranking.")
        elif isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(order):
            err(f"{prefix}.rank", f"{name[cid]}: the rank must be a whole number from 1 (best) to {len(order)}.")
        else:
            ranks[cid] = rank
        clean[cid] = {"likert": likert, "rank": rank, "answers": clean_answers}

    if len(ranks) == len(order):
        used = sorted(set(ranks.values()))
        if used != list(range(1, len(used) + 1)):
            missing = sorted(set(range(1, max(used) + 1)) - set(used))
            err("ranking", "Ranks must run 1, 2, 3… without gaps (tied completions share a rank): "
                           f"nothing is ranked {', '.join(map(str, missing))}.")
    if not isinstance(comment, str):
        err("comment", "The comment must be text.")
    elif len(comment) > MAX_COMMENT_CHARS:
        err("comment", f"Shorten the comment to at most {MAX_COMMENT_CHARS} characters (it has {len(comment)}).")
    return errors, clean


def ranking_contradictions(rows: dict[int, dict]) -> list[tuple[int, int]]:
    """Pairs (a, b) where a is ranked above b although b was rated higher."""
    out = []
    for a, ra in rows.items():
        for b, rb in rows.items():
            if ra["rank"] < rb["rank"] and ra["likert"] < rb["likert"]:
                out.append((a, b))
    return out


def annotation_submit(*, task: RankingTask, labeler, ratings: Sequence[dict], comment: str = "") -> SubmitResult:
    """Validate and store the labeler's annotation of `task`; the server is the truth.

    `ratings` holds one dict per completion: {"completion": id, "likert": 1-7, "rank": 1 = best
    (ties share a rank; ranks dense 1..m), "checks": {check key: bool} for every active check}.
    Invalid input raises AnnotationInvalid with messages per field and keeps what was sent in the
    draft. Submitting again after success returns the stored annotation (created=False) and writes
    nothing. On success the Rating and CheckAnswer rows are written and the lease is released.
    """
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        if annotation.status == Annotation.Status.SUBMITTED:
            return SubmitResult(annotation=annotation, created=False)
        if annotation.status == Annotation.Status.SKIPPED:
            raise LabelingError("You skipped this task, so it can no longer be submitted. Take the next task.")
        checks = list(CheckQuestion.objects.filter(project_id=task.project_id, active=True))
        errors, clean = _validate(annotation=annotation, task=task, ratings=ratings, comment=comment, checks=checks)
        if not errors:
            try:
                with transaction.atomic():
                    return _store(annotation=annotation, task=task, labeler=labeler, clean=clean, comment=comment)
            except IntegrityError as exc:
                if "task_submitted_within_overlap" not in str(exc):
                    raise
                errors = {"non_field_errors": [
                    "This task already has all the labels it needs (your lease had expired). "
                    "Your work is kept as a draft; take the next task."]}
        # Keep what was sent, so nothing typed is lost when the labeler fixes the errors.
        draft = dict(annotation.draft or {})
        draft.update({"ratings": list(ratings) if isinstance(ratings, (list, tuple)) else [], "comment": comment})
        if len(json.dumps(draft, default=str)) <= MAX_DRAFT_BYTES:
            annotation.draft = draft
            annotation.save(update_fields=["draft", "updated_at"])
    raise AnnotationInvalid(errors)


def _store(*, annotation: Annotation, task: RankingTask, labeler, clean: dict[int, dict], comment: str) -> SubmitResult:
    annotation.status = Annotation.Status.SUBMITTED
    annotation.submitted_at = _now()
    annotation.comment = comment
    annotation.save(update_fields=["status", "submitted_at", "comment", "updated_at"])
    rating_rows = Rating.objects.bulk_create(
        Rating(annotation=annotation, completion_id=cid, likert=row["likert"], rank=row["rank"]) for cid, row in clean.items()
    )
    CheckAnswer.objects.bulk_create(
        CheckAnswer(rating=rating, check_question_id=check_id, value=value)
        for rating in rating_rows
        for check_id, value in clean[rating.completion_id]["answers"].items()
    )
    Assignment.objects.filter(task=task, labeler=labeler).delete()
    return SubmitResult(annotation=annotation, created=True, contradictions=ranking_contradictions(clean))


def annotation_skip(*, task: RankingTask, labeler, reason: str) -> Annotation:
    """Skip `task` with a reason; it goes back to the pool for others and never returns to this labeler."""
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise LabelingError({"reason": ["Say why you skip this task (for example: “I don't know this topic”)."]})
    if len(reason) > MAX_SKIP_REASON_CHARS:
        raise LabelingError({"reason": [f"Shorten the reason to at most {MAX_SKIP_REASON_CHARS} characters."]})
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        if annotation.status == Annotation.Status.SKIPPED:
            return annotation
        if annotation.status == Annotation.Status.SUBMITTED:
            raise LabelingError("This task is already submitted; it cannot be skipped.")
        annotation.status = Annotation.Status.SKIPPED
        annotation.skip_reason = reason
        annotation.save(update_fields=["status", "skip_reason", "updated_at"])
        Assignment.objects.filter(task=task, labeler=labeler).delete()
    return annotation
