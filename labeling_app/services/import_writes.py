"""The writes of a bulk import: validated records go in as a few raw `INSERT ... SELECT FROM unnest(...)` per batch.

Prompts go in with `ON CONFLICT DO NOTHING RETURNING`, so a prompt already in the project (or
earlier in the same file) is reported as a duplicate instead of being doubled. A task made from
imported labels is closed: its overlap equals its one imported label, so it never enters the
labelers' queue.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from django.db import connection
from django.utils import timezone

from labeling_app.imports.parsing import Record
from labeling_app.models import (
    Annotation,
    CheckAnswer,
    Completion,
    Demonstration,
    ImportJob,
    ImportSource,
    Project,
    Prompt,
    Rating,
    RankingTask,
    TaskCompletion,
)

MAX_DUPLICATES_LISTED = 100


@dataclass
class ImportResult:
    """What one import wrote (the counts a job's page and the command line report)."""

    lines: int = 0
    prompts_created: int = 0
    prompts_existing: int = 0
    duplicate_lines: list[list] = field(default_factory=list)  # [[line, preview], ...] the first 100
    completions_created: int = 0
    tasks_created: int = 0
    demonstrations_created: int = 0
    annotations_created: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _table(model) -> str:
    return model._meta.db_table


def _insert(sql: str, params: list) -> list[int]:
    """Run one `INSERT ... SELECT ... FROM unnest(arrays) RETURNING id`: a handful of array parameters per
    batch instead of one placeholder per value, and no model instances (the ORM's bulk_create spends
    more time building objects than PostgreSQL spends inserting them). Ids come back in array order."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _insert_prompts(project: Project, batch: list[Record], source: str, user_id: int | None) -> tuple[dict[str, int], set[str]]:
    """Insert the batch's prompts that are new; (content_hash -> prompt id for all, hashes created now)."""
    table = _table(Prompt)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (project_id, text, messages, content_hash, source, created_by_id, created_at) "
            f"SELECT %s, t, m::jsonb, h, %s, %s, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(t, m, h) "
            f"ON CONFLICT ON CONSTRAINT prompt_unique_content_per_project DO NOTHING RETURNING content_hash",
            [project.pk, source, user_id, timezone.now(), [r.text for r in batch],
             [json.dumps(r.messages) if r.messages else None for r in batch], [r.content_hash for r in batch]],
        )
        created = {row[0] for row in cursor.fetchall()}
        cursor.execute(f"SELECT content_hash, id FROM {table} WHERE project_id = %s AND content_hash = ANY(%s)",
                       [project.pk, list({r.content_hash for r in batch})])
        ids = dict(cursor.fetchall())
    return ids, created


def insert_batch(project: Project, kind: str, batch: list[Record], result: ImportResult, *, source: str,
                 user_id: int | None, import_source: ImportSource | None) -> None:
    """Insert one batch of validated records of `kind` and add what was written to `result`.

    Run it inside the import's transaction: a file is imported whole or not at all.
    """
    ids, created = _insert_prompts(project, batch, source, user_id)
    claimed: set[str] = set()
    keep: list[tuple[Record, int]] = []
    for r in batch:
        h = r.content_hash
        if h in created and h not in claimed:
            claimed.add(h)
            result.prompts_created += 1
        else:
            result.prompts_existing += 1
            if len(result.duplicate_lines) < MAX_DUPLICATES_LISTED:
                result.duplicate_lines.append([r.line, r.text[:80]])
            if kind == ImportJob.Kind.PROMPTS:
                continue  # a prompt already there is reported, not doubled
        keep.append((r, ids[h]))
    if not keep:
        return
    now = timezone.now()

    if kind == ImportJob.Kind.DEMONSTRATIONS:
        _insert(f"INSERT INTO {_table(Demonstration)} (prompt_id, text, author_id, source, created_at, updated_at) "
                f"SELECT p, t, %s, %s, %s, %s FROM unnest(%s::bigint[], %s::text[]) AS u(p, t) RETURNING id",
                [user_id, source, now, now, [pid for _, pid in keep], [r.demonstration for r, _ in keep]])
        result.demonstrations_created += len(keep)
        return
    if kind not in (ImportJob.Kind.COMPLETIONS, ImportJob.Kind.PREFERENCES):
        return

    completion_ids = _insert(
        f"INSERT INTO {_table(Completion)} (prompt_id, text, source, model_name, sampling, created_at) "
        f"SELECT p, t, %s, m, '{{}}'::jsonb, %s FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS u(p, t, m) RETURNING id",
        [Completion.Source.IMPORTED, now, [pid for r, pid in keep for _ in r.completions],
         [t for r, _ in keep for t in r.completions], [m for r, _ in keep for m in r.models]],
    )
    result.completions_created += len(completion_ids)
    is_label = kind == ImportJob.Kind.PREFERENCES
    task_ids = _insert(
        f"INSERT INTO {_table(RankingTask)} (project_id, prompt_id, overlap, submitted_count, created_at) "
        f"SELECT %s, p, %s, 0, %s FROM unnest(%s::bigint[]) AS u(p) RETURNING id",
        [project.pk, 1 if is_label else project.overlap, now, [pid for _, pid in keep]],
    )
    result.tasks_created += len(task_ids)
    per_record: list[list[int]] = []
    it = iter(completion_ids)
    for r, _ in keep:
        per_record.append([next(it) for _ in r.completions])
    _insert(
        f"INSERT INTO {_table(TaskCompletion)} (task_id, completion_id, position) "
        f"SELECT t, c, p FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) AS u(t, c, p) RETURNING id",
        [[t for t, mine in zip(task_ids, per_record) for _ in mine], [c for mine in per_record for c in mine],
         [i for mine in per_record for i in range(len(mine))]],
    )
    if not is_label:
        return

    annotation_ids = _insert(
        f"INSERT INTO {_table(Annotation)} (task_id, import_source_id, status, shown_order, draft, comment, skip_reason, "
        f"started_at, updated_at, submitted_at) "
        f"SELECT t, %s, %s, o::jsonb, '{{}}'::jsonb, '', '', %s, %s, %s FROM unnest(%s::bigint[], %s::text[]) AS u(t, o) RETURNING id",
        [import_source.pk, Annotation.Status.SUBMITTED, now, now, now, task_ids, [json.dumps(mine) for mine in per_record]],
    )
    result.annotations_created += len(annotation_ids)
    rating_rows = [(annotation_id, c, r.ranks[i], r.ratings[i] if r.ratings else None,
                    {key: values[i] for key, values in r.checks.items() if values[i] is not None} if r.checks else None)
                   for (r, _), annotation_id, mine in zip(keep, annotation_ids, per_record) for i, c in enumerate(mine)]
    rating_ids = _insert(
        f"INSERT INTO {_table(Rating)} (annotation_id, completion_id, rank, likert) "
        f"SELECT a, c, r, l FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::int[]) AS u(a, c, r, l) RETURNING id",
        [[row[0] for row in rating_rows], [row[1] for row in rating_rows], [row[2] for row in rating_rows],
         [row[3] for row in rating_rows]],
    )
    answers = [(rating_id, key, value) for rating_id, row in zip(rating_ids, rating_rows) if row[4] for key, value in row[4].items()]
    if answers:
        check_ids = dict(project.checks.values_list("key", "id"))
        _insert(
            f"INSERT INTO {_table(CheckAnswer)} (rating_id, check_question_id, value) "
            f"SELECT r, q, v FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS u(r, q, v) RETURNING id",
            [[a[0] for a in answers], [check_ids[a[1]] for a in answers], [a[2] for a in answers]],
        )
