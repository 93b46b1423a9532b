"""Waiting for a training job in tests: the one poll of its row, until a condition holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable

from rlhf_worker.models import TrainingJob


def finished(job: TrainingJob) -> bool:
    return job.is_finished


def status_in(*statuses: str) -> Callable[[TrainingJob], bool]:
    """A condition for `wait_for`: the job's status is one of these."""
    return lambda job: job.status in statuses


def wait_for(
    job: TrainingJob, until: Callable[[TrainingJob], bool] = finished, *, timeout: float = 120.0
) -> TrainingJob:
    """Re-read the job's row every 0.1 s until `until(job)` holds; the test fails if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(
        f"job {job.pk} stayed {job.status} at step {job.step}/{job.total_steps} for {timeout:.0f} s: {job.error}"
    )


def form_defaults(config_cls) -> dict:
    """What a job's start form posts when every field keeps its default (as the browser sends it)."""
    from rlhf_worker.training.config_base import config_fields

    data = {}
    for info in config_fields(config_cls):
        default = info["default"]
        if isinstance(default, bool):
            if default:
                data[info["name"]] = "on"
        elif default is not None:
            data[info["name"]] = ", ".join(map(str, default)) if isinstance(default, list) else str(default)
    return data
