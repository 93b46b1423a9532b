"""Reading import files: decode each line and check it against an import kind, without touching the database.

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
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from config.errors import ServiceError
from labeling_app.models import Completion, ImportJob, Project, prompt_content_hash
from labeling_app.validation import (
    NUL,
    JsonInputError,
    json_loads,
    max_text_chars,
    rank_gaps_problem,
    short_text_problem,
    text_problem,
)

KINDS = tuple(ImportJob.Kind.values)
CHAT_ROLES = ("system", "user", "assistant")
COMPLETION_KEYS = ("completion", "demonstration", "response", "answer")


class FieldError(Exception):
    """A problem with one field of one line: this module's internal signal while parsing a line.

    It never leaves the module: `iter_records` turns it into a LineError (the line's report) and
    `parse_chat_prompt` into a ServiceError.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class KMismatch(FieldError):
    """A line with another number of completions than the project's K (reported once per file, not per line)."""

    def __init__(self, field: str, got: int, project: Project):
        k = project.completions_per_task
        super().__init__(
            field,
            f"has {got} completions, but project {project.name!r} ranks K={k} per task: "
            f"give exactly {k} per line, or import into a project with K={got}",
        )
        self.got = got


@dataclass
class LineError:
    """What is wrong with one line of a file: its number, the field, and what to fix.

    `whole_file` marks an error that stops the file from being read further (a CSV header, an
    undecodable CSV line): no line can be imported past it, even when bad lines may be skipped.
    `k_got` is set on a line whose completion count is not the project's K.
    """

    line: int
    field: str
    message: str
    whole_file: bool = False
    k_got: int | None = None

    def __post_init__(self) -> None:
        # The report is stored as JSON in PostgreSQL, which cannot hold NUL; a field name can quote the file.
        self.field, self.message = self.field.replace(NUL, "\\u0000"), self.message.replace(NUL, "\\u0000")

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message}"

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


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


def _str(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise FieldError(field_name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise FieldError(field_name, "is empty")
    return _text(value, field_name)


def _text(value: str, field_name: str) -> str:
    problem = text_problem(value)
    if problem:
        raise FieldError(field_name, problem)
    return value


MODEL_NAME_MAX = Completion._meta.get_field("model_name").max_length


def _model_name(value: Any, field_name: str) -> str:
    if not isinstance(value, str):
        raise FieldError(field_name, "must be a string")
    problem = short_text_problem(value, MODEL_NAME_MAX)
    if problem:
        raise FieldError(field_name, problem)
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
        out.append({"role": m["role"], "content": _text(m["content"], f"{where}.content")})
    return out


def _chat_prompt(messages: list[dict], field_name: str) -> tuple[str, list[dict]]:
    if messages[-1]["role"] != "user":
        raise FieldError(field_name, f"a chat prompt must end with a user turn, it ends with {messages[-1]['role']!r}")
    if not messages[-1]["content"].strip():
        raise FieldError(field_name, "the last user turn is empty")
    return messages[-1]["content"], messages


def parse_chat_prompt(value: Any, *, field: str = "messages") -> tuple[str, list[dict]]:
    """(last user turn, messages) of a chat prompt given as [{"role", "content"}, ...].

    The same rules as an imported line's chat prompt; a ServiceError on `field` says what to fix.
    """
    try:
        return _chat_prompt(_messages(value, field), field)
    except FieldError as exc:
        raise ServiceError(f"{exc.field}: {exc.message}", field=field) from None


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
        return _str(value[key], f"{field_name}.{key}"), _model_name(value.get("model", ""), f"{field_name}.model")
    raise FieldError(field_name, f"must be a string, a chat list or an object, got {type(value).__name__}")


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _hh_turns(text: str, field_name: str) -> list[dict]:
    """Anthropic HH-RLHF text ("\\n\\nHuman: ...\\n\\nAssistant: ...") as chat messages."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise FieldError(
            field_name, 'expected a dialogue starting with "\\n\\nHuman: " and ending with an "\\n\\nAssistant: " turn'
        )
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[str, list, str, str]:
    """Split two full dialogues into (prompt text, prompt messages, chosen answer, rejected answer)."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        chosen_msgs = _messages(_hh_turns(chosen, "chosen"), "chosen")
        rejected_msgs = _messages(_hh_turns(rejected, "rejected"), "rejected")
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
        raise FieldError(
            "rejected", "chosen and rejected differ before the last assistant turn; they must share the prompt"
        )
    text, messages = _chat_prompt(chosen_msgs[:-1], "chosen")
    answers = []
    for name, msgs in (("chosen", chosen_msgs), ("rejected", rejected_msgs)):
        answers.append(_str(msgs[-1]["content"].strip(), f"{name} (last assistant turn)"))
    return text, messages, answers[0], answers[1]


def _strip_prompt_prefix(value: Any, messages: list | None) -> Any:
    """TRL also writes chosen/rejected as the whole conversation: drop the prompt turns when they lead."""
    if messages and isinstance(value, list) and len(value) > len(messages) and value[: len(messages)] == messages:
        return value[len(messages) :]
    return value


def _optional_rating(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
        raise FieldError(key, f"must be a whole number from 1 to 7 (or null), got {value!r}")
    return value


def _distinct_completions(pairs: list[tuple[str, str]]) -> None:
    """A task ranks different completions: the same text from the same model twice is one completion."""
    seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(pairs):
        if pair in seen:
            raise FieldError(
                f"completions[{i}]",
                f"is the same completion as completions[{seen[pair]}] (same text and "
                "model); a task ranks different completions",
            )
        seen[pair] = i


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
                raise FieldError(
                    "messages", "a demonstration conversation must end with the assistant's answer after a user turn"
                )
            text, messages = _chat_prompt(msgs[:-1], "messages")
            return Record(
                line, text, messages, demonstration=_str(msgs[-1]["content"], f"messages[{len(msgs) - 1}].content")
            )
        if key is None:
            raise FieldError(
                "completion",
                'missing: give "completion" (the ideal answer), or "messages" ending with the assistant turn',
            )
        text, messages = _prompt_of(obj, allow_messages=False)
        answer, _ = _completion_text(_strip_prompt_prefix(obj[key], messages), key)
        return Record(line, text, messages, demonstration=answer)

    if kind == ImportJob.Kind.COMPLETIONS:
        text, messages = _prompt_of(obj)
        default_model = _model_name(obj.get("model", ""), "model")
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
            raise KMismatch("completions", len(pairs), project)
        pairs = [(t, m or default_model) for t, m in pairs]
        _distinct_completions(pairs)
        return Record(line, text, messages, completions=[t for t, _ in pairs], models=[m for _, m in pairs])

    if kind == ImportJob.Kind.PREFERENCES:
        if "ranks" in obj:
            return _grouped_ranking(obj, line=line, project=project, check_keys=check_keys)
        if "chosen" not in obj or "rejected" not in obj:
            raise FieldError(
                "chosen", 'missing: give "chosen" and "rejected" (pairwise), or "completions" with "ranks" (grouped)'
            )
        if k != 2:
            raise KMismatch("chosen", 2, project)
        if "prompt" in obj:
            text, messages = _prompt_of(obj, allow_messages=False)
            chosen, _ = _completion_text(_strip_prompt_prefix(obj["chosen"], messages), "chosen")
            rejected, _ = _completion_text(_strip_prompt_prefix(obj["rejected"], messages), "rejected")
        else:
            text, messages, chosen, rejected = _implicit_prompt(obj["chosen"], obj["rejected"])
        if chosen == rejected:
            raise FieldError("rejected", "is the same text as chosen; a preference needs two different completions")
        ratings = [_optional_rating(obj, "chosen_rating"), _optional_rating(obj, "rejected_rating")]
        return Record(
            line,
            text,
            messages,
            completions=[chosen, rejected],
            models=["", ""],
            ranks=[1, 2],
            ratings=ratings if any(r is not None for r in ratings) else None,
        )

    raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")


def _grouped_ranking(obj: dict, *, line: int, project: Project, check_keys: frozenset[str]) -> Record:
    text, messages = _prompt_of(obj, allow_messages=False)
    values = obj.get("completions")
    if not isinstance(values, list):
        raise FieldError("completions", "a grouped ranking needs a list of completions next to its ranks")
    pairs = [_completion_text(v, f"completions[{i}]") for i, v in enumerate(values)]
    if len(pairs) != project.completions_per_task:
        raise KMismatch("completions", len(pairs), project)
    if len({t for t, _ in pairs}) != len(pairs):
        raise FieldError("completions", "contains the same completion twice")
    ranks = obj["ranks"]
    if not isinstance(ranks, list) or len(ranks) != len(pairs):
        raise FieldError("ranks", f"must be a list with one rank per completion ({len(pairs)})")
    for i, r in enumerate(ranks):
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise FieldError(f"ranks[{i}]", f"must be a whole number >= 1 (1 = best), got {r!r}")
    gaps = rank_gaps_problem(ranks)
    if gaps:
        raise FieldError("ranks", gaps)
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
            raise FieldError(
                "checks", f"must be an object {{check_key: [true/false/null, one per completion ({len(pairs)})]}}"
            )
        for key, answers in checks.items():
            if key not in check_keys:
                raise FieldError(
                    f"checks.{key}",
                    f"is not a check of project {project.name!r}; known: {', '.join(sorted(check_keys))}",
                )
            if not isinstance(answers, list) or len(answers) != len(pairs):
                raise FieldError(f"checks.{key}", f"must be a list with one answer per completion ({len(pairs)})")
            for i, value in enumerate(answers):
                if value is not None and not isinstance(value, bool):
                    raise FieldError(f"checks.{key}[{i}]", f"must be true, false or null, got {value!r}")
    model = _model_name(obj.get("model", ""), "model")
    return Record(
        line,
        text,
        messages,
        completions=[t for t, _ in pairs],
        models=[m or model for _, m in pairs],
        ranks=list(ranks),
        ratings=ratings,
        checks=checks,
    )


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"format must be jsonl or csv, got {fmt!r}")
        return fmt
    return "csv" if str(path).lower().endswith(".csv") else "jsonl"


class _Undecodable(Exception):
    def __init__(self, line: int, error: UnicodeDecodeError):
        super().__init__(line)
        self.line, self.error = line, error


def _encoding_error(line: int, error: UnicodeDecodeError, *, whole_file: bool) -> LineError:
    rest = "; the rest of the file was not read" if whole_file else ""
    return LineError(
        line, "(encoding)", f"not valid UTF-8 text ({error}){rest}: save the file as UTF-8", whole_file=whole_file
    )


def _decoded(raw: bytes, number: int) -> str:
    """One physical line as text; a UTF-8 byte order mark at the very start of the file is dropped."""
    if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    return raw.decode("utf-8")


def _csv_text_lines(f) -> Iterator[str]:
    for number, raw in enumerate(f, start=1):
        try:
            yield _decoded(raw, number)
        except UnicodeDecodeError as exc:
            raise _Undecodable(number, exc) from None


def _raw_lines(path: str | Path, fmt: str) -> Iterator[tuple[int, Any, LineError | None]]:
    """(line number, decoded object, error) for each non-blank line, streamed.

    The file is read as bytes and decoded line by line, so undecodable bytes are reported on
    their own line; a JSONL line is independent of the others, a CSV record may span lines.
    """
    with open(path, "rb") as f:
        if fmt == "csv":
            # The csv module refuses fields over 128 KiB; a text up to MAX_TEXT_CHARS must reach its own check.
            csv.field_size_limit(max(csv.field_size_limit(), 4 * max_text_chars() + 1))
            reader = csv.DictReader(_csv_text_lines(f))
            try:
                header = reader.fieldnames or []
                if not ({"prompt", "text"} & set(header)):
                    yield (
                        1,
                        None,
                        LineError(
                            1,
                            "(header)",
                            f"a CSV needs a 'prompt' (or 'text') column; found {', '.join(header) or 'no header'}",
                            whole_file=True,
                        ),
                    )
                    return
                for row in reader:
                    obj = {k: v for k, v in row.items() if k and v not in (None, "")}
                    if obj:
                        yield reader.line_num, obj, None
            except _Undecodable as exc:
                yield exc.line, None, _encoding_error(exc.line, exc.error, whole_file=True)
            except csv.Error as exc:
                yield (
                    reader.line_num,
                    None,
                    LineError(reader.line_num, "(csv)", f"not valid CSV: {exc}", whole_file=True),
                )
            return
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json_loads(_decoded(raw, number)), None
            except UnicodeDecodeError as exc:
                yield number, None, _encoding_error(number, exc, whole_file=False)
            except JsonInputError as exc:
                yield number, None, LineError(number, "(json)", str(exc))


def iter_records(
    path: str | Path, kind: str, *, project: Project, check_keys: frozenset[str], fmt: str | None = None
) -> Iterator[Record | LineError]:
    """Each line of the file as a validated Record, or a LineError saying what is wrong with it.

    `check_keys` are the project's check keys (grouped rankings may answer only those).
    """
    fmt = detect_format(path, fmt)
    if fmt == "csv" and kind not in (ImportJob.Kind.PROMPTS, ImportJob.Kind.DEMONSTRATIONS):
        yield LineError(
            1, "(file)", f"{kind} are imported from JSONL only; CSV is for prompts and demonstrations", whole_file=True
        )
        return
    for number, obj, error in _raw_lines(path, fmt):
        if error is not None:
            yield error
            continue
        try:
            yield parse_line(obj, kind, line=number, project=project, check_keys=check_keys)
        except KMismatch as exc:
            yield LineError(number, exc.field, exc.message, k_got=exc.got)
        except FieldError as exc:
            yield LineError(number, exc.field, exc.message)


def k_mismatch_summary(
    project: Project, got: int, field_name: str, lines: list[int], count: int, total: int
) -> LineError:
    """One error for every line with `got` completions instead of K: `lines` are the first of them, `count` all."""
    k = project.completions_per_task
    if count == total and count > 1:
        subject = f"every line has {got} completions"
    elif count == 1:
        subject = f"has {got} completions"
    else:
        shown = ", ".join(map(str, lines)) + (", …" if count > len(lines) else "")
        subject = f"{count} lines have {got} completions (lines {shown})"
    return LineError(
        lines[0],
        field_name,
        f"{subject}, but project {project.name!r} ranks K={k} per task: "
        f"give exactly {k} per line, or import into a project with K={got}",
    )


def count_lines(path: str | Path) -> int:
    """Non-blank lines (cheap, streamed): decides whether an upload runs in the background."""
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                n += 1
    return n
