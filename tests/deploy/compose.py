"""Reads docker-compose.yml the way `docker compose` does: ${VAR} interpolation, YAML merge keys, services."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = BASE_DIR / "docker-compose.yml"

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME
_VARIABLE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<plain>\w+))")


class InterpolationError(ValueError):
    """A ${NAME:?message} whose variable is missing: `docker compose` refuses to start with this message."""


def interpolate(text: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        if match["dollar"]:
            return "$"
        name = match["braced"] or match["plain"]
        value, op = variables.get(name), match["op"]
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op and op.endswith("-"):
            return interpolate(match["arg"], variables) if missing else value
        if op and op.endswith("?"):
            if missing:
                raise InterpolationError(f"{name}: {match['arg']}")
            return value
        return value or ""

    return _VARIABLE.sub(replace, text)


def _interpolate_tree(node: Any, variables: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, variables) for value in node]
    return node


def load(variables: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose document with ${...} filled in from `variables` (what a shell or an .env file gives)."""
    return _interpolate_tree(yaml.safe_load(path.read_text()), variables)


def _strings(node: Any):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def variable_names(path: Path = COMPOSE_FILE) -> set[str]:
    """Every variable the file's values interpolate (what .env.example must document)."""
    return {
        m["braced"] or m["plain"]
        for text in _strings(yaml.safe_load(path.read_text()))
        for m in _VARIABLE.finditer(text)
        if not m["dollar"]
    }


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def environment(self) -> dict[str, str]:
        env = self.spec.get("environment") or {}
        if isinstance(env, list):  # the ["NAME=value", ...] form
            env = dict(item.split("=", 1) for item in env)
        return {key: "" if value is None else str(value) for key, value in env.items()}

    @property
    def named_volumes(self) -> dict[str, str]:
        """Mount target -> volume name, for the named volumes (short syntax "name:/path[:mode]")."""
        mounts = {}
        for entry in self.spec.get("volumes") or []:
            if isinstance(entry, dict):
                if entry.get("type", "volume") == "volume":
                    mounts[entry["target"]] = entry["source"]
                continue
            source, target = entry.split(":")[:2]
            if not source.startswith((".", "/", "~")):
                mounts[target] = source
        return mounts

    @property
    def command(self) -> list[str]:
        command = self.spec.get("command")
        return shlex.split(command) if isinstance(command, str) else list(command or [])

    @property
    def healthcheck(self) -> list[str] | None:
        """The healthcheck as an argv: CMD runs its words, CMD-SHELL runs its string through sh -c."""
        test = (self.spec.get("healthcheck") or {}).get("test")
        if not test:
            return None
        if isinstance(test, str):
            return ["sh", "-c", test]
        kind, *rest = test
        return ["sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest

    def depends_on(self) -> dict[str, str]:
        deps = self.spec.get("depends_on") or {}
        if isinstance(deps, list):
            return {name: "service_started" for name in deps}
        return {name: (cond or {}).get("condition", "service_started") for name, cond in deps.items()}


def services(document: dict[str, Any]) -> dict[str, Service]:
    return {name: Service(name, spec) for name, spec in document["services"].items()}
