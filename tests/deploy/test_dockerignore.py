"""The image's build context (.dockerignore) keeps local state and secrets out and the app in."""

from __future__ import annotations

import re

import pytest

from tests.deploy.compose import BASE_DIR


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern rules: * and ? stay inside one path segment, ** spans any number of them."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (BASE_DIR / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        rules.append((keep, _pattern_regex(line.lstrip("!").strip("/"))))
    return rules


def excluded(path: str, rules) -> bool:
    """A path is left out when the last rule matching it, or one of its parent folders, excludes it."""
    parts = path.split("/")
    result = False
    for keep, regex in rules:
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not keep
    return result


@pytest.mark.parametrize(
    "path",
    [
        "var/secret_key",
        "var/demo_logins.json",
        "var/postgres/data/PG_VERSION",
        "var/valkey/appendonly.aof",
        "var/imports/upload.jsonl",
        "var/models/policy/model.safetensors",
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        ".env.production",
        "test-artifacts/labeling-final.png",
        "config/__pycache__/settings.cpython-311.pyc",
        "tests/conftest.py",
    ],
)
def test_local_state_secrets_and_tooling_stay_out_of_the_image(path):
    assert excluded(path, dockerignore_rules())


@pytest.mark.parametrize(
    "path",
    [
        "manage.py",
        "requirements.txt",
        "requirements-models.txt",
        "config/settings.py",
        "config/health.py",
        "labeling_app/models.py",
        "rlhf_worker/training/ppo.py",
        "templates/base.html",
        "static/js/label_task.js",
        ".env.example",
    ],
)
def test_the_app_goes_into_the_image(path):
    assert not excluded(path, dockerignore_rules())


def test_the_dockerfile_copies_only_what_the_context_has():
    copied = re.findall(r"^COPY (?!\. \.)(.+) \./$", (BASE_DIR / "Dockerfile").read_text(), re.M)
    for source in " ".join(copied).split():
        assert (BASE_DIR / source).exists() and not excluded(source, dockerignore_rules()), source
