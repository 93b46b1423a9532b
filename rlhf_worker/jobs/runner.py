"""Runs one training job in a worker: status transitions, throttled progress, heartbeat, cancel."""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
import traceback
from typing import Any, Callable, TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from config.errors import NON_FIELD, ServiceError
from rlhf_worker.jobs import job_module
from config.db import drop_broken_connection
from rlhf_worker.jobs.db_retry import DatabaseUnavailable, with_db_retry
from rlhf_worker.models import JobMetric, ModelVersion, TrainingJob
from rlhf_worker.services.autopilot import job_ended_notify
from rlhf_worker.training.config_base import config_from_dict

logger = logging.getLogger(__name__)
LOG_TAIL_CHARS = 20_000
T = TypeVar("T")


class JobCancelled(Exception):
    """Raised inside a job body to stop at once when a cancel was requested."""


class JobContext:
    """What a job body gets: the validated config, an output folder, and progress/cancel hooks."""

    def __init__(self, job: TrainingJob, config: Any, *, write_interval: float = 2.0):
        self.job = job
        self.config = config
        self.write_interval = write_interval
        self.out_dir = job.output_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._started = time.monotonic()
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._pending_points: list[tuple[int, str, float]] = []  # (step, key, value) not yet written
        self._pending_log: list[str] = []
        self._state: dict[str, Any] = {}

    # -- called by job bodies ------------------------------------------------------------------
    def report(
        self, step: int, total: int, metrics: dict[str, float] | None = None, samples: list | None = None
    ) -> None:
        """Record progress and metrics; the row is written at most every `write_interval` seconds."""
        step, total = int(step), max(int(total), 0)
        for key, value in (metrics or {}).items():
            if value is None or not math.isfinite(float(value)):
                continue
            self._pending_points.append((step, key, float(value)))
            self._state.setdefault("summary", {})[key] = float(value)
        self._state["step"], self._state["total"] = step, total
        if samples:
            self._state["samples"] = list(samples)[-20:]
        if time.monotonic() - self._last_write >= self.write_interval or (total and step >= total):
            self.flush()

    def log(self, text: str) -> None:
        logger.info("job %s: %s", self.job.pk, text)
        self._pending_log.append(f"[{timezone.now():%H:%M:%S}] {text}")
        if time.monotonic() - self._last_write >= self.write_interval:
            self.flush()

    def should_stop(self) -> bool:
        """True once a cancel was requested (checked against the row at most once a second)."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancelled = with_db_retry(
                lambda: TrainingJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists(),
                what=f"job {self.job.pk}: cancel check",
            )
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self.should_stop():
            raise JobCancelled()

    def db(self, write: Callable[[], T], what: str) -> T:
        """Run a job body's own database write (e.g. registering the model version) so it survives a database restart."""
        return with_db_retry(write, what=f"job {self.job.pk}: {what}")

    # -- bookkeeping ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write progress, summary, samples, log lines and metric points in one transaction (retried as a whole
        across a database restart; what was pending stays pending until it is committed)."""
        self._last_write = time.monotonic()
        updates: dict[str, Any] = {}
        step, total = self._state.get("step"), self._state.get("total")
        if step is not None:
            updates["step"] = step
            updates["total_steps"] = total
            if total:
                updates["progress"] = min(1.0, step / total)
                elapsed = time.monotonic() - self._started
                updates["eta_seconds"] = elapsed / step * (total - step) if step else None
        summary = None
        if "summary" in self._state:
            summary = {**(self.job.summary or {}), **self._state["summary"]}
            updates["summary"] = summary
        if "samples" in self._state:
            updates["samples"] = self._state["samples"]
        log_lines, points = list(self._pending_log), list(self._pending_points)
        log = (self.job.log + "\n" + "\n".join(log_lines)).strip()[-LOG_TAIL_CHARS:] if log_lines else None
        if log is not None:
            updates["log"] = log

        def write() -> None:
            with transaction.atomic():
                TrainingJob.objects.filter(pk=self.job.pk).update(heartbeat_at=timezone.now(), **updates)
                # Idempotent: a retry of a write that did commit (its reply lost) replaces the same points. A
                # series reported twice at one step keeps the later value (one row may take one update per statement).
                latest = {(s, k): v for s, k, v in points}
                JobMetric.objects.bulk_create(
                    (JobMetric(job_id=self.job.pk, step=s, key=k, value=v) for (s, k), v in latest.items()),
                    update_conflicts=True,
                    unique_fields=["job", "key", "step"],
                    update_fields=["value"],
                )

        with_db_retry(write, what=f"job {self.job.pk}: progress write")
        if summary is not None:
            self.job.summary = summary
        if log is not None:
            self.job.log = log
        del self._pending_log[: len(log_lines)]
        del self._pending_points[: len(points)]


class _Heartbeat(threading.Thread):
    """Keeps heartbeat_at fresh while a long step runs, so the job is not mistaken for lost."""

    def __init__(self, job_id: int, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id, self.interval = job_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    TrainingJob.objects.filter(pk=self.job_id, status=TrainingJob.Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as exc:  # the database restarted: beat again on a new connection next time
                    logger.warning("job %s: heartbeat not written (%s); reconnecting", self.job_id, str(exc).strip())
                    drop_broken_connection()
        finally:
            close_old_connections()
            from django.db import connection

            connection.close()


def execute_job(job_id: int, *, celery_task_id: str = "", worker: str = "") -> str:
    """Run the job's body and record how it ended; returns the final status.

    `worker` is the Celery node name (what the sweep asks Celery about); the host name without one."""
    worker = worker or socket.gethostname()
    claimed = with_db_retry(
        lambda: TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.QUEUED).update(
            status=TrainingJob.Status.RUNNING,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            worker=worker,
            celery_task_id=celery_task_id,
        ),
        what=f"job {job_id}: claim",
    )
    job = with_db_retry(lambda: TrainingJob.objects.filter(pk=job_id).first(), what=f"job {job_id}: read")
    if job is None:  # its start was refused after all (the broker failed to confirm the message): nothing to run
        logger.warning("job %s does not exist: not running it", job_id)
        return "missing"
    if not claimed:
        logger.warning("job %s is %s, not queued: not running it", job_id, job.status)
        return job.status
    if job.cancel_requested:
        _finish(job, TrainingJob.Status.CANCELLED)
        return TrainingJob.Status.CANCELLED

    heartbeat = _Heartbeat(job.pk, settings.JOB_HEARTBEAT_SECONDS)
    heartbeat.start()
    ctx = None
    try:
        module = job_module(job.kind)
        # The start service stored this config validated and normalised: rebuild it, do not validate it again
        # (what it refers to is read afresh by the job body; see rlhf_worker/jobs/__init__.py).
        config = config_from_dict(module.Config, job.config, validate=False)
        ctx = JobContext(job, config)
        ctx.log(f"started on {worker}")
        version = module.run(job, ctx)
        ctx.flush()
        if ctx.should_stop():
            _finish(job, TrainingJob.Status.CANCELLED, log="cancelled")
            return TrainingJob.Status.CANCELLED
        _finish(job, TrainingJob.Status.SUCCEEDED, version=version, log="succeeded")
        return TrainingJob.Status.SUCCEEDED
    except JobCancelled:
        if ctx:
            ctx.flush()
        _finish(job, TrainingJob.Status.CANCELLED, log="cancelled")
        return TrainingJob.Status.CANCELLED
    except Exception as exc:  # a job failure is data for the dashboard, not a worker crash
        logger.exception("job %s failed", job_id)
        if ctx and not isinstance(exc, DatabaseUnavailable):  # after a long outage, do not wait a second bound
            try:
                ctx.flush()
            except Exception:  # the original error matters more than a failed progress write
                logger.exception("job %s: could not write final progress", job_id)
        _finish(job, TrainingJob.Status.FAILED, error=f"{_failure_line(exc)}\n\n{traceback.format_exc()}")
        return TrainingJob.Status.FAILED
    finally:
        heartbeat.stopped.set()


def _failure_line(exc: Exception) -> str:
    """The first line of a failed job's error; a refusal names the setting it is about (e.g. a deleted version)."""
    if isinstance(exc, ServiceError) and exc.field != NON_FIELD:
        return f"{type(exc).__name__}: {exc.field}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _finish(
    job: TrainingJob, status: str, *, version: ModelVersion | None = None, error: str = "", log: str = ""
) -> None:
    updates: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "heartbeat_at": timezone.now()}
    if status == TrainingJob.Status.SUCCEEDED:
        updates["progress"] = 1.0
        updates["eta_seconds"] = 0
    if version is not None:
        updates["result_version"] = version
    if error:
        updates["error"] = error[-LOG_TAIL_CHARS:]
    line = f"[{timezone.now():%H:%M:%S}] {log or status}"

    def write() -> None:
        with transaction.atomic():
            current = TrainingJob.objects.select_for_update().only("log").get(pk=job.pk).log
            TrainingJob.objects.filter(pk=job.pk).update(
                **updates, log=(current + "\n" + line).strip()[-LOG_TAIL_CHARS:]
            )

    with_db_retry(write, what=f"job {job.pk}: final status")
    job_ended_notify(job_id=job.pk)  # its autopilot cycle (if any) starts the next step now, not at the next tick
