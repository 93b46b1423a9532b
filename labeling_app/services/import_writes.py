"""The writes of a bulk import: validated records go in as a few raw `INSERT ... SELECT FROM unnest(...)` per batch.

Every row an import writes has an identity (labeling_app.imports.identity) backed by a unique
index, and goes in with `ON CONFLICT DO NOTHING`, so importing the same data again reuses or skips
what is already there instead of doubling it, also when two imports of one file race:

- a prompt already in the project is reused (a prompts file reports it as a duplicate);
- a completion with the same text and model name under the same prompt is reused;
- a task over the same set of completions, for the same purpose, is not made twice;
- the same label (ranks, ratings, checks) from the same import source on the same task is skipped;
- a demonstration with the same text for the same prompt is skipped.

A task made from imported labels is closed: its overlap equals the number of imported labels it
holds, so it never enters the labelers' queue. Imported labels never go on an open task.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields

from django.db import connection
from django.utils import timezone

from labeling_app.imports.identity import completion_key, demonstration_key, label_key, task_key
from labeling_app.imports.parsing import LineError, Record
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
    """What one import wrote, reused and skipped (the counts a job's page and the command line report)."""

    lines: int = 0
    prompts_created: int = 0
    prompts_existing: int = 0
    duplicate_lines: list[list] = field(default_factory=list)  # [[line, preview], ...] the first 100
    completions_created: int = 0
    completions_reused: int = 0
    tasks_created: int = 0
    tasks_existing: int = 0
    demonstrations_created: int = 0
    demonstrations_skipped: int = 0
    annotations_created: int = 0
    annotations_skipped: int = 0
    identical_lines: list[list] = field(
        default_factory=list
    )  # [[line, "task" | "label" | "demonstration"], ...] the first 100
    invalid_skipped: int = 0
    # The skipped lines themselves (skip-invalid imports); the job keeps them in its `errors`, not in `result`.
    invalid_lines: list[LineError] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "invalid_lines"}

    def _identical(self, line: int, what: str) -> None:
        if len(self.identical_lines) < MAX_DUPLICATES_LISTED:
            self.identical_lines.append([line, what])


def _table(model) -> str:
    return model._meta.db_table


def _rows(sql: str, params: list) -> list[tuple]:
    """Run one statement (typically `INSERT ... SELECT ... FROM unnest(arrays) RETURNING ...`): a handful of array
    parameters per batch instead of one placeholder per value, and no model instances (the ORM's bulk_create
    spends more time building objects than PostgreSQL spends inserting them). Rows come back in array order."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _insert(sql: str, params: list) -> list[int]:
    return [row[0] for row in _rows(sql, params)]


def _insert_prompts(
    project: Project, batch: list[Record], source: str, user_id: int | None, job_id: int | None
) -> tuple[dict[str, int], set[str]]:
    """Insert the batch's prompts that are new; (content_hash -> prompt id for all, hashes created now)."""
    table = _table(Prompt)
    created = {
        row[0]
        for row in _rows(
            f"INSERT INTO {table} (project_id, text, messages, content_hash, source, created_by_id, import_job_id, created_at) "
            f"SELECT %s, t, m::jsonb, h, %s, %s, %s, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(t, m, h) "
            f"ON CONFLICT ON CONSTRAINT prompt_unique_content_per_project DO NOTHING RETURNING content_hash",
            [
                project.pk,
                source,
                user_id,
                job_id,
                timezone.now(),
                [r.text for r in batch],
                [json.dumps(r.messages) if r.messages else None for r in batch],
                [r.content_hash for r in batch],
            ],
        )
    }
    ids = dict(
        _rows(
            f"SELECT content_hash, id FROM {table} WHERE project_id = %s AND content_hash = ANY(%s)",
            [project.pk, list({r.content_hash for r in batch})],
        )
    )
    return ids, created


def _upsert(
    table: str,
    *,
    parent: str,
    columns: dict[str, str],
    values: list,
    arrays: dict[str, tuple[str, list]],
    keys: list[tuple[int, str]],
) -> tuple[dict[tuple[int, str], int], set[tuple[int, str]]]:
    """Insert the rows keyed (parent id, import key) that are not there yet, in one statement.

    `columns` maps each column to its SQL expression over the unnest names of `arrays` (name ->
    (SQL type, one value per row)) and the `values` placeholders, which come first; `keys` gives each
    row's (parent id, import key) without repeats. Returns ({key pair: id} for all rows, key pairs created now).
    """
    names = list(arrays)
    unnest = ", ".join(f"%s::{arrays[n][0]}[]" for n in names)
    created = set(
        _rows(
            f"INSERT INTO {table} ({', '.join(columns)}, import_key) SELECT {', '.join(columns.values())}, k "
            f"FROM unnest({unnest}, %s::text[]) AS u({', '.join(names)}, k) "
            f"ON CONFLICT ({parent}, import_key) WHERE import_key IS NOT NULL DO NOTHING RETURNING {parent}, import_key",
            values + [arrays[n][1] for n in names] + [[k for _, k in keys]],
        )
    )
    ids = {
        (p, k): i
        for i, p, k in _rows(
            f"SELECT t.id, t.{parent}, t.import_key FROM {table} t "
            f"JOIN unnest(%s::bigint[], %s::text[]) AS u(p, k) ON t.{parent} = u.p AND t.import_key = u.k",
            [[p for p, _ in keys], [k for _, k in keys]],
        )
    }
    return ids, created


def insert_batch(
    project: Project,
    kind: str,
    batch: list[Record],
    result: ImportResult,
    *,
    source: str,
    user_id: int | None,
    import_source: ImportSource | None,
    job_id: int | None = None,
) -> None:
    """Insert one batch of validated records of `kind` and add what was written, reused and skipped to `result`.

    Run it inside the import's transaction: a file is imported whole or not at all. Every row created
    (not reused) carries `job_id`, the import job that made it, so the job can be undone.
    """
    ids, created = _insert_prompts(project, batch, source, user_id, job_id)
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
    if kind == ImportJob.Kind.DEMONSTRATIONS:
        _insert_demonstrations(keep, result, source=source, user_id=user_id, job_id=job_id)
    elif kind in (ImportJob.Kind.COMPLETIONS, ImportJob.Kind.PREFERENCES):
        completion_ids = _upsert_completions(keep, result, job_id)
        task_ids = _upsert_tasks(
            project, keep, completion_ids, result, job_id, labels=kind == ImportJob.Kind.PREFERENCES
        )
        if kind == ImportJob.Kind.PREFERENCES:
            _insert_labels(project, keep, completion_ids, task_ids, result, job_id, import_source=import_source)


def _insert_demonstrations(
    keep: list[tuple[Record, int]], result: ImportResult, *, source: str, user_id: int | None, job_id: int | None
) -> None:
    table = _table(Demonstration)
    # Already there: imported with this text (even if edited since), or written by hand with this text.
    there = set(
        _rows(
            f"SELECT prompt_id, import_key FROM {table} WHERE prompt_id = ANY(%s) AND import_key IS NOT NULL "
            f"UNION SELECT prompt_id, encode(sha256(convert_to(text, 'UTF8')), 'hex') FROM {table} WHERE prompt_id = ANY(%s)",
            [list({pid for _, pid in keep})] * 2,
        )
    )
    new: list[tuple[Record, tuple[int, str]]] = []
    for r, pid in keep:
        key = (pid, demonstration_key(r.demonstration))
        if key in there:
            result.demonstrations_skipped += 1
            result._identical(r.line, "demonstration")
        else:
            there.add(key)
            new.append((r, key))
    if not new:
        return
    now = timezone.now()
    _, created = _upsert(
        table,
        parent="prompt_id",
        columns={
            "prompt_id": "p",
            "text": "t",
            "author_id": "%s",
            "source": "%s",
            "import_job_id": "%s",
            "created_at": "%s",
            "updated_at": "%s",
        },
        values=[user_id, source, job_id, now, now],
        arrays={"p": ("bigint", [k[0] for _, k in new]), "t": ("text", [r.demonstration for r, _ in new])},
        keys=[k for _, k in new],
    )
    result.demonstrations_created += len(created)
    for r, key in new:
        if key not in created:  # another import wrote it meanwhile
            result.demonstrations_skipped += 1
            result._identical(r.line, "demonstration")


def _upsert_completions(keep: list[tuple[Record, int]], result: ImportResult, job_id: int | None) -> list[list[int]]:
    """Each record's completion ids, in its own order; identical completions are reused."""
    keys = [[(pid, completion_key(text, model)) for text, model in zip(r.completions, r.models)] for r, pid in keep]
    first: dict[tuple[int, str], tuple[str, str]] = {}
    for (r, _), mine in zip(keep, keys):
        for key, text, model in zip(mine, r.completions, r.models):
            first.setdefault(key, (text, model))
    ids, created = _upsert(
        _table(Completion),
        parent="prompt_id",
        columns={
            "prompt_id": "p",
            "text": "t",
            "source": "%s",
            "model_name": "m",
            "sampling": "'{}'::jsonb",
            "import_job_id": "%s",
            "created_at": "%s",
        },
        values=[Completion.Source.IMPORTED, job_id, timezone.now()],
        arrays={
            "p": ("bigint", [p for p, _ in first]),
            "t": ("text", [t for t, _ in first.values()]),
            "m": ("text", [m for _, m in first.values()]),
        },
        keys=list(first),
    )
    result.completions_created += len(created)
    result.completions_reused += sum(len(mine) for mine in keys) - len(created)
    return [[ids[key] for key in mine] for mine in keys]


def _upsert_tasks(
    project: Project,
    keep: list[tuple[Record, int]],
    completion_ids: list[list[int]],
    result: ImportResult,
    job_id: int | None,
    *,
    labels: bool,
) -> list[int]:
    """Each record's task id; a task over the same completions (and purpose) is made once."""
    keys = [(pid, task_key(mine, labels=labels)) for (_, pid), mine in zip(keep, completion_ids)]
    first: dict[tuple[int, str], list[int]] = {}
    for key, mine in zip(keys, completion_ids):
        first.setdefault(key, mine)
    # A new label task starts with overlap 1; _insert_labels sets it to the labels it gets.
    ids, created = _upsert(
        _table(RankingTask),
        parent="prompt_id",
        columns={
            "prompt_id": "p",
            "project_id": "%s",
            "overlap": "%s",
            "submitted_count": "0",
            "import_job_id": "%s",
            "created_at": "%s",
        },
        values=[project.pk, 1 if labels else project.overlap, job_id, timezone.now()],
        arrays={"p": ("bigint", [p for p, _ in first])},
        keys=list(first),
    )
    new_tasks = [(ids[key], first[key]) for key in first if key in created]
    if new_tasks:
        _insert(
            f"INSERT INTO {_table(TaskCompletion)} (task_id, completion_id, position) "
            f"SELECT t, c, p FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) AS u(t, c, p) RETURNING id",
            [
                [t for t, mine in new_tasks for _ in mine],
                [c for _, mine in new_tasks for c in mine],
                [i for _, mine in new_tasks for i in range(len(mine))],
            ],
        )
    result.tasks_created += len(created)
    result.tasks_existing += len(keys) - len(created)
    if not labels:
        seen: set = set()
        for (r, _), key in zip(keep, keys):
            if key not in created or key in seen:
                result._identical(r.line, "task")
            seen.add(key)
    return [ids[key] for key in keys]


def _rating_rows(r: Record, completion_ids: list[int]) -> list[tuple[int, int, int | None, dict[str, bool] | None]]:
    """(completion id, rank, rating, answered checks) per completion of one imported label; null answers are left out."""
    return [
        (
            c,
            r.ranks[i],
            r.ratings[i] if r.ratings else None,
            {key: values[i] for key, values in r.checks.items() if values[i] is not None} if r.checks else None,
        )
        for i, c in enumerate(completion_ids)
    ]


def _insert_labels(
    project: Project,
    keep: list[tuple[Record, int]],
    completion_ids: list[list[int]],
    task_ids: list[int],
    result: ImportResult,
    job_id: int | None,
    *,
    import_source: ImportSource,
) -> None:
    rows = [_rating_rows(r, mine) for (r, _), mine in zip(keep, completion_ids)]
    keys = [label_key(mine) for mine in rows]
    # The task rows' locks serialise imports adding labels to the same tasks, so the check for
    # labels already there and the overlap written below cannot race (the unique index backs it up).
    _rows(f"SELECT id FROM {_table(RankingTask)} WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [sorted(set(task_ids))])
    there = set(
        _rows(
            f"SELECT task_id, import_key FROM {_table(Annotation)} "
            f"WHERE task_id = ANY(%s) AND import_source_id = %s AND import_key IS NOT NULL",
            [list(set(task_ids)), import_source.pk],
        )
    )
    new: list[int] = []
    for i, ((r, _), task_id, key) in enumerate(zip(keep, task_ids, keys)):
        if (task_id, key) in there:
            result.annotations_skipped += 1
            result._identical(r.line, "label")
        else:
            there.add((task_id, key))
            new.append(i)
    if not new:
        return
    per_task = Counter(task_ids[i] for i in new)
    # A label task stays closed: its overlap is the number of labels it holds.
    _rows(
        f"UPDATE {_table(RankingTask)} AS t SET overlap = t.submitted_count + u.n "
        f"FROM unnest(%s::bigint[], %s::int[]) AS u(i, n) WHERE t.id = u.i RETURNING t.id",
        [list(per_task), list(per_task.values())],
    )
    now = timezone.now()
    annotation_ids = _insert(
        f"INSERT INTO {_table(Annotation)} (task_id, import_source_id, import_key, status, shown_order, draft, comment, "
        f"skip_reason, import_job_id, started_at, updated_at, submitted_at) "
        f"SELECT t, %s, k, %s, o::jsonb, '{{}}'::jsonb, '', '', %s, %s, %s, %s "
        f"FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS u(t, k, o) RETURNING id",
        [
            import_source.pk,
            Annotation.Status.SUBMITTED,
            job_id,
            now,
            now,
            now,
            [task_ids[i] for i in new],
            [keys[i] for i in new],
            [json.dumps(completion_ids[i]) for i in new],
        ],
    )
    result.annotations_created += len(annotation_ids)
    rating_rows = [(annotation_id, *row) for annotation_id, i in zip(annotation_ids, new) for row in rows[i]]
    rating_ids = _insert(
        f"INSERT INTO {_table(Rating)} (annotation_id, completion_id, rank, likert) "
        f"SELECT a, c, r, l FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::int[]) AS u(a, c, r, l) RETURNING id",
        [
            [row[0] for row in rating_rows],
            [row[1] for row in rating_rows],
            [row[2] for row in rating_rows],
            [row[3] for row in rating_rows],
        ],
    )
    answers = [
        (rating_id, key, value)
        for rating_id, row in zip(rating_ids, rating_rows)
        if row[4]
        for key, value in row[4].items()
    ]
    if answers:
        check_ids = dict(project.checks.values_list("key", "id"))
        _insert(
            f"INSERT INTO {_table(CheckAnswer)} (rating_id, check_question_id, value) "
            f"SELECT r, q, v FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS u(r, q, v) RETURNING id",
            [[a[0] for a in answers], [check_ids[a[1]] for a in answers], [a[2] for a in answers]],
        )
