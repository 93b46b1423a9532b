"""Submitted labels as plain rows, streamed task by task with the filters exports and training share; and the
two readings they share with every other reader of labeling data: a date range, and a labeler's name."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Iterable, Iterator, Sequence

from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, CheckAnswer, RankingTask, Rating, ReviewState, TaskCompletion
from labeling_app.selectors.agreement import ranking_pair_agreement

CHUNK_SIZE = 1000
DEFAULT_MIN_AGREEMENT = 0.75
IMPORT_PREFIX = "import:"
DAY_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")

DayBound = str | date | datetime | None


def parse_day(value: DayBound, *, field: str) -> date | datetime | None:
    """The one reading of a day bound: text "YYYY-MM-DD" (what a date input, a config and the command line
    give), a date or datetime as it is, empty text or None for no bound. ServiceError naming `field` otherwise."""
    if value is None or isinstance(value, date):  # a datetime is a date too
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        if not DAY_FORMAT.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ServiceError(
            f"must be a day as YYYY-MM-DD (e.g. 2026-01-31), or empty; got {text!r}", field=field
        ) from None


def _instant(bound: date | datetime, *, end: bool = False) -> datetime:
    """A datetime bound as it is; a day as its first (or, for `end`, its last) instant in the current time zone."""
    if isinstance(bound, datetime):
        return bound
    return timezone.make_aware(datetime.combine(bound, time.max if end else time.min))


@dataclass(frozen=True)
class DateRange:
    """Inclusive bounds a timestamp column must fall in; None leaves that side open.

    A day bound covers the whole day in the current time zone (to 2026-01-31 includes 23:59 that day); a
    datetime bound is exact. Filters compare the column itself (`>=` / `<=`), so an index on it is used.
    """

    first: date | datetime | None = None
    last: date | datetime | None = None

    @classmethod
    def parse(cls, date_from: DayBound = None, date_to: DayBound = None) -> "DateRange":
        """Read a from/to pair with `parse_day`; a range that ends before it starts is a ServiceError on date_to."""
        dates = cls(parse_day(date_from, field="date_from"), parse_day(date_to, field="date_to"))
        if (
            dates.first is not None
            and dates.last is not None
            and _instant(dates.first) > _instant(dates.last, end=True)
        ):
            raise ServiceError(f"must not be before date_from ({date_from})", field="date_to")
        return dates

    def q(self, column: str) -> Q:
        """The filter on a timestamp `column` (e.g. "submitted_at", "created_at")."""
        q = Q()
        if self.first is not None:
            q &= Q(**{f"{column}__gte": _instant(self.first)})
        if self.last is not None:
            q &= Q(**{f"{column}__lte": _instant(self.last, end=True)})
        return q


def labeler_name(*, username: str | None, import_source: str | None) -> str:
    """How the author of a label is named everywhere (exports, filters, reward training): the labeler's
    username, or "import:<source name>" for imported labels, which belong to a source, not a person."""
    return username if username else f"{IMPORT_PREFIX}{import_source}"


def labeler_q(name: str) -> Q:
    """Annotations whose author has this `labeler_name`."""
    if name.startswith(IMPORT_PREFIX):
        return Q(import_source__name=name[len(IMPORT_PREFIX) :])
    return Q(labeler__username=name)


@dataclass
class LabelFilters:
    """Which submitted labels to take.

    date_from / date_to: inclusive, read by `DateRange.parse` (a "YYYY-MM-DD" text, a date or a datetime).
    labeler: a `labeler_name` (a username, or "import:<source name>" for imported labels).
    annotation_ids: only these labels (e.g. the ones a training run used, to read them again).
    full_overlap: only tasks that received all `overlap` labels.
    only_agreeing: only labels whose ranking agrees with the task's other labels on at least
      `min_agreement` of the completion pairs both order strictly (a label with no other label
      on its task has nothing to agree with and is left out).
    """

    project_ids: Sequence[int] = ()
    date_from: DayBound = None
    date_to: DayBound = None
    labeler: str | None = None
    annotation_ids: Sequence[int] | None = None
    full_overlap: bool = False
    only_agreeing: bool = False
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    include_imported: bool = True
    # Output shape, not a filter: write plain prompts as one user turn too, so that a project mixing
    # plain and chat prompts exports one column type (datasets / Arrow need that).
    all_chat: bool = False


def prompt_value(text: str, messages: list | None, all_chat: bool = False) -> str | list:
    if messages:
        return messages
    return [{"role": "user", "content": text}] if all_chat else text


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
    project_id: int | None = None  # whose checks (and their polarity) the `checks` keys name
    task_extra_labels: int = 0  # labels the task got beyond the project's overlap because its labels disagreed


def usable_labels_q() -> Q:
    """Labels that may be trained on and exported: submitted, and not rejected by a researcher's review.

    Every reader that builds training data or an export starts from this (here, `export_preview` and
    `training_data.has_rankings`); agreement statistics do not, they describe all of a labeler's work.
    """
    return Q(status=Annotation.Status.SUBMITTED) & ~Q(review_state=ReviewState.REJECTED)


def _filter_q(f: LabelFilters) -> Q:
    q = DateRange.parse(f.date_from, f.date_to).q("submitted_at")
    if f.labeler:
        q &= labeler_q(f.labeler)
    if f.annotation_ids is not None:
        q &= Q(pk__in=list(f.annotation_ids))
    if not f.include_imported:
        q &= Q(labeler__isnull=False)
    return q


def annotation_filter(f: LabelFilters) -> Q:
    """The labels (Annotation rows) the filters want, before the task-level filters (overlap, agreement).
    Rejected labels are never wanted (`usable_labels_q`)."""
    return usable_labels_q() & _filter_q(f)


def rejected_left_out(f: LabelFilters) -> int:
    """How many submitted labels of the filters' projects that pass the label filters are rejected, so left out."""
    return Annotation.objects.filter(
        _filter_q(f),
        status=Annotation.Status.SUBMITTED,
        review_state=ReviewState.REJECTED,
        task__project_id__in=list(f.project_ids),
    ).count()


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_label_rows(filters: LabelFilters, *, chunk_size: int = CHUNK_SIZE) -> Iterator[LabelRow]:
    """Every submitted label that passes `filters`, task by task, never holding more than a chunk of tasks.

    Tasks stream from a server-side cursor (`.iterator(chunk_size=...)`); each chunk's completions,
    labels, ratings and check answers are read with four flat `values_list` queries (no model
    instances: an export of 100,000 labels spends its time in PostgreSQL and json, not the ORM).
    """
    wanted = annotation_filter(filters)
    tasks = RankingTask.objects.filter(project_id__in=list(filters.project_ids)).filter(
        Exists(Annotation.objects.filter(wanted, task=OuterRef("pk")))
    )
    if filters.full_overlap:
        tasks = tasks.filter(submitted_count__gte=F("overlap"))
    task_rows = tasks.order_by("id").values_list(
        "id", "prompt_id", "prompt__text", "prompt__messages", "project_id", "extra_labels"
    )
    for chunk in _chunks(task_rows.iterator(chunk_size=chunk_size), chunk_size):
        yield from _rows_of_chunk(chunk, filters, wanted)


def _rows_of_chunk(chunk: list[tuple], filters: LabelFilters, wanted: Q) -> Iterator[LabelRow]:
    task_ids = [t[0] for t in chunk]
    completions: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for task_id, completion_id, text in (
        TaskCompletion.objects.filter(task_id__in=task_ids)
        .order_by("task_id", "position")
        .values_list("task_id", "completion_id", "completion__text")
    ):
        completions[task_id].append((completion_id, text))
    # only_agreeing compares a label with every usable label of its task, not just the selected ones.
    loaded = usable_labels_q() if filters.only_agreeing else wanted
    annotations = list(
        Annotation.objects.filter(loaded, task_id__in=task_ids)
        .order_by("id")
        .values_list(
            "id",
            "task_id",
            "labeler_id",
            "labeler__username",
            "import_source__name",
            "submitted_at",
            "started_at",
            "shown_order",
        )
    )
    selected = (
        set(Annotation.objects.filter(wanted, task_id__in=task_ids).values_list("id", flat=True))
        if filters.only_agreeing
        else None
    )
    annotation_ids = [a[0] for a in annotations]
    ratings: dict[int, dict[int, tuple[int, int | None]]] = defaultdict(dict)
    for annotation_id, completion_id, rank, likert in Rating.objects.filter(
        annotation_id__in=annotation_ids
    ).values_list("annotation_id", "completion_id", "rank", "likert"):
        ratings[annotation_id][completion_id] = (rank, likert)
    answers: dict[int, list[tuple[int, str, bool]]] = defaultdict(list)
    for annotation_id, completion_id, key, value in (
        CheckAnswer.objects.filter(rating__annotation_id__in=annotation_ids)
        .order_by("check_question__position", "check_question_id")
        .values_list("rating__annotation_id", "rating__completion_id", "check_question__key", "value")
    ):
        answers[annotation_id].append((completion_id, key, value))
    by_task: dict[int, list[tuple]] = defaultdict(list)
    for a in annotations:
        by_task[a[1]].append(a)

    for task_id, prompt_id, text, messages, project_id, extra_labels in chunk:
        ids = [c for c, _ in completions[task_id]]
        texts = [t for _, t in completions[task_id]]
        position = {c: i for i, c in enumerate(ids)}
        rows = []
        for annotation_id, _, labeler_id, username, source, submitted_at, started_at, shown in by_task[task_id]:
            mine = ratings[annotation_id]
            checks: dict[str, list] = {}
            for completion_id, key, value in answers[annotation_id]:
                if completion_id in position:
                    checks.setdefault(key, [None] * len(ids))[position[completion_id]] = value
            rows.append(
                LabelRow(
                    annotation_id=annotation_id,
                    task_id=task_id,
                    prompt_id=prompt_id,
                    prompt=prompt_value(text, messages, filters.all_chat),
                    is_chat=bool(messages) or filters.all_chat,
                    completion_ids=ids,
                    completions=texts,
                    ranks=[mine[c][0] if c in mine else None for c in ids],
                    ratings=[mine[c][1] if c in mine else None for c in ids],
                    checks=checks,
                    labeler_id=labeler_id,
                    labeler=labeler_name(username=username, import_source=source),
                    submitted_at=submitted_at,
                    started_at=started_at,
                    shown_order=list(shown or []),
                    project_id=project_id,
                    task_extra_labels=extra_labels,
                )
            )
        rows = [r for r in rows if None not in r.ranks]  # a label that ranks only some completions is unusable
        if filters.only_agreeing:
            rows = [r for r in rows if r.annotation_id in selected and _agrees(r, rows, filters.min_agreement)]
        yield from rows


def _agrees(row: LabelRow, rows: list[LabelRow], min_agreement: float) -> bool:
    agreeing = comparable = 0
    for other in rows:
        if other.annotation_id != row.annotation_id:
            a, c = ranking_pair_agreement(row.ranks, other.ranks)
            agreeing, comparable = agreeing + a, comparable + c
    return comparable > 0 and agreeing / comparable >= min_agreement
