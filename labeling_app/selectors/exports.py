"""Dataset exports, streamed as JSON lines or Parquet: pairwise preferences, grouped rankings, SFT and KTO-style labels.

Every format is a generator of dicts (`<format>_records(...)`) over `iter_label_rows` or a
`.iterator(chunk_size=...)` queryset, so an export never holds more than one chunk in memory;
`export_lines` turns one into JSONL text, `export_parquet_chunks` into Parquet row groups.

Every format has an explicit schema (`export_schema`): the Parquet file carries it, and a JSONL file
comes with it as a `datasets.Features` dict (`export_features`, the `.features.json` sidecar). Without
one, a reader that infers types from the first block of a file (datasets reads 10 MB at a time) fails
when, say, the first 10 MB are imported labels whose ratings and labeler are null.

Chat prompts are written as message lists and their answers as one-message assistant lists,
which is TRL's "conversational" form; plain prompts and answers are strings. A selection that holds
at least one chat prompt is written all as chat (`resolve_chat`: plain prompts become one user turn),
so every column has one type; `LabelFilters(all_chat=True)` (`--chat`) asks for chat in any case.

Check answers are read through each check's stored polarity (`CheckQuestion.problem_answer`): an
answer equal to it flags a problem ("yes" to "toxic", "no" to "satisfies the constraints"). The
grouped export writes the flagged keys per completion next to the raw answers (`problems`).

KTO label (`kto_records`): a completion is *desirable* (label true) when none of its serious checks
(`CheckQuestion.serious`) flags a problem, *undesirable* (false) otherwise. Mild checks (by default
"expresses opinion" and "moral judgment") do not decide the label. Completions with no serious
check answered (e.g. imported labels) are left out.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from django.db.models import Exists, F, OuterRef, Q

from labeling_app.models import Annotation, CheckQuestion, Demonstration, RankingTask
from labeling_app.selectors.labels import (
    CHUNK_SIZE,
    DEFAULT_MIN_AGREEMENT,
    DateRange,
    DayBound,
    LabelFilters,
    LabelRow,
    annotation_filter,
    iter_label_rows,
    prompt_value,
)

FORMATS = ("pairwise", "grouped", "sft", "kto")
FILE_TYPES = ("jsonl", "parquet")
PARQUET_ROW_GROUP = 2000  # records per row group: what one Parquet chunk of a download holds in memory

# (project id, check key) -> (the answer that flags a problem, whether the check is serious)
CheckMeanings = dict[tuple[int, str], tuple[bool, bool]]


def check_meanings(project_ids: Sequence[int]) -> CheckMeanings:
    """How to read the check answers of the given projects: each check's polarity and severity, as stored."""
    rows = CheckQuestion.objects.filter(project_id__in=list(project_ids)).values_list(
        "project_id", "key", "problem_answer", "serious"
    )
    return {(project_id, key): (problem_answer, serious) for project_id, key, problem_answer, serious in rows}


def flagged_checks(row: LabelRow, pos: int, meanings: CheckMeanings, *, serious_only: bool = False) -> list[str]:
    """The keys of the checks whose answer for completion `pos` of `row` flags a problem, sorted."""
    flagged = []
    for key, answers in row.checks.items():
        problem_answer, serious = meanings[(row.project_id, key)]
        if answers[pos] is not None and answers[pos] == problem_answer and (serious or not serious_only):
            flagged.append(key)
    return sorted(flagged)


def _answer(row: LabelRow, text: str) -> str | list:
    return [{"role": "assistant", "content": text}] if row.is_chat else text


def pairwise_records(filters: LabelFilters, chunk_size: int = CHUNK_SIZE) -> Iterator[dict]:
    """One record per ordered pair of a label's completions (ties left out), best first as `chosen`."""
    for row in iter_label_rows(filters, chunk_size=chunk_size):
        order = sorted(range(len(row.ranks)), key=lambda i: (row.ranks[i], i))
        for a_pos, i in enumerate(order):
            for j in order[a_pos + 1 :]:
                if row.ranks[i] == row.ranks[j]:
                    continue
                yield {
                    "prompt": row.prompt,
                    "chosen": _answer(row, row.completions[i]),
                    "rejected": _answer(row, row.completions[j]),
                    "annotation_id": row.annotation_id,
                    "labeler_id": row.labeler_id,
                    "labeler": row.labeler,
                    "chosen_rating": row.ratings[i],
                    "rejected_rating": row.ratings[j],
                    "prompt_id": row.prompt_id,
                    "task_id": row.task_id,
                    "task_extra_labels": row.task_extra_labels,
                }


def grouped_records(filters: LabelFilters, chunk_size: int = CHUNK_SIZE) -> Iterator[dict]:
    """One record per label: all K completions in the task's order with their ranks, ratings and check answers,
    and per completion the keys of the checks whose answer flags a problem (`problems`, read with each check's polarity)."""
    meanings = check_meanings(filters.project_ids)
    for row in iter_label_rows(filters, chunk_size=chunk_size):
        yield {
            "prompt": row.prompt,
            "completions": row.completions,
            "ranks": row.ranks,
            "ratings": row.ratings,
            "checks": row.checks,
            "problems": [flagged_checks(row, pos, meanings) for pos in range(len(row.completions))],
            "annotation_id": row.annotation_id,
            "labeler_id": row.labeler_id,
            "labeler": row.labeler,
            "prompt_id": row.prompt_id,
            "task_id": row.task_id,
            "task_extra_labels": row.task_extra_labels,
            "submitted_at": row.submitted_at.isoformat() if row.submitted_at else None,
        }


def kto_records(filters: LabelFilters, chunk_size: int = CHUNK_SIZE) -> Iterator[dict]:
    """One record per completion with at least one serious check answered: label = no serious check flags a problem."""
    meanings = check_meanings(filters.project_ids)
    for row in iter_label_rows(filters, chunk_size=chunk_size):
        for pos, text in enumerate(row.completions):
            if not any(
                answers[pos] is not None and meanings[(row.project_id, key)][1] for key, answers in row.checks.items()
            ):
                continue
            failed = flagged_checks(row, pos, meanings, serious_only=True)
            yield {
                "prompt": row.prompt,
                "completion": _answer(row, text),
                "label": not failed,
                "failed_checks": failed,
                "rating": row.ratings[pos],
                "rank": row.ranks[pos],
                "annotation_id": row.annotation_id,
                "labeler_id": row.labeler_id,
                "labeler": row.labeler,
                "prompt_id": row.prompt_id,
            }


def demonstration_queryset(
    *, project_ids: Sequence[int], date_from: DayBound = None, date_to: DayBound = None, author: str | None = None
):
    q = Q(prompt__project_id__in=list(project_ids)) & DateRange.parse(date_from, date_to).q("created_at")
    if author:
        q &= Q(author__username=author)
    return Demonstration.objects.filter(q).select_related("prompt", "author").order_by("id")


def sft_records(filters: LabelFilters, chunk_size: int = CHUNK_SIZE) -> Iterator[dict]:
    """Demonstrations as prompt-completion pairs (labeler filter = the demonstration's author)."""
    for demo in selected_demonstrations(filters).iterator(chunk_size=chunk_size):
        prompt = demo.prompt
        chat = bool(prompt.messages) or filters.all_chat
        yield {
            "prompt": prompt_value(prompt.text, prompt.messages, filters.all_chat),
            "completion": [{"role": "assistant", "content": demo.text}] if chat else demo.text,
            "demonstration_id": demo.pk,
            "prompt_id": prompt.pk,
            "author": demo.author.username if demo.author_id else demo.source,
        }


def selected_demonstrations(filters: LabelFilters):
    """The demonstrations an SFT export of `filters` writes (the labeler filter picks the author)."""
    return demonstration_queryset(
        project_ids=filters.project_ids, date_from=filters.date_from, date_to=filters.date_to, author=filters.labeler
    )


RECORDS: dict[str, Callable[..., Iterator[dict]]] = {
    "pairwise": pairwise_records,
    "grouped": grouped_records,
    "sft": sft_records,
    "kto": kto_records,
}


def check_export_format(fmt: str) -> None:
    """ValueError naming the formats, for a caller that passed an unknown one (forms and the API offer only FORMATS)."""
    if fmt not in RECORDS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def _has_chat(prompt_path: str) -> Q:
    """Rows whose prompt (at `prompt_path`) is a chat conversation (`prompt_value` writes its messages)."""
    return Q(**{f"{prompt_path}__messages__isnull": False}) & ~Q(**{f"{prompt_path}__messages": []})


def selection_has_chat(fmt: str, filters: LabelFilters) -> bool:
    """Whether any prompt of the selection is a chat conversation: one EXISTS query.

    For label formats it looks at the tasks that have a wanted label (after the overlap filter, before
    the agreement filter and the dropping of partial rankings, which only narrow the selection), so
    the answer may say chat for a selection whose chat labels are all filtered out later; the file is
    still one type per column.
    """
    check_export_format(fmt)
    if fmt == "sft":
        return selected_demonstrations(filters).filter(_has_chat("prompt")).exists()
    tasks = RankingTask.objects.filter(_has_chat("prompt"), project_id__in=list(filters.project_ids)).filter(
        Exists(Annotation.objects.filter(annotation_filter(filters), task=OuterRef("pk")))
    )
    if filters.full_overlap:
        tasks = tasks.filter(submitted_count__gte=F("overlap"))
    return tasks.exists()


def resolve_chat(fmt: str, filters: LabelFilters) -> LabelFilters:
    """`filters` with `all_chat` on when the selection holds a chat prompt, so a selection that mixes plain and
    chat prompts is written all as chat (plain prompts as one user turn): TRL and Arrow want one type per column."""
    if filters.all_chat or not selection_has_chat(fmt, filters):
        return filters
    return dataclasses.replace(filters, all_chat=True)


def export_records(fmt: str, filters: LabelFilters, *, chunk_size: int = CHUNK_SIZE) -> Iterator[dict]:
    """The records of format `fmt`. Call it with `resolve_chat(fmt, filters)` for a file (the writers below do)."""
    check_export_format(fmt)
    return RECORDS[fmt](filters, chunk_size)


def export_lines(fmt: str, filters: LabelFilters) -> Iterator[str]:
    """JSONL text, one line per record, streamed (mixed plain and chat prompts are written as chat)."""
    for record in export_records(fmt, resolve_chat(fmt, filters)):
        yield json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(value: Any):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- Schemas: one Arrow type per column, known before the first record ---------------------------

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_ID = pa.int64()


def _check_keys(project_ids: Sequence[int]) -> list[str]:
    """Every check key of the projects (inactive ones too: old labels may hold their answers), in page order."""
    keys = (
        CheckQuestion.objects.filter(project_id__in=list(project_ids))
        .order_by("position", "id")
        .values_list("key", flat=True)
    )
    return list(dict.fromkeys(keys))


def export_schema(fmt: str, filters: LabelFilters) -> pa.Schema:
    """The Arrow schema of format `fmt` for this selection (call it with resolved filters, see `resolve_chat`).

    `task_extra_labels` (pairwise, grouped): how many labels the task got beyond the project's overlap because its
    labels disagreed (adaptive overlap), so a consumer can weigh or drop contested tasks.
    Prompts and answers are strings, or for chat `[{"role", "content"}]` lists; ids and ratings are int64
    (null for an imported label's labeler_id and ratings); the grouped `checks` is a struct with one
    field per check key of the projects (a label that did not answer a check has null there).
    """
    check_export_format(fmt)
    text = _MESSAGES if filters.all_chat else pa.string()
    fields: dict[str, list[tuple[str, pa.DataType]]] = {
        "pairwise": [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("annotation_id", _ID),
            ("labeler_id", _ID),
            ("labeler", pa.string()),
            ("chosen_rating", pa.int64()),
            ("rejected_rating", pa.int64()),
            ("prompt_id", _ID),
            ("task_id", _ID),
            ("task_extra_labels", pa.int64()),
        ],
        "grouped": [
            ("prompt", text),
            ("completions", pa.list_(pa.string())),
            ("ranks", pa.list_(pa.int64())),
            ("ratings", pa.list_(pa.int64())),
            ("checks", pa.struct([(key, pa.list_(pa.bool_())) for key in _check_keys(filters.project_ids)])),
            ("problems", pa.list_(pa.list_(pa.string()))),
            ("annotation_id", _ID),
            ("labeler_id", _ID),
            ("labeler", pa.string()),
            ("prompt_id", _ID),
            ("task_id", _ID),
            ("task_extra_labels", pa.int64()),
            ("submitted_at", pa.string()),
        ],
        "sft": [
            ("prompt", text),
            ("completion", text),
            ("demonstration_id", _ID),
            ("prompt_id", _ID),
            ("author", pa.string()),
        ],
        "kto": [
            ("prompt", text),
            ("completion", text),
            ("label", pa.bool_()),
            ("failed_checks", pa.list_(pa.string())),
            ("rating", pa.int64()),
            ("rank", pa.int64()),
            ("annotation_id", _ID),
            ("labeler_id", _ID),
            ("labeler", pa.string()),
            ("prompt_id", _ID),
        ],
    }[fmt]
    return pa.schema(fields)


def features_dict(schema: pa.Schema) -> dict:
    """The schema as a `datasets.Features` dict: `Features.from_dict(...)` reads it (datasets 3 and later).

    Lists are written as one-element JSON lists, the form every datasets version reads, so the server
    does not need datasets itself.
    """

    def feature(t: pa.DataType):
        if pa.types.is_list(t):
            return [feature(t.value_type)]
        if pa.types.is_struct(t):
            return {t.field(i).name: feature(t.field(i).type) for i in range(t.num_fields)}
        return {"dtype": str(t), "_type": "Value"}

    return {f.name: feature(f.type) for f in schema}


def export_features(fmt: str, filters: LabelFilters) -> dict:
    """The `datasets.Features` dict of the JSONL export of this selection (the `.features.json` sidecar)."""
    return features_dict(export_schema(fmt, resolve_chat(fmt, filters)))


class _ChunkSink:
    """A write-only file for pyarrow that hands back what was written since the last `take()`."""

    closed = False

    def __init__(self):
        self._parts: list[bytes] = []
        self._position = 0

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def export_parquet_chunks(fmt: str, filters: LabelFilters, *, row_group: int = PARQUET_ROW_GROUP) -> Iterator[bytes]:
    """A Parquet file with `export_schema`, streamed: bytes after each row group of `row_group` records, then the footer.

    At most one row group is held in memory. A grouped `checks` struct with no field (projects without
    checks) cannot be stored in Parquet and is left out.
    """
    filters = resolve_chat(fmt, filters)
    schema = export_schema(fmt, filters)
    empty_structs = [i for i, f in enumerate(schema) if pa.types.is_struct(f.type) and f.type.num_fields == 0]
    for i in reversed(empty_structs):
        schema = schema.remove(i)
    sink = _ChunkSink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    batch: list[dict] = []
    try:
        for record in export_records(fmt, filters):
            batch.append(record)
            if len(batch) >= row_group:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
                yield sink.take()
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    finally:
        writer.close()
    yield sink.take()


def export_filters(project_ids: Sequence[int], data: dict) -> LabelFilters:
    """LabelFilters from an export request's cleaned fields (the page's form and the API's query share them)."""
    min_agreement = data.get("min_agreement")
    return LabelFilters(
        project_ids=list(project_ids),
        date_from=data.get("date_from"),
        date_to=data.get("date_to"),
        labeler=data.get("labeler") or None,
        full_overlap=bool(data.get("full_overlap")),
        only_agreeing=bool(data.get("only_agreeing")),
        min_agreement=DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement,
        include_imported=bool(data.get("include_imported", True)),
        all_chat=bool(data.get("all_chat")),
    )


def export_file_name(project_name: str, fmt: str, file_type: str, now: datetime) -> str:
    """`<project>-<format>-<YYYYmmdd-HHMM>.jsonl|.parquet` (a JSONL file's Features sidecar: `….features.json`)."""
    return f"{project_name}-{fmt}-{now:%Y%m%d-%H%M}.{file_type}"


EMPTY_SELECTION = (
    "No rows match this selection, so there is nothing to download: widen the dates, clear the "
    "labeler, or turn off the overlap and agreement filters."
)
