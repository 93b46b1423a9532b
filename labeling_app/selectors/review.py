"""Reads for reviewing labels: a task with every label on it (researchers), and a labeler's own labels with their review."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from labeling_app.models import Annotation, AnnotationVersion, CheckAnswer, CheckQuestion, RankingTask, Rating
from labeling_app.selectors.labeling import _require_labeler, annotation_for_labeler, open_to_labeler
from labeling_app.selectors.labels import labeler_name

MY_LABELS_PER_PAGE = 50


@dataclass
class CheckShown:
    question: str
    answer: bool
    problem: bool  # the answer is the check's problem answer (its polarity), as the labeling page marks with ⚠

    @property
    def word(self) -> str:
        return "yes" if self.answer else "no"


@dataclass
class CompletionShown:
    """One completion within one version of a label."""

    completion_id: int
    position: int  # 1-based place in the task
    letter: str  # the letter the labeler saw it under ("A" = shown first); "" when not known (imported labels)
    text: str
    likert: int | None
    rank: int | None
    checks: list[CheckShown] = field(default_factory=list)

    @property
    def problems(self) -> list[CheckShown]:
        return [c for c in self.checks if c.problem]


@dataclass
class LabelVersion:
    """A label's ratings, checks, ranking and comment: the live one, or an earlier one a revision replaced."""

    number: int
    completions: list[CompletionShown]  # in the labeler's shown order (task order when that is unknown)
    comment: str
    started_at: object
    submitted_at: object
    review_state: str
    review_state_label: str
    review_note: str
    reviewed_by: str
    reviewed_at: object

    @property
    def seconds_spent(self) -> float | None:
        if self.started_at is None or self.submitted_at is None:
            return None
        return max(0.0, (self.submitted_at - self.started_at).total_seconds())

    @property
    def ranking(self) -> str:
        """The ranking in the labeler's letters, best first: "B > A = C > D"."""
        ranked = sorted(
            (c for c in self.completions if c.rank is not None), key=lambda c: (c.rank, c.letter or c.position)
        )
        out, previous = "", None
        for c in ranked:
            name = c.letter or f"#{c.position}"
            out += name if previous is None else (f" = {name}" if c.rank == previous else f" > {name}")
            previous = c.rank
        return out


def _letters(shown_order: list[int], completion_ids: list[int]) -> dict[int, str]:
    return {cid: chr(65 + i) for i, cid in enumerate(c for c in shown_order if c in completion_ids)}


def _completions_shown(
    *,
    task_completions: list[tuple[int, str]],
    shown_order: list[int],
    ratings: Iterable[tuple[int, int | None, int | None, dict[str, bool]]],
    checks: dict[str, CheckQuestion],
) -> list[CompletionShown]:
    """Rows for `ratings` ((completion id, likert, rank, {check key: answer})) in the shown order."""
    ids = [cid for cid, _ in task_completions]
    letters = _letters(shown_order, ids)
    by_id = {cid: (likert, rank, answers) for cid, likert, rank, answers in ratings}
    rows = []
    for position, (cid, text) in enumerate(task_completions, start=1):
        likert, rank, answers = by_id.get(cid, (None, None, {}))
        # In the project's check order (`checks` is ordered); a key no check has any more comes last, as it is.
        keys = [k for k in checks if k in answers] + sorted(k for k in answers if k not in checks)
        shown = [
            CheckShown(
                question=checks[k].question if k in checks else k,
                answer=answers[k],
                problem=k in checks and answers[k] == checks[k].problem_answer,
            )
            for k in keys
        ]
        rows.append(
            CompletionShown(
                completion_id=cid,
                position=position,
                letter=letters.get(cid, ""),
                text=text,
                likert=likert,
                rank=rank,
                checks=shown,
            )
        )
    return sorted(rows, key=lambda r: (r.letter == "", r.letter, r.position))


def _username(user) -> str:
    return user.username if user is not None else ""


def _live_version(annotation: Annotation, task_completions, checks) -> LabelVersion:
    ratings = [
        (r.completion_id, r.likert, r.rank, {a.check_question.key: a.value for a in r.check_answers.all()})
        for r in annotation.ratings.all()
    ]
    return LabelVersion(
        number=annotation.revision_count + 1,
        completions=_completions_shown(
            task_completions=task_completions, shown_order=annotation.shown_order, ratings=ratings, checks=checks
        ),
        comment=annotation.comment,
        started_at=annotation.started_at,
        submitted_at=annotation.submitted_at,
        review_state=annotation.review_state,
        review_state_label=annotation.get_review_state_display(),
        review_note=annotation.review_note,
        reviewed_by=_username(annotation.reviewed_by),
        reviewed_at=annotation.reviewed_at,
    )


def _earlier_version(annotation: Annotation, version: AnnotationVersion, task_completions, checks) -> LabelVersion:
    ratings = [(r.get("completion"), r.get("likert"), r.get("rank"), r.get("checks") or {}) for r in version.ratings]
    return LabelVersion(
        number=version.version,
        completions=_completions_shown(
            task_completions=task_completions, shown_order=annotation.shown_order, ratings=ratings, checks=checks
        ),
        comment=version.comment,
        started_at=version.started_at,
        submitted_at=version.submitted_at,
        review_state=version.review_state,
        review_state_label=version.get_review_state_display(),
        review_note=version.review_note,
        reviewed_by=_username(version.reviewed_by),
        reviewed_at=version.reviewed_at,
    )


@dataclass
class ReviewedLabel:
    annotation: Annotation
    author: str  # `labeler_name`: the username, or "import:<source>"
    current: LabelVersion
    earlier: list[LabelVersion]  # newest first

    @property
    def imported(self) -> bool:
        return self.annotation.labeler_id is None


def _annotations_with_labels() -> QuerySet[Annotation]:
    return Annotation.objects.select_related("labeler", "import_source", "reviewed_by").prefetch_related(
        Prefetch(
            "ratings",
            queryset=Rating.objects.prefetch_related(
                Prefetch("check_answers", queryset=CheckAnswer.objects.select_related("check_question"))
            ),
        ),
        Prefetch("versions", queryset=AnnotationVersion.objects.select_related("reviewed_by").order_by("-version")),
    )


def _task_completions(task: RankingTask) -> list[tuple[int, str]]:
    return list(task.task_completions.order_by("position").values_list("completion_id", "completion__text"))


def _checks_by_key(project_id: int) -> dict[str, CheckQuestion]:
    return {c.key: c for c in CheckQuestion.objects.filter(project_id=project_id).order_by("position", "id")}


def _reviewed(annotation: Annotation, task_completions, checks) -> ReviewedLabel:
    return ReviewedLabel(
        annotation=annotation,
        author=labeler_name(
            username=_username(annotation.labeler) or None,
            import_source=annotation.import_source.name if annotation.import_source else None,
        ),
        current=_live_version(annotation, task_completions, checks),
        earlier=[_earlier_version(annotation, v, task_completions, checks) for v in annotation.versions.all()],
    )


def task_for_review_or_404(project_id: int, task_id: int) -> RankingTask:
    return get_object_or_404(RankingTask.objects.select_related("project", "prompt"), pk=task_id, project_id=project_id)


def task_review(task: RankingTask) -> dict:
    """Everything the researcher's review page shows of a task: its completions, every submitted label (human
    and imported) with its history, and the labels still being worked on or skipped."""
    task_completions = _task_completions(task)
    checks = _checks_by_key(task.project_id)
    annotations = list(_annotations_with_labels().filter(task=task).order_by("submitted_at", "id"))
    submitted = [a for a in annotations if a.status == Annotation.Status.SUBMITTED]
    return {
        "completions": task_completions,
        "labels": [_reviewed(a, task_completions, checks) for a in submitted],
        "unfinished": [a for a in annotations if a.status != Annotation.Status.SUBMITTED],
    }


def annotation_of_task_or_404(task: RankingTask, annotation_id: int) -> Annotation:
    return get_object_or_404(Annotation, pk=annotation_id, task=task)


# --- the labeler's own labels ------------------------------------------------------------------


def my_labels(user) -> QuerySet[Annotation]:
    """The labeler's submitted labels, newest first, with task, project and reviewer (projects they can no
    longer open left out, as the labeling pages do)."""
    _require_labeler(user)
    return (
        Annotation.objects.filter(labeler=user, status=Annotation.Status.SUBMITTED)
        # The task's project read by a subquery, not through the join select_related makes: a count drops that join.
        .filter(
            open_to_labeler(
                user,
                f"(SELECT t.project_id FROM {RankingTask._meta.db_table} t "
                f"WHERE t.id = {Annotation._meta.db_table}.task_id)",
            )
        )
        .select_related("task__project", "reviewed_by")
        .order_by("-submitted_at", "-id")
    )


def my_label(user, task_id: int) -> ReviewedLabel:
    """The labeler's own submitted label of a task with its history; 404 for anyone else's, and for a task
    the labeler has not submitted (`annotation_for_labeler` decides whose it is)."""
    own = annotation_for_labeler(user, task_id)
    if own.status != Annotation.Status.SUBMITTED:
        raise Http404("You have not submitted this task.")
    annotation = _annotations_with_labels().get(pk=own.pk)
    annotation.task = own.task  # with its project and prompt
    return _reviewed(annotation, _task_completions(own.task), _checks_by_key(own.task.project_id))
