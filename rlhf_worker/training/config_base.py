"""Validation shared by every training config: dataclass fields become checked, field-named errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A config value is wrong; `field` names it so a form can show the message beside it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


T = TypeVar("T")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or value == "":
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        last_error: ConfigError | None = None
        for candidate in inner:
            try:
                return _coerce(name, value, candidate)
            except ConfigError as exc:
                last_error = exc
        raise last_error or ConfigError(name, "has the wrong type")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, "must be a list")
        item_type = args[0] if args else Any
        items = [_coerce(name, v, item_type) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off", ""):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(name, "must be true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(name, "must be a whole number")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be a whole number, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(name, f"must be a whole number, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(name, "must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(name, "must be text")
        return str(value)
    return value


def config_from_dict(cls: type[T], data: dict[str, Any] | None, *, validate: bool = True) -> T:
    """Build `cls` from user input: unknown keys and wrong types raise ConfigError naming the field, then
    `validate()` checks the values. `validate=False` only rebuilds a config stored after it was validated."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(unknown[0], f"unknown setting; allowed settings are {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(name, value, hints[name]) for name, value in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if validate and callable(check):
        check()
    return obj


NOT_ONE_FIELD = "__all__"  # the key of an error collect_config_errors cannot pin on one field
MAX_ERRORS = 20


def collect_config_errors(cls: type[T], data: dict[str, Any]) -> tuple[T | None, dict[str, str]]:
    """Validate with config_from_dict; on an error, put that field back to its default and try again, so a
    form or an API shows every wrong field at once (not only the first). Returns (config or None, errors)."""
    defaults = {f["name"]: f["default"] for f in config_fields(cls)}
    data, errors = dict(data), {}
    for _ in range(MAX_ERRORS):
        try:
            config = config_from_dict(cls, data)
        except ConfigError as exc:
            if exc.field in errors:  # its default is not valid either (e.g. a required choice)
                break
            errors[exc.field] = exc.message
            if exc.field in data and exc.field in defaults:
                data[exc.field] = defaults[exc.field]
            else:
                break
        except (TypeError, ValueError) as exc:  # a Config whose validate() raises plain errors
            errors.setdefault(NOT_ONE_FIELD, str(exc))
            break
        else:
            return (None if errors else config), errors
    return None, errors


def config_to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}


def config_fields(cls: type) -> list[dict[str, Any]]:
    """Describe each field (name, type, default, help) so a form can show every setting."""
    hints = typing.get_type_hints(cls)
    described = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        described.append(
            {"name": f.name, "type": hints[f.name], "default": default, "help": f.metadata.get("help", "")}
        )
    return described
