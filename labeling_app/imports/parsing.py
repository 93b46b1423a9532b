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

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from config.errors import ServiceError
from labeling_app.models import ImportJob, Project, prompt_content_hash

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


@dataclass
class LineError:
    """What is wrong with one line of a file: its number, the field, and what to fix."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message}"


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


def iter_records(path: str | Path, kind: str, *, project: Project, check_keys: frozenset[str],
                 fmt: str | None = None) -> Iterator[Record | LineError]:
    """Each line of the file as a validated Record, or a LineError saying what is wrong with it.

    `check_keys` are the project's check keys (grouped rankings may answer only those).
    """
    fmt = detect_format(path, fmt)
    if fmt == "csv" and kind not in (ImportJob.Kind.PROMPTS, ImportJob.Kind.DEMONSTRATIONS):
        yield LineError(1, "(file)", f"{kind} are imported from JSONL only; CSV is for prompts and demonstrations")
        return
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
