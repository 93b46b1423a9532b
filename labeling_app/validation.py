"""Rules every stored text, JSON value and ranking obeys, shared by the API, the researcher pages and imports."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable

from django.conf import settings

NUL = "\x00"
NUL_MESSAGE = "contains a NUL character (\\u0000), which the database cannot store; remove it"
DEFAULT_MAX_TEXT_CHARS = 100_000


def max_text_chars() -> int:
    """The longest prompt, completion or demonstration accepted (settings.MAX_TEXT_CHARS, from the environment)."""
    return int(getattr(settings, "MAX_TEXT_CHARS", DEFAULT_MAX_TEXT_CHARS))


def text_problem(value: str) -> str | None:
    """What is wrong with a prompt, completion or demonstration text before it may be stored, or None."""
    if NUL in value:
        return NUL_MESSAGE
    limit = max_text_chars()
    if len(value) > limit:
        return f"is {len(value):,} characters long; at most {limit:,} characters are allowed (MAX_TEXT_CHARS)"
    return None


def short_text_problem(value: str, max_length: int) -> str | None:
    """The same for a short label such as a model name stored in a column of `max_length` characters."""
    if NUL in value:
        return NUL_MESSAGE
    if len(value) > max_length:
        return f"is {len(value):,} characters long; at most {max_length} characters are allowed"
    return None


def json_value_problem(value: Any, *, max_depth: int) -> str | None:
    """What keeps a decoded JSON value out of a jsonb column: a NUL in a key or string, or nesting deeper than max_depth.

    Walks the value with an explicit stack, so a deep value cannot exhaust Python's own.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return NUL_MESSAGE
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and NUL in key:
                        return NUL_MESSAGE
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


class JsonInputError(ValueError):
    """Text that cannot be read as JSON; the message says why in the user's terms."""


def _no_constant(name: str) -> None:
    raise JsonInputError(f"not valid JSON: {name} is not a JSON number")


def json_loads(raw: str, *, strict: bool = False) -> Any:
    """json.loads, with every way it can fail on hostile input turned into a JsonInputError.

    Besides syntax errors that covers nesting too deep for the parser (a RecursionError, not a
    ValueError) and integers longer than Python's int/str conversion limit (4,300 digits by default).
    `strict` also refuses NaN and Infinity, which are not JSON.
    """
    try:
        return json.loads(raw, parse_constant=_no_constant if strict else None)
    except RecursionError:
        raise JsonInputError(
            "nested too deeply to read (arrays or objects inside each other hundreds of levels deep)"
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise JsonInputError(f"not valid JSON: {exc.msg} at {where}") from None
    except JsonInputError:
        raise
    except ValueError as exc:
        if "digits" in str(exc):
            raise JsonInputError(f"a number has more than {sys.get_int_max_str_digits()} digits") from None
        raise JsonInputError(f"not valid JSON: {exc}") from None


def rank_gaps_problem(ranks: Iterable[int]) -> str | None:
    """Ranks must be dense, 1..m (ties share a rank, none is skipped); what is wrong with these, or None."""
    used = sorted(set(ranks))
    if not used or used == list(range(1, len(used) + 1)):
        return None
    missing = sorted(set(range(1, max(used) + 1)) - set(used))
    return (
        "Ranks must run 1, 2, 3… without gaps (tied completions share a rank): "
        f"nothing is ranked {', '.join(map(str, missing))}."
    )
