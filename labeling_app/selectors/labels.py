"""Submitted labels as plain rows, streamed task by task with the filters exports and training share."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Iterator, Sequence

from django.db.models import Exists, F, OuterRef, Prefetch, Q
from django.utils import timezone

from labeling_app.models import Annotation, RankingTask
from labeling_app.selectors.agreement import ranking_pair_agreement

CHUNK_SIZE = 500
DEFAULT_MIN_AGREEMENT = 0.75


@dataclass
class LabelFilters:
    """Which submitted labels to take.

    labeler: a username, or "import:<source name>" for imported labels.
    full_overlap: only tasks that received all `overlap` labels.
    only_agreeing: only labels whose ranking agrees with the task's other labels on at least
      `min_agreement` of the completion pairs both order strictly (a label with no other label
      on its task has nothing to agree with and is left out).
    """

    project_ids: Sequence[int] = ()
    date_from: date | datetime | None = None
    date_to: date | datetime | None = None
    labeler: str | None = None
    full_overlap: bool = False
    only_agreeing: bool = False
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    include_imported: bool = True


@dataclass
class LabelRow:
    annotation_id: int
    task_id: int
    prompt_id: int
    prompt: str | list  # text, or chat messages
    is_chat: bool
    completion_ids: list[int]  # in the task's position order
    completions: list[str]
    ranks: list[int]
    ratings: list[int | None]
    checks: dict[str, list[bool | None]] = field(default_factory=dict)  # check key -> answer per completion
    labeler_id: int | None = None
    labeler: str = ""
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    shown_order: list[int] = field(default_factory=list)


def _as_datetime(value, end: bool = False) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return timezone.make_aware(datetime.combine(value, time.max if end else time.min))


def _annotation_filter(f: LabelFilters) -> Q:
    q = Q(status=Annotation.Status.SUBMITTED)
    if f.date_from is not None:
        q &= Q(submitted_at__gte=_as_datetime(f.date_from))
    if f.date_to is not None:
        q &= Q(submitted_at__lte=_as_datetime(f.date_to, end=True))
    if f.labeler:
        if f.labeler.startswith("import:"):
            q &= Q(import_source__name=f.labeler[len("import:"):])
        else:
            q &= Q(labeler__username=f.labeler)
    if not f.include_imported:
        q &= Q(labeler__isnull=False)
    return q


def labeler_name(annotation: Annotation) -> str:
    return annotation.labeler.username if annotation.labeler_id else f"import:{annotation.import_source.name}"


def iter_label_rows(filters: LabelFilters, *, chunk_size: int = CHUNK_SIZE) -> Iterator[LabelRow]:
    """Every submitted label that passes `filters`, task by task, never holding more than a chunk."""
    wanted = _annotation_filter(filters)
    tasks = RankingTask.objects.filter(project_id__in=list(filters.project_ids)).filter(
        Exists(Annotation.objects.filter(wanted, task=OuterRef("pk")))
    )
    if filters.full_overlap:
        tasks = tasks.filter(submitted_count__gte=F("overlap"))
    # only_agreeing compares with every submitted label of the task, not just the selected ones.
    annotation_qs = Annotation.objects.filter(Q(status=Annotation.Status.SUBMITTED) if filters.only_agreeing else wanted)
    tasks = tasks.select_related("prompt").order_by("id").prefetch_related(
        "task_completions__completion",
        Prefetch("annotations", queryset=annotation_qs.select_related("labeler", "import_source").order_by("id")
                 .prefetch_related("ratings__check_answers__check_question"), to_attr="submitted"),
    )
    for task in tasks.iterator(chunk_size=chunk_size):
        completions = [tc.completion for tc in task.task_completions.all()]
        ids, texts = [c.pk for c in completions], [c.text for c in completions]
        rows = [_row(task, ids, texts, a) for a in task.submitted]
        rows = [r for r in rows if None not in r.ranks]  # a label that ranks only some completions is unusable
        if filters.only_agreeing:
            rows = [r for r in rows if _matches(r, task, filters) and _agrees(r, rows, filters.min_agreement)]
        yield from rows


def _matches(row: LabelRow, task, filters: LabelFilters) -> bool:
    """The annotation-level filters, applied in Python where all of a task's labels had to be loaded."""
    for a in task.submitted:
        if a.pk == row.annotation_id:
            if filters.date_from is not None and a.submitted_at < _as_datetime(filters.date_from):
                return False
            if filters.date_to is not None and a.submitted_at > _as_datetime(filters.date_to, end=True):
                return False
            if filters.labeler and labeler_name(a) != filters.labeler:
                return False
            if not filters.include_imported and a.labeler_id is None:
                return False
            return True
    return False


def _agrees(row: LabelRow, rows: list[LabelRow], min_agreement: float) -> bool:
    agreeing = comparable = 0
    for other in rows:
        if other.annotation_id != row.annotation_id:
            a, c = ranking_pair_agreement(row.ranks, other.ranks)
            agreeing, comparable = agreeing + a, comparable + c
    return comparable > 0 and agreeing / comparable >= min_agreement


def _row(task: RankingTask, ids: list[int], texts: list[str], a: Annotation) -> LabelRow:
    by_completion = {r.completion_id: r for r in a.ratings.all()}
    checks: dict[str, list] = {}
    for pos, cid in enumerate(ids):
        rating = by_completion.get(cid)
        for answer in (rating.check_answers.all() if rating else ()):
            checks.setdefault(answer.check_question.key, [None] * len(ids))[pos] = answer.value
    prompt = task.prompt
    return LabelRow(
        annotation_id=a.pk, task_id=task.pk, prompt_id=prompt.pk,
        prompt=prompt.messages if prompt.messages else prompt.text, is_chat=bool(prompt.messages),
        completion_ids=ids, completions=texts,
        ranks=[by_completion[c].rank if c in by_completion else None for c in ids],
        ratings=[by_completion[c].likert if c in by_completion else None for c in ids],
        checks=checks, labeler_id=a.labeler_id, labeler=labeler_name(a),
        submitted_at=a.submitted_at, started_at=a.started_at, shown_order=list(a.shown_order or []),
    )
