"""The labeler's annotations: drafts, submissions (validated, idempotent), skips and revisions of submitted labels."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, Sequence

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.errors import NON_FIELD, ServiceError
from labeling_app.models import (
    Annotation,
    AnnotationVersion,
    Assignment,
    CheckAnswer,
    CheckQuestion,
    RankingTask,
    Rating,
    ReviewState,
)
from labeling_app.selectors.labeling import CHECKS_VERSION_SQL, project_checks, start_of_today
from labeling_app.services.task_archive import TASK_ARCHIVED
from labeling_app.validation import NUL, NUL_MESSAGE, json_value_problem, rank_gaps_problem

MAX_DRAFT_BYTES = 64_000
# A page's draft is a few levels deep; a limit well below Python's recursion limit keeps every later
# json.dumps of it (the API, the task page) safe.
MAX_DRAFT_DEPTH = 32
MAX_COMMENT_CHARS = 5_000
MAX_SKIP_REASON_CHARS = 300


class AnnotationInvalid(ServiceError):
    """A submission that does not pass validation; the draft keeps what was sent."""


@dataclass(frozen=True)
class SubmitResult:
    annotation: Annotation
    created: bool  # False when this call repeated an earlier, already stored submission
    contradictions: list[tuple[int, int]] = field(default_factory=list)  # (ranked higher, rated higher) pairs
    today_count: int | None = None  # the labeler's submissions since local midnight, when this call stored one


# ---------------------------------------------------------------------------------------------
# Drafts


def _own_annotation(*, task: RankingTask, labeler, lock: bool = False) -> Annotation:
    qs = Annotation.objects.filter(task=task, labeler=labeler)
    if lock:
        qs = qs.select_for_update()
    annotation = qs.first()
    if annotation is None:
        raise ServiceError("You have not been given this task. Start labeling from the project list.")
    return annotation


def annotation_save_draft(*, task: RankingTask, labeler, draft: dict[str, Any]) -> Annotation:
    """Store the page's unsaved state (any JSON object up to 64 kB) on the labeler's draft annotation."""
    if not isinstance(draft, dict):
        raise ServiceError("Send the draft as a JSON object.", field="draft")
    problem = json_value_problem(draft, max_depth=MAX_DRAFT_DEPTH)
    if problem:
        raise ServiceError(f"The draft {problem}.", field="draft")
    if len(json.dumps(draft)) > MAX_DRAFT_BYTES:
        raise ServiceError(
            f"The draft is larger than {MAX_DRAFT_BYTES // 1000} kB; shorten the comment.", field="draft"
        )
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        if annotation.status != Annotation.Status.DRAFT:
            raise ServiceError(
                f"This task is already {annotation.get_status_display().lower()}; the draft can no longer change."
            )
        annotation.draft = draft
        annotation.save(update_fields=["draft", "updated_at"])
    return annotation


# ---------------------------------------------------------------------------------------------
# Submission


def _letter(i: int) -> str:
    return f"Response {chr(ord('A') + i)}"


def _validate(
    *,
    annotation: Annotation,
    task_completions: set[int],
    ratings: Sequence[dict],
    comment: str,
    checks: list[CheckQuestion],
) -> tuple[dict[str, list[str]], dict[int, dict]]:
    """Check a submission against the task's completions; returns (errors by field, clean rows by completion id)."""
    errors: dict[str, list[str]] = {}

    def err(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    order = [c for c in annotation.shown_order if c in task_completions]
    order += sorted(task_completions - set(order))
    name = {cid: _letter(i) for i, cid in enumerate(order)}

    if not isinstance(ratings, (list, tuple)):
        return {"ratings": ["Send one rating per completion as a list."]}, {}
    given: dict[int, dict] = {}
    for row in ratings:
        cid = row.get("completion") if isinstance(row, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in task_completions:
            err(
                "ratings",
                f"{cid!r} is not one of this task's completions; rate exactly these: {sorted(task_completions)}.",
            )
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
            err(
                f"{prefix}.checks", f"{name[cid]}: unknown checks {sorted(unknown)}; answer only this project's checks."
            )
        rank = row.get("rank")
        if rank is None or rank == "":
            err(f"{prefix}.rank", f"Place {name[cid]} in the ranking.")
        elif isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(order):
            err(f"{prefix}.rank", f"{name[cid]}: the rank must be a whole number from 1 (best) to {len(order)}.")
        else:
            ranks[cid] = rank
        clean[cid] = {"likert": likert, "rank": rank, "answers": clean_answers}

    if len(ranks) == len(order):
        gaps = rank_gaps_problem(ranks.values())
        if gaps:
            err("ranking", gaps)
    if not isinstance(comment, str):
        err("comment", "The comment must be text.")
    elif NUL in comment:
        err("comment", f"The comment {NUL_MESSAGE}.")
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


_SKIPPED = "You skipped this task, so it can no longer be submitted. Take the next task."


def annotation_submit(*, task: RankingTask, labeler, ratings: Sequence[dict], comment: str = "") -> SubmitResult:
    """Validate and store the labeler's annotation of `task`; the server is the truth.

    `ratings` holds one dict per completion: {"completion": id, "likert": 1-7, "rank": 1 = best
    (ties share a rank; ranks dense 1..m), "checks": {check key: bool} for every active check}.
    Invalid input raises AnnotationInvalid with messages per field and keeps what was sent in the
    draft. Submitting again after success returns the stored annotation (created=False) and writes
    nothing. On success the Rating and CheckAnswer rows are written and the lease is released.

    A valid submission costs one statement: it is validated against the annotation (the one
    `task.labeler_annotation` carries, else read), the completions recorded in its shown order and
    the project's cached checks, and stored by a statement that first verifies those were current.
    Anything else (invalid input, a concurrent change) takes the path that locks the annotation and
    reads everything afresh, so what is stored and every message are as if all was read under the lock.

    Adaptive overlap rides on the same statement: when this label completes its task, the submitted-count
    trigger asks `labeling_task_extend_if_disagreeing` (migration 0015_adaptive_overlap) whether the task's labels disagree
    on at least the project's `disagreement_threshold` of the completion pairs (a lone label: against the
    newest reward model's scores, if any) and, below `overlap_max`, raises its overlap by one, under the
    task's row lock and in this transaction. A label that does not complete its task costs nothing more.
    """
    annotation = getattr(task, "labeler_annotation", None)
    if annotation is None or annotation.labeler_id != labeler.pk or annotation.task_id != task.pk:
        annotation = _own_annotation(task=task, labeler=labeler)
    # Submitted and skipped are final states: what was read stays true.
    if annotation.status == Annotation.Status.SUBMITTED:
        return SubmitResult(annotation=annotation, created=False)
    if annotation.status == Annotation.Status.SKIPPED:
        raise ServiceError(_SKIPPED)
    if task.archived_at is not None:  # refused (409) under the lock, keeping what was sent in the draft
        return _submit_locked(task=task, labeler=labeler, ratings=ratings, comment=comment)
    checks_version, checks = project_checks(task.project_id)
    completion_ids = set(annotation.shown_order)
    errors, clean = _validate(
        annotation=annotation, task_completions=completion_ids, ratings=ratings, comment=comment, checks=checks
    )
    if not errors:
        try:
            with _own_transaction_or_savepoint():
                result = _store(
                    annotation=annotation,
                    task=task,
                    labeler=labeler,
                    clean=clean,
                    comment=comment,
                    expect=(sorted(completion_ids), checks_version),
                )
            if result is not None:
                return result
        except IntegrityError as exc:
            if "task_submitted_within_overlap" not in str(exc):
                raise
    return _submit_locked(task=task, labeler=labeler, ratings=ratings, comment=comment)


def _own_transaction_or_savepoint():
    """Outside a transaction one statement is its own; inside the caller's, a savepoint keeps a failed one from spoiling it."""
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()


def _submit_locked(*, task: RankingTask, labeler, ratings: Sequence[dict], comment: str) -> SubmitResult:
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        if annotation.status == Annotation.Status.SUBMITTED:
            return SubmitResult(annotation=annotation, created=False)
        if annotation.status == Annotation.Status.SKIPPED:
            raise ServiceError(_SKIPPED)
        if RankingTask.objects.filter(pk=task.pk, archived_at__isnull=False).exists():
            errors, refusal = {NON_FIELD: [TASK_ARCHIVED]}, ServiceError(TASK_ARCHIVED, status=409)
        else:
            _, checks = project_checks(task.project_id, fresh=True)
            completion_ids = set(task.task_completions.values_list("completion_id", flat=True))
            errors, clean = _validate(
                annotation=annotation, task_completions=completion_ids, ratings=ratings, comment=comment, checks=checks
            )
            if not errors:
                try:
                    with transaction.atomic():
                        # Under the row lock the draft stays a draft and what was read is current: this stores.
                        return _store(annotation=annotation, task=task, labeler=labeler, clean=clean, comment=comment)
                except IntegrityError as exc:
                    if "task_submitted_within_overlap" not in str(exc):
                        raise
                    errors = {
                        NON_FIELD: [
                            "This task already has all the labels it needs (your lease had expired). "
                            "Your work is kept as a draft; take the next task."
                        ]
                    }
            refusal = AnnotationInvalid(errors)
        _keep_in_draft(annotation, ratings, comment)
    raise refusal  # after the block, which commits the draft


def _keep_in_draft(annotation: Annotation, ratings, comment) -> None:
    """Keep what was sent in the draft, so nothing typed is lost when the labeler fixes the errors."""
    draft = dict(annotation.draft or {})
    draft.update({"ratings": list(ratings) if isinstance(ratings, (list, tuple)) else [], "comment": comment})
    if (
        json_value_problem(draft, max_depth=MAX_DRAFT_DEPTH) is None
        and len(json.dumps(draft, default=str)) <= MAX_DRAFT_BYTES
    ):
        annotation.draft = draft
        annotation.save(update_fields=["draft", "updated_at"])


# One statement stores a submission: the annotation turns submitted (only from draft, and, when the
# caller validated against data read without a lock, only while the task's completions and the
# project's checks are still what it validated against, and never on an archived task), its ratings and check answers are inserted,
# the lease is released, and the labeler's submissions today are counted. The counter trigger moves
# the task's submitted_count in the same statement, so the overlap CHECK rejects it all at once.
_STORE_SQL = """
WITH ann AS (
    UPDATE labeling_app_annotation a
    SET status = 'submitted', submitted_at = %(now)s, comment = %(comment)s, updated_at = %(now)s
    WHERE a.id = %(annotation)s AND a.status = 'draft'
      AND NOT EXISTS (SELECT 1 FROM labeling_app_rankingtask t WHERE t.id = a.task_id AND t.archived_at IS NOT NULL)
      AND (%(completions)s::bigint[] IS NULL
           OR ARRAY(SELECT tc.completion_id FROM labeling_app_taskcompletion tc
                    WHERE tc.task_id = a.task_id ORDER BY tc.completion_id) = %(completions)s::bigint[])
      AND (%(checks_version)s::text IS NULL OR {checks_version} = %(checks_version)s::text)
    RETURNING a.id, a.task_id, a.labeler_id
), rating AS (
    INSERT INTO labeling_app_rating (annotation_id, completion_id, likert, rank)
    SELECT ann.id, r.completion_id, r.likert, r.rank
    FROM ann CROSS JOIN unnest(%(rating_completions)s::bigint[], %(likerts)s::smallint[], %(ranks)s::smallint[])
         WITH ORDINALITY AS r(completion_id, likert, rank, n)
    ORDER BY r.n
    RETURNING id, completion_id
), answer AS (
    INSERT INTO labeling_app_checkanswer (rating_id, check_question_id, value)
    SELECT rating.id, x.check_id, x.value
    FROM unnest(%(answer_completions)s::bigint[], %(answer_checks)s::bigint[], %(answer_values)s::boolean[])
         WITH ORDINALITY AS x(completion_id, check_id, value, n)
    JOIN rating ON rating.completion_id = x.completion_id
    ORDER BY x.n
), lease AS (
    DELETE FROM labeling_app_assignment s USING ann WHERE s.task_id = ann.task_id AND s.labeler_id = ann.labeler_id
)
SELECT EXISTS (SELECT 1 FROM ann),
       (SELECT count(*) FROM labeling_app_annotation d
        WHERE d.labeler_id = %(labeler)s AND d.status = 'submitted' AND d.submitted_at >= %(since)s)
""".format(checks_version=CHECKS_VERSION_SQL.format(project="%(project)s"))


def _store(
    *,
    annotation: Annotation,
    task: RankingTask,
    labeler,
    clean: dict[int, dict],
    comment: str,
    expect: tuple[list[int], str] | None = None,
) -> SubmitResult | None:
    """Store a validated submission; None (nothing written) when it is no longer a draft or `expect` is out of date."""
    now = timezone.now()
    answers = [(cid, check_id, value) for cid, row in clean.items() for check_id, value in row["answers"].items()]
    with connection.cursor() as cur:
        cur.execute(
            _STORE_SQL,
            {
                "now": now,
                "comment": comment,
                "annotation": annotation.pk,
                "labeler": labeler.pk,
                "project": task.project_id,
                "completions": expect[0] if expect else None,
                "checks_version": expect[1] if expect else None,
                "rating_completions": list(clean),
                "likerts": [row["likert"] for row in clean.values()],
                "ranks": [row["rank"] for row in clean.values()],
                "answer_completions": [a[0] for a in answers],
                "answer_checks": [a[1] for a in answers],
                "answer_values": [a[2] for a in answers],
                "since": start_of_today(),
            },
        )
        stored, submitted_before = cur.fetchone()
    if not stored:
        return None
    annotation.status, annotation.submitted_at, annotation.comment, annotation.updated_at = (
        Annotation.Status.SUBMITTED,
        now,
        comment,
        now,
    )
    # The count's snapshot is from before this statement's own update.
    return SubmitResult(
        annotation=annotation,
        created=True,
        contradictions=ranking_contradictions(clean),
        today_count=submitted_before + 1,
    )


def annotation_skip(*, task: RankingTask, labeler, reason: str) -> Annotation:
    """Skip `task` with a reason; it goes back to the pool for others and never returns to this labeler."""
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise ServiceError("Say why you skip this task (for example: “I don't know this topic”).", field="reason")
    if len(reason) > MAX_SKIP_REASON_CHARS:
        raise ServiceError(f"Shorten the reason to at most {MAX_SKIP_REASON_CHARS} characters.", field="reason")
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        if annotation.status == Annotation.Status.SKIPPED:
            return annotation
        if annotation.status == Annotation.Status.SUBMITTED:
            raise ServiceError("This task is already submitted; it cannot be skipped.")
        annotation.status = Annotation.Status.SKIPPED
        annotation.skip_reason = reason
        annotation.save(update_fields=["status", "skip_reason", "updated_at"])
        Assignment.objects.filter(task=task, labeler=labeler).delete()
    return annotation


# ---------------------------------------------------------------------------------------------
# Revision of a submitted label


def revision_refusal(annotation: Annotation) -> str | None:
    """Why the labeler may not revise this label now, or None when they may.

    A label stays open for revision while it is submitted and a researcher has not accepted it (pending
    review, or rejected with a note to act on). An accepted label is final: what was accepted is what
    training reads. A label of an archived task is closed too: the task left the campaign. (A project the
    labeler lost access to hides the label altogether, see `selectors.labeling.annotation_for_labeler`.)
    """
    if annotation.status != Annotation.Status.SUBMITTED:
        return (
            f"You have not submitted task {annotation.task_id}; only a submitted label can be revised."
            if annotation.status == Annotation.Status.DRAFT
            else f"You skipped task {annotation.task_id}; a skipped task has no label to revise."
        )
    if annotation.review_state == ReviewState.ACCEPTED:
        return "A researcher accepted this label, so it can no longer be revised."
    if annotation.task.archived_at is not None:
        return f"Task {annotation.task_id} was archived, so its labels can no longer be revised."
    return None


def _current_version_ratings(annotation: Annotation) -> list[dict]:
    """The label's ratings and check answers as an AnnotationVersion keeps them, in the labeler's shown order."""
    position = {cid: i for i, cid in enumerate(annotation.shown_order)}
    answers: dict[int, dict[str, bool]] = {}
    for rating_id, key, value in CheckAnswer.objects.filter(rating__annotation=annotation).values_list(
        "rating_id", "check_question__key", "value"
    ):
        answers.setdefault(rating_id, {})[key] = value
    rows = [
        {"completion": cid, "likert": likert, "rank": rank, "checks": answers.get(rid, {})}
        for rid, cid, likert, rank in annotation.ratings.values_list("id", "completion_id", "likert", "rank")
    ]
    return sorted(rows, key=lambda r: (position.get(r["completion"], len(position)), r["completion"]))


def annotation_revise(
    *, task: RankingTask, labeler, ratings: Sequence[dict], comment: str = "", opened_at: datetime | None = None
) -> Annotation:
    """Replace the labeler's submitted label of `task` with a new version, keeping the earlier one.

    The input and its validation are a submission's (`_validate`, against the task's completions and the
    project's active checks read under the row lock). The earlier version goes to AnnotationVersion; the
    Rating and CheckAnswer rows are rewritten, so every reader (agreement, exports, training) sees the
    latest. The status stays "submitted" and is not written, so the submitted_count trigger (migration
    0002, which fires on UPDATE OF status) does not move. The review starts again: a rejected (or pending)
    label is pending review after its revision. `opened_at` (when the labeler opened the revision page)
    becomes the version's start, clamped between the earlier version's submission and now; without it the
    revision counts no time.
    """
    with transaction.atomic():
        annotation = _own_annotation(task=task, labeler=labeler, lock=True)
        refusal = revision_refusal(annotation)
        if refusal:
            raise ServiceError(refusal, status=409)
        _, checks = project_checks(task.project_id, fresh=True)
        completion_ids = set(task.task_completions.values_list("completion_id", flat=True))
        errors, clean = _validate(
            annotation=annotation, task_completions=completion_ids, ratings=ratings, comment=comment, checks=checks
        )
        if errors:
            raise AnnotationInvalid(errors)
        now = timezone.now()
        AnnotationVersion.objects.create(
            annotation=annotation,
            version=annotation.revision_count + 1,
            ratings=_current_version_ratings(annotation),
            comment=annotation.comment,
            started_at=annotation.started_at,
            submitted_at=annotation.submitted_at,
            review_state=annotation.review_state,
            review_note=annotation.review_note,
            reviewed_by_id=annotation.reviewed_by_id,
            reviewed_at=annotation.reviewed_at,
            replaced_at=now,
        )
        Rating.objects.filter(annotation=annotation).delete()  # its check answers go with it (CASCADE)
        new_ratings = Rating.objects.bulk_create(
            [
                Rating(annotation=annotation, completion_id=cid, likert=row["likert"], rank=row["rank"])
                for cid, row in clean.items()
            ]
        )
        CheckAnswer.objects.bulk_create(
            [
                CheckAnswer(rating=rating, check_question_id=check_id, value=value)
                for rating, row in zip(new_ratings, clean.values())
                for check_id, value in row["answers"].items()
            ]
        )
        started = now if opened_at is None else min(max(opened_at, annotation.submitted_at), now)
        annotation.comment, annotation.started_at, annotation.submitted_at = comment, started, now
        annotation.review_state, annotation.review_note = ReviewState.PENDING, ""
        annotation.reviewed_by, annotation.reviewed_at = None, None
        annotation.revision_count += 1
        # Never "status": see the docstring.
        annotation.save(
            update_fields=[
                "comment",
                "started_at",
                "submitted_at",
                "review_state",
                "review_note",
                "reviewed_by",
                "reviewed_at",
                "revision_count",
                "updated_at",
            ]
        )
    return annotation
