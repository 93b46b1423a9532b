"""What an export would hold, before it is downloaded: its row count (one SQL count) and its first rows.

`export_count` counts the records of a format in PostgreSQL, with the same selection `iter_label_rows`
makes in Python (submitted labels passing the filters, full overlap, only complete rankings, agreement
with the task's other complete labels) and the same per-format rule (pairs without ties, completions
with a serious check answered, demonstrations). It reads ids and ranks only, never a text.
`export_preview` adds the first few records, read through the export's own generator, which stops
after them (a few tasks' worth of queries, not the whole export).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from django.db import connection
from django.db.models import BooleanField, F
from django.db.models.expressions import RawSQL

from labeling_app.models import Annotation, CheckAnswer, CheckQuestion, Rating, TaskCompletion
from labeling_app.selectors.exports import (
    check_export_format,
    selected_demonstrations,
    export_records,
    export_schema,
    features_dict,
    resolve_chat,
)
from labeling_app.selectors.labels import LabelFilters, annotation_filter, usable_labels_q

PREVIEW_ROWS = 5


# Labels that rank every completion of their task (`iter_label_rows` drops the others: a label that ranks only
# some completions is unusable). "OFFSET 0" keeps the check a probe of two small index ranges per label; without
# it PostgreSQL turns it into an anti-join that hashes every task's completions (1M rows: 1.6 s of a 1.6 s count
# at pages_at_scale's size, 0.09 s with the probe).
_COMPLETE = RawSQL(
    f"""NOT EXISTS (
    SELECT 1 FROM {TaskCompletion._meta.db_table} tc
    WHERE tc.task_id = {Annotation._meta.db_table}.task_id
      AND NOT EXISTS (SELECT 1 FROM {Rating._meta.db_table} r
                      WHERE r.annotation_id = {Annotation._meta.db_table}.id AND r.completion_id = tc.completion_id)
    OFFSET 0)""",
    [],
    output_field=BooleanField(),
)


def _selected_sql(filters: LabelFilters) -> tuple[str, list]:
    """SQL for the (id, task_id) of the labels an export of `filters` writes, with its parameters."""
    labels = Annotation.objects.filter(annotation_filter(filters), task__project_id__in=list(filters.project_ids))
    if filters.full_overlap:
        labels = labels.filter(task__submitted_count__gte=F("task__overlap"))
    labels = labels.filter(_COMPLETE)
    sql, params = labels.order_by().values_list("id", "task_id").query.sql_with_params()
    if not filters.only_agreeing:
        return sql, list(params)
    # A label agrees when, over every other complete usable (submitted, not rejected) label of its task and every completion pair
    # both order strictly, the share ordered the same way reaches min_agreement (see labels._agrees).
    others, others_params = (
        Annotation.objects.filter(usable_labels_q())
        .filter(_COMPLETE)
        .order_by()
        .values_list("id", "task_id")
        .query.sql_with_params()
    )
    rating, task_completion = Rating._meta.db_table, TaskCompletion._meta.db_table
    comparable = "ra_i.rank <> ra_j.rank AND rb_i.rank <> rb_j.rank"
    agreeing = f"{comparable} AND (ra_i.rank > ra_j.rank) = (rb_i.rank > rb_j.rank)"
    sql = f"""
        SELECT a.id, a.task_id FROM ({sql}) a
        JOIN ({others}) b ON b.task_id = a.task_id AND b.id <> a.id
        JOIN {task_completion} c_i ON c_i.task_id = a.task_id
        JOIN {task_completion} c_j ON c_j.task_id = a.task_id AND c_i.position < c_j.position
        JOIN {rating} ra_i ON ra_i.annotation_id = a.id AND ra_i.completion_id = c_i.completion_id
        JOIN {rating} ra_j ON ra_j.annotation_id = a.id AND ra_j.completion_id = c_j.completion_id
        JOIN {rating} rb_i ON rb_i.annotation_id = b.id AND rb_i.completion_id = c_i.completion_id
        JOIN {rating} rb_j ON rb_j.annotation_id = b.id AND rb_j.completion_id = c_j.completion_id
        GROUP BY a.id, a.task_id
        HAVING count(*) FILTER (WHERE {comparable}) > 0
           AND (count(*) FILTER (WHERE {agreeing}))::float8 / count(*) FILTER (WHERE {comparable}) >= %s"""
    return sql, [*params, *others_params, float(filters.min_agreement)]


def export_count(fmt: str, filters: LabelFilters) -> int:
    """How many records `export_records(fmt, filters)` yields, counted in one SQL query."""
    check_export_format(fmt)
    if fmt == "sft":
        return selected_demonstrations(filters).count()
    selected, params = _selected_sql(filters)
    rating, task_completion = Rating._meta.db_table, TaskCompletion._meta.db_table
    # The selection is computed once, by itself (MATERIALIZED): inlined, the planner misjudges it as one row and
    # runs its per-label checks once per compared pair instead (0.7 s instead of 0.1 s at pages_at_scale's size).
    selected = f"WITH s AS MATERIALIZED ({selected}) "
    if fmt == "grouped":
        sql = f"{selected} SELECT count(*) FROM s"
    elif fmt == "pairwise":  # ordered pairs of the label's completions, ties left out
        sql = f"""
            {selected} SELECT count(*) FROM s
            JOIN {task_completion} c_i ON c_i.task_id = s.task_id
            JOIN {task_completion} c_j ON c_j.task_id = s.task_id
            JOIN {rating} r_i ON r_i.annotation_id = s.id AND r_i.completion_id = c_i.completion_id
            JOIN {rating} r_j ON r_j.annotation_id = s.id AND r_j.completion_id = c_j.completion_id
            WHERE r_i.rank < r_j.rank"""
    else:  # kto: completions with at least one serious check answered
        sql = f"""
            {selected} SELECT count(*) FROM s
            JOIN {task_completion} c ON c.task_id = s.task_id
            WHERE EXISTS (SELECT 1 FROM {rating} r
                          JOIN {CheckAnswer._meta.db_table} ca ON ca.rating_id = r.id
                          JOIN {CheckQuestion._meta.db_table} q ON q.id = ca.check_question_id
                          WHERE r.annotation_id = s.id AND r.completion_id = c.completion_id AND q.serious)"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


@dataclass
class ExportPreview:
    count: int
    columns: list[str]
    rows: list[dict]  # the first records, whole
    chat: bool  # written as chat (the selection holds a chat prompt, or chat was asked for)
    features: dict  # datasets.Features of the JSONL file (`features_dict`)


def export_preview(fmt: str, filters: LabelFilters, *, limit: int = PREVIEW_ROWS) -> ExportPreview:
    """The row count and the first `limit` records of an export, without reading the rest."""
    filters = resolve_chat(fmt, filters)
    count = export_count(fmt, filters)
    rows = list(itertools.islice(export_records(fmt, filters, chunk_size=max(limit, 1)), limit)) if count else []
    schema = export_schema(fmt, filters)
    return ExportPreview(
        count=count, columns=schema.names, rows=rows, chat=filters.all_chat, features=features_dict(schema)
    )


def preview_text(value, max_chars: int = 120) -> str:
    """One cell of the page's preview table: text as it is, chat as "role: content" turns, cut at `max_chars`."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        value = " | ".join(f"{m['role']}: {m.get('content', '')}" for m in value)
    elif isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    text = "" if value is None else str(value)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
