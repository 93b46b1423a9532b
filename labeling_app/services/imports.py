"""Bulk import of prompts, completions, demonstrations and preference labels: validate a file, then insert it.

Two streaming passes over the file, so memory stays flat in the file's size:

1. **Validate** every line (no writes). Any bad line fails the whole file; errors name the line
   and the field (the first `MAX_ERRORS` are kept, all are counted).
2. **Insert** in batches of `batch_size` lines inside one transaction: prompts go in with
   `INSERT ... ON CONFLICT DO NOTHING RETURNING`, so a prompt already in the project (or earlier
   in the same file) is reported as a duplicate instead of being doubled.

Accepted shapes, one JSON object per line (CSV: a header with `prompt` or `text`, optional
`completion`, `source`):

- prompt: ``"prompt": "text"`` or a chat list, or ``"messages": [{"role", "content"}, ...]``.
- completions (makes ranking tasks): prompt + ``"completions": ["...", {"text": "...", "model": "..."}]``
  (exactly the project's K) or ``"chosen"``/``"rejected"`` (K=2).
- demonstrations: prompt + ``"completion"`` (or ``demonstration``/``response``), or ``"messages"``
  ending with the assistant's turn (TRL's SFT formats).
- preferences (become submitted annotations of a named ImportSource):
  TRL pairwise ``{"prompt", "chosen", "rejected"}`` (text or chat; optional ``chosen_rating``,
  ``rejected_rating``), the implicit-prompt form ``{"chosen", "rejected"}`` (HH-RLHF text with
  "\\n\\nHuman:"/"\\n\\nAssistant:" turns, or full chat lists: the shared prefix up to the last
  assistant turn is the prompt), and grouped rankings ``{"prompt", "completions", "ranks"}``
  (optional ``ratings`` 1-7 or null per completion, and ``checks`` {check_key: [true/false/null per completion]}) — the grouped export.

A task made from imported labels is closed: its overlap equals its one imported label, so it
never enters the labelers' queue.
"""
from __future__ import annotations

import csv
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

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
    prompt_content_hash,
)

KINDS = tuple(ImportJob.Kind.values)
MAX_ERRORS = 100
MAX_DUPLICATES_LISTED = 100
CHAT_ROLES = ("system", "user", "assistant")
COMPLETION_KEYS = ("completion", "demonstration", "response", "answer")


class FieldError(Exception):
    """A problem with one field of one line."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass
class LineError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message}"


class ImportValidationError(Exception):
    """The file was rejected as a whole; nothing was written."""

    def __init__(self, errors: list[LineError], error_count: int, lines: int):
        self.errors, self.error_count, self.lines = errors, error_count, lines
        more = f" (showing the first {len(errors)})" if error_count > len(errors) else ""
        super().__init__(f"{error_count} bad line(s) in {lines} lines; nothing was imported{more}:\n"
                         + "\n".join(str(e) for e in errors))


@dataclass
class Record:
    """One validated line, in the app's terms."""

    line: int
    text: str  # plain prompt, or the last user turn of a chat prompt
    messages: list | None
    completions: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    ranks: list[int] | None = None
    ratings: list[int | None] | None = None
    checks: dict[str, list[bool | None]] | None = None
    demonstration: str | None = None

    @property
    def content_hash(self) -> str:
        return prompt_content_hash(self.text, self.messages)


@dataclass
class ImportResult:
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


# ---------------------------------------------------------------------------------------------
# Reading and validating lines


def _str(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise FieldError(field_name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise FieldError(field_name, "is empty")
    return value


def _messages(value: Any, field_name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise FieldError(field_name, 'must be a non-empty list of {"role": ..., "content": ...} messages')
    out = []
    for i, m in enumerate(value):
        where = f"{field_name}[{i}]"
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise FieldError(where, 'must be an object with "role" and "content"')
        if m["role"] not in CHAT_ROLES:
            raise FieldError(f"{where}.role", f"must be one of {', '.join(CHAT_ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise FieldError(f"{where}.content", "must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _chat_prompt(messages: list[dict], field_name: str) -> tuple[str, list[dict]]:
    if messages[-1]["role"] != "user":
        raise FieldError(field_name, f"a chat prompt must end with a user turn, it ends with {messages[-1]['role']!r}")
    if not messages[-1]["content"].strip():
        raise FieldError(field_name, "the last user turn is empty")
    return messages[-1]["content"], messages


def _prompt_of(obj: dict, *, allow_messages: bool = True) -> tuple[str, list | None]:
    """(text, messages) of a line's prompt."""
    if "prompt" in obj:
        value = obj["prompt"]
        if isinstance(value, list):
            return _chat_prompt(_messages(value, "prompt"), "prompt")
        return _str(value, "prompt"), None
    if allow_messages and "messages" in obj:
        return _chat_prompt(_messages(obj["messages"], "messages"), "messages")
    if "text" in obj:
        return _str(obj["text"], "text"), None
    raise FieldError("prompt", 'missing: give "prompt" (text or a chat list) or "messages"')


def _completion_text(value: Any, field_name: str) -> tuple[str, str]:
    """(text, model name) of one completion: a string, a chat list with one assistant turn, or an object."""
    if isinstance(value, str):
        return _str(value, field_name), ""
    if isinstance(value, list):
        msgs = _messages(value, field_name)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise FieldError(field_name, "a chat completion must be exactly one assistant message")
        return _str(msgs[0]["content"], f"{field_name}[0].content"), ""
    if isinstance(value, dict):
        key = next((k for k in ("text", "content", "completion") if k in value), None)
        if key is None:
            raise FieldError(field_name, 'an object completion needs "text"')
        model = value.get("model", "")
        if not isinstance(model, str):
            raise FieldError(f"{field_name}.model", "must be a string")
        return _str(value[key], f"{field_name}.{key}"), model
    raise FieldError(field_name, f"must be a string, a chat list or an object, got {type(value).__name__}")


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _hh_turns(text: str, field_name: str) -> list[dict]:
    """Anthropic HH-RLHF text ("\\n\\nHuman: ...\\n\\nAssistant: ...") as chat messages."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise FieldError(field_name, 'expected a dialogue starting with "\\n\\nHuman: " and ending with an "\\n\\nAssistant: " turn')
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[str, list, str, str]:
    """Split two full dialogues into (prompt text, prompt messages, chosen answer, rejected answer)."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        chosen_msgs, rejected_msgs = _hh_turns(chosen, "chosen"), _hh_turns(rejected, "rejected")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        chosen_msgs, rejected_msgs = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    else:
        raise FieldError("chosen", "chosen and rejected must both be texts or both be chat lists")
    for name, msgs in (("chosen", chosen_msgs), ("rejected", rejected_msgs)):
        if msgs[-1]["role"] != "assistant":
            raise FieldError(name, "the dialogue must end with the assistant's answer")
        if len(msgs) < 2:
            raise FieldError(name, "the dialogue has no prompt before the assistant's answer")
    if chosen_msgs[:-1] != rejected_msgs[:-1]:
        raise FieldError("rejected", "chosen and rejected differ before the last assistant turn; they must share the prompt")
    text, messages = _chat_prompt(chosen_msgs[:-1], "chosen")
    answers = []
    for name, msgs in (("chosen", chosen_msgs), ("rejected", rejected_msgs)):
        answers.append(_str(msgs[-1]["content"].strip(), f"{name} (last assistant turn)"))
    return text, messages, answers[0], answers[1]


def _strip_prompt_prefix(value: Any, messages: list | None) -> Any:
    """TRL also writes chosen/rejected as the whole conversation: drop the prompt turns when they lead."""
    if messages and isinstance(value, list) and len(value) > len(messages) and value[: len(messages)] == messages:
        return value[len(messages):]
    return value


def _optional_rating(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
        raise FieldError(key, f"must be a whole number from 1 to 7 (or null), got {value!r}")
    return value


def _k_error(field_name: str, got: int, project: Project) -> FieldError:
    return FieldError(
        field_name,
        f"has {got} completions, but project {project.name!r} ranks K={project.completions_per_task} per task: "
        f"give exactly {project.completions_per_task} per line, or import into a project with K={got}",
    )


def parse_line(obj: Any, kind: str, *, line: int, project: Project, check_keys: frozenset[str]) -> Record:
    """Validate one decoded line for `kind`; raises FieldError naming the field."""
    if not isinstance(obj, dict):
        raise FieldError("(line)", f"must be a JSON object, got {type(obj).__name__}")
    k = project.completions_per_task

    if kind == ImportJob.Kind.PROMPTS:
        text, messages = _prompt_of(obj)
        return Record(line, text, messages)

    if kind == ImportJob.Kind.DEMONSTRATIONS:
        key = next((c for c in COMPLETION_KEYS if c in obj), None)
        if key is None and "prompt" not in obj and "messages" in obj:
            msgs = _messages(obj["messages"], "messages")
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise FieldError("messages", "a demonstration conversation must end with the assistant's answer after a user turn")
            text, messages = _chat_prompt(msgs[:-1], "messages")
            return Record(line, text, messages, demonstration=_str(msgs[-1]["content"], f"messages[{len(msgs) - 1}].content"))
        if key is None:
            raise FieldError("completion", 'missing: give "completion" (the ideal answer), or "messages" ending with the assistant turn')
        text, messages = _prompt_of(obj, allow_messages=False)
        answer, _ = _completion_text(_strip_prompt_prefix(obj[key], messages), key)
        return Record(line, text, messages, demonstration=answer)

    if kind == ImportJob.Kind.COMPLETIONS:
        text, messages = _prompt_of(obj)
        default_model = obj.get("model", "")
        if not isinstance(default_model, str):
            raise FieldError("model", "must be a string")
        if "completions" in obj:
            values = obj["completions"]
            if not isinstance(values, list):
                raise FieldError("completions", "must be a list")
            pairs = [_completion_text(v, f"completions[{i}]") for i, v in enumerate(values)]
        elif "chosen" in obj and "rejected" in obj:
            pairs = [_completion_text(_strip_prompt_prefix(obj[n], messages), n) for n in ("chosen", "rejected")]
        else:
            raise FieldError("completions", 'missing: give "completions": [...] with the project\'s K completions')
        if len(pairs) != k:
            raise _k_error("completions", len(pairs), project)
        return Record(line, text, messages, completions=[t for t, _ in pairs], models=[m or default_model for _, m in pairs])

    if kind == ImportJob.Kind.PREFERENCES:
        if "ranks" in obj:
            return _grouped_ranking(obj, line=line, project=project, check_keys=check_keys)
        if "chosen" not in obj or "rejected" not in obj:
            raise FieldError("chosen", 'missing: give "chosen" and "rejected" (pairwise), or "completions" with "ranks" (grouped)')
        if k != 2:
            raise FieldError("chosen", f"a pairwise preference ranks 2 completions, but project {project.name!r} ranks "
                                       f"K={k}: import pairwise data into a project with K=2")
        if "prompt" in obj:
            text, messages = _prompt_of(obj, allow_messages=False)
            chosen, _ = _completion_text(_strip_prompt_prefix(obj["chosen"], messages), "chosen")
            rejected, _ = _completion_text(_strip_prompt_prefix(obj["rejected"], messages), "rejected")
        else:
            text, messages, chosen, rejected = _implicit_prompt(obj["chosen"], obj["rejected"])
        if chosen == rejected:
            raise FieldError("rejected", "is the same text as chosen; a preference needs two different completions")
        ratings = [_optional_rating(obj, "chosen_rating"), _optional_rating(obj, "rejected_rating")]
        return Record(line, text, messages, completions=[chosen, rejected], models=["", ""], ranks=[1, 2],
                      ratings=ratings if any(r is not None for r in ratings) else None)

    raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")


def _grouped_ranking(obj: dict, *, line: int, project: Project, check_keys: frozenset[str]) -> Record:
    text, messages = _prompt_of(obj, allow_messages=False)
    values = obj.get("completions")
    if not isinstance(values, list):
        raise FieldError("completions", "a grouped ranking needs a list of completions next to its ranks")
    pairs = [_completion_text(v, f"completions[{i}]") for i, v in enumerate(values)]
    if len(pairs) != project.completions_per_task:
        raise _k_error("completions", len(pairs), project)
    if len({t for t, _ in pairs}) != len(pairs):
        raise FieldError("completions", "contains the same completion twice")
    ranks = obj["ranks"]
    if not isinstance(ranks, list) or len(ranks) != len(pairs):
        raise FieldError("ranks", f"must be a list with one rank per completion ({len(pairs)})")
    for i, r in enumerate(ranks):
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise FieldError(f"ranks[{i}]", f"must be a whole number >= 1 (1 = best), got {r!r}")
    ratings = obj.get("ratings")
    if ratings is not None:
        if not isinstance(ratings, list) or len(ratings) != len(pairs):
            raise FieldError("ratings", f"must be a list with one rating (1-7 or null) per completion ({len(pairs)})")
        for i, r in enumerate(ratings):
            if r is not None and (isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 7):
                raise FieldError(f"ratings[{i}]", f"must be a whole number from 1 to 7 or null, got {r!r}")
    checks = obj.get("checks") or None
    if checks is not None:
        if not isinstance(checks, dict):
            raise FieldError("checks", f"must be an object {{check_key: [true/false/null, one per completion ({len(pairs)})]}}")
        for key, answers in checks.items():
            if key not in check_keys:
                raise FieldError(f"checks.{key}", f"is not a check of project {project.name!r}; known: {', '.join(sorted(check_keys))}")
            if not isinstance(answers, list) or len(answers) != len(pairs):
                raise FieldError(f"checks.{key}", f"must be a list with one answer per completion ({len(pairs)})")
            for i, value in enumerate(answers):
                if value is not None and not isinstance(value, bool):
                    raise FieldError(f"checks.{key}[{i}]", f"must be true, false or null, got {value!r}")
    model = obj.get("model", "")
    return Record(line, text, messages, completions=[t for t, _ in pairs],
                  models=[m or (model if isinstance(model, str) else "") for _, m in pairs],
                  ranks=list(ranks), ratings=ratings, checks=checks)


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"format must be jsonl or csv, got {fmt!r}")
        return fmt
    return "csv" if str(path).lower().endswith(".csv") else "jsonl"


def _raw_lines(path: str | Path, fmt: str) -> Iterator[tuple[int, Any, LineError | None]]:
    """(line number, decoded object, decoding error) for each non-blank line, streamed."""
    with open(path, encoding="utf-8", newline="" if fmt == "csv" else None) as f:
        if fmt == "csv":
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if not ({"prompt", "text"} & set(header)):
                yield 1, None, LineError(1, "(header)", f"a CSV needs a 'prompt' (or 'text') column; found {', '.join(header) or 'no header'}")
                return
            for row in reader:
                obj = {k: v for k, v in row.items() if k and v not in (None, "")}
                if not obj:
                    continue
                yield reader.line_num, obj, None
            return
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw), None
            except json.JSONDecodeError as exc:
                yield number, None, LineError(number, "(json)", f"not valid JSON: {exc.msg} at column {exc.colno}")


def iter_records(path: str | Path, kind: str, *, project: Project, fmt: str | None = None) -> Iterator[Record | LineError]:
    """Each line of the file as a validated Record, or a LineError saying what is wrong with it."""
    fmt = detect_format(path, fmt)
    if fmt == "csv" and kind not in (ImportJob.Kind.PROMPTS, ImportJob.Kind.DEMONSTRATIONS):
        yield LineError(1, "(file)", f"{kind} are imported from JSONL only; CSV is for prompts and demonstrations")
        return
    check_keys = frozenset(project.checks.values_list("key", flat=True))
    for number, obj, error in _raw_lines(path, fmt):
        if error is not None:
            yield error
            continue
        try:
            yield parse_line(obj, kind, line=number, project=project, check_keys=check_keys)
        except FieldError as exc:
            yield LineError(number, exc.field, exc.message)


def count_lines(path: str | Path) -> int:
    """Non-blank lines (cheap, streamed): decides whether an upload runs in the background."""
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                n += 1
    return n


def validate_file(path: str | Path, kind: str, *, project: Project, fmt: str | None = None,
                  on_progress: Callable[[int], None] | None = None) -> int:
    """First pass: the number of valid lines, or ImportValidationError listing what to fix."""
    errors: list[LineError] = []
    error_count = lines = 0
    for item in iter_records(path, kind, project=project, fmt=fmt):
        lines += 1
        if isinstance(item, LineError):
            error_count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(item)
        if on_progress and lines % 5000 == 0:
            on_progress(lines)
    if lines == 0:
        raise ImportValidationError([LineError(1, "(file)", "the file has no data lines")], 1, 0)
    if error_count:
        raise ImportValidationError(errors, error_count, lines)
    return lines


# ---------------------------------------------------------------------------------------------
# Inserting


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


def _insert_batch(project: Project, kind: str, batch: list[Record], result: ImportResult, *, source: str,
                  user_id: int | None, import_source: ImportSource | None) -> None:
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


def import_file(*, project: Project, kind: str, path: str | Path, source_name: str = "", user=None,
                fmt: str | None = None, batch_size: int = 1000,
                on_progress: Callable[[str, int, int], None] | None = None) -> ImportResult:
    """Validate `path` as a whole, then insert it in one transaction; raises ImportValidationError.

    on_progress(phase, done_lines, total_lines) is called as the passes advance
    (phase "validating" or "importing").
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == ImportJob.Kind.PREFERENCES and not source_name.strip():
        raise ValueError("preference labels need a source name (the dataset or tool they came from), e.g. 'hh-rlhf'")
    source = (source_name or Path(path).name)[:200]
    total = validate_file(path, kind, project=project, fmt=fmt,
                          on_progress=(lambda n: on_progress("validating", n, 0)) if on_progress else None)
    result = ImportResult(lines=total)
    user_id = getattr(user, "pk", None)
    with transaction.atomic():
        import_source = None
        if kind == ImportJob.Kind.PREFERENCES:
            import_source, _ = ImportSource.objects.get_or_create(name=source_name.strip()[:200])
        batch: list[Record] = []
        done = 0
        for record in iter_records(path, kind, project=project, fmt=fmt):
            assert isinstance(record, Record), "the file changed between validation and import"
            batch.append(record)
            if len(batch) >= batch_size:
                _insert_batch(project, kind, batch, result, source=source, user_id=user_id, import_source=import_source)
                done += len(batch)
                batch = []
                if on_progress:
                    on_progress("importing", done, total)
        if batch:
            _insert_batch(project, kind, batch, result, source=source, user_id=user_id, import_source=import_source)
            done += len(batch)
        if on_progress:
            on_progress("importing", done, total)
    return result


# ---------------------------------------------------------------------------------------------
# Import jobs: an upload saved under the var dir, run inline when small, by Celery when big


def import_dir() -> Path:
    from config.env import VAR_DIR

    path = Path(getattr(settings, "IMPORT_DIR", VAR_DIR / "imports"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def async_threshold() -> int:
    """Files with more lines than this run as a Celery job (queue "default")."""
    return int(getattr(settings, "IMPORT_ASYNC_LINES", 2000))


def import_job_create(*, project: Project, kind: str, upload, original_name: str, source_name: str = "",
                      user=None) -> ImportJob:
    """Save the upload (any file-like object or Django UploadedFile) and start its import.

    Small files are imported before this returns; bigger ones are queued after the commit.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    suffix = ".csv" if original_name.lower().endswith(".csv") else ".jsonl"
    path = import_dir() / f"{uuid.uuid4().hex}{suffix}"
    with open(path, "wb") as out:
        chunks = upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b"")
        for chunk in chunks:
            out.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
    job = ImportJob.objects.create(project=project, kind=kind, file_path=str(path), original_name=original_name[:300],
                                   source_name=source_name.strip(), created_by=user, total_lines=count_lines(path))
    if job.total_lines > async_threshold():
        from labeling_app.tasks import import_run

        transaction.on_commit(lambda: import_run.delay(job.pk))  # the default queue ("default")
    else:
        import_job_run(job_id=job.pk)
        job.refresh_from_db()
    return job


def import_job_progress(job: ImportJob) -> dict:
    """{phase, done, total} for a job's page: the live cache entry while importing, else the row."""
    live = cache.get(job.progress_cache_key) if job.status in (ImportJob.Status.VALIDATING, ImportJob.Status.IMPORTING) else None
    if live:
        return live
    done = job.total_lines if job.status == ImportJob.Status.SUCCEEDED else job.processed_lines
    return {"phase": job.status, "done": done, "total": job.total_lines}


def import_job_run(*, job_id: int) -> ImportJob:
    """Run one import job to the end, recording success or the errors on its row."""
    job = ImportJob.objects.select_related("project", "created_by").get(pk=job_id)
    if job.status not in (ImportJob.Status.QUEUED,):
        return job  # a redelivered task: the job already ran
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.VALIDATING)
    job.status = ImportJob.Status.VALIDATING

    def progress(phase: str, done: int, total: int) -> None:
        cache.set(job.progress_cache_key, {"phase": phase, "done": done, "total": job.total_lines}, timeout=3600)
        if phase == "validating":
            ImportJob.objects.filter(pk=job.pk).update(processed_lines=done)

    try:
        result = import_file(project=job.project, kind=job.kind, path=job.file_path, source_name=job.source_name or "",
                             user=job.created_by, on_progress=progress)
    except ImportValidationError as exc:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, errors=[asdict(e) for e in exc.errors], error_count=exc.error_count,
            processed_lines=exc.lines, finished_at=timezone.now(),
        )
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, errors=[{"line": 0, "field": "(file)", "message": str(exc)}], error_count=1,
            finished_at=timezone.now(),
        )
    except Exception as exc:
        # Never leave a job "importing" forever: record the failure, then let the worker log the traceback.
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, error_count=1, finished_at=timezone.now(),
            errors=[{"line": 0, "field": "(import)", "message": f"unexpected error, nothing was imported: {exc}"}],
        )
        cache.delete(job.progress_cache_key)
        raise
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.SUCCEEDED, result=result.as_dict(), processed_lines=result.lines,
            total_lines=result.lines, finished_at=timezone.now(),
        )
        try:
            os.remove(job.file_path)  # the rows are the record now
        except OSError:
            pass
    cache.delete(job.progress_cache_key)
    job.refresh_from_db()
    return job
