"""Log lines carry time, level and logger in every process (Django, a Celery worker); LOG_FORMAT=json makes them JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from config.logs import log_settings

BASE_DIR = Path(__file__).resolve().parents[2]
LOG_ONE_LINE = (
    "import logging, django; django.setup(); logging.getLogger('rlhf.check').warning('hello from %s', 'the check')"
)


def app_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL")}
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings", **extra}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_lines_name_time_level_logger_and_message():
    result = subprocess.run(
        [sys.executable, "-c", LOG_ONE_LINE],
        env=app_env(LOG_FORMAT="json"),
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("{") for line in lines), result.stderr  # nothing but JSON lines
    record = next(r for r in json_lines(result.stderr) if r["logger"] == "rlhf.check")
    assert record["level"] == "WARNING"
    assert record["message"] == "hello from the check"
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None


def test_text_lines_by_default_name_time_level_and_logger():
    result = subprocess.run(
        [sys.executable, "-c", LOG_ONE_LINE], env=app_env(), cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING rlhf\.check: hello from the check$", result.stderr, re.MULTILINE
    ), result.stderr


def test_a_celery_worker_logs_json_through_djangos_config(tmp_path):
    """A real worker process (`celery -A config worker`, as make run and compose start it) on the test Redis:
    its own records (connecting, ready) come out as JSON lines, Celery's --loglevel notwithstanding."""
    queue = f"logcheck-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--pool",
                "solo",
                "--loglevel",
                "DEBUG",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            # As root (CI), Celery warns so through `warnings` before it has read any configuration, logging
            # included; the image runs the workers as an unprivileged user.
            env=app_env(
                LOG_FORMAT="json",
                LOG_LEVEL="INFO",
                PYTHONWARNINGS="ignore:You're running the worker with superuser privileges",
            ),
            cwd=BASE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            if any(r["message"].endswith("ready.") for r in json_lines(log.read_text(errors="replace"))):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the worker did not log 'ready' as JSON (exit {worker.poll()}):\n{log.read_text()[-3000:]}")
    finally:
        worker.terminate()
        worker.wait(30)
    records = json_lines(log.read_text())
    assert {"timestamp", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"].startswith("celery.") and r["level"] == "INFO" for r in records)
    assert not any(r["level"] == "DEBUG" for r in records), "LOG_LEVEL=INFO, not Celery's --loglevel, sets the level"
    stray = [line for line in log.read_text().splitlines() if line.strip() and not line.startswith("{")]
    assert not stray, stray


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("LOG_FORMAT", "yaml", "LOG_FORMAT must be one of text, json"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be DEBUG, INFO"),
    ],
)
def test_a_wrong_log_setting_is_refused_with_what_is_allowed(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        log_settings()
