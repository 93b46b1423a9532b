"""Bulk import of prompts, completions, demonstrations and preference labels: validate a file, then insert it.

Two streaming passes over the file, so memory stays flat in the file's size:

1. **Validate** every line (no writes; `labeling_app.imports.parsing` reads them). By default any
   bad line fails the whole file with ImportRejected; errors name the line and the field (the
   first `MAX_ERRORS` are kept, all are counted; a wrong completion count is one error for the
   file). With `skip_invalid` the bad lines are skipped and every one is reported instead.
2. **Insert** in batches of `batch_size` lines inside one transaction (`import_writes`), which
   reuses or skips whatever is already there, so the same file twice changes nothing.

Import jobs wrap this for uploads: small files run inline, big ones in a Celery job with progress.
A running job keeps a heartbeat; `imports_mark_lost` marks jobs whose worker died, Retry runs the
saved file again as a new job, and `import_uploads_purge` deletes old rejected uploads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.db import drop_broken_connection
from config.errors import ServiceError
from labeling_app.imports.parsing import KINDS, LineError, Record, count_lines, iter_records, k_mismatch_summary
from labeling_app.models import ImportJob, ImportSource, Project
from labeling_app.services.import_writes import ImportResult, insert_batch

logger = logging.getLogger(__name__)

MAX_ERRORS = 100
# A skip-invalid import keeps the reason of every skipped line on its job, up to this many (all are counted).
MAX_SKIPPED_KEPT = 10_000
K_LINES_SHOWN = 10


class ImportRejected(ServiceError):
    """The file was rejected as a whole; nothing was written.

    `line_errors` lists the first MAX_ERRORS problems (each names its line and field),
    `error_count` counts the bad lines, `lines` is the number of data lines read.
    """

    def __init__(
        self,
        line_errors: list[LineError],
        error_count: int,
        lines: int,
        *,
        no_valid_lines: bool = False,
        truncated: bool | None = None,
    ):
        self.line_errors, self.error_count, self.lines = line_errors, error_count, lines
        truncated = error_count > len(line_errors) if truncated is None else truncated
        more = f" (showing the first {len(line_errors)})" if truncated else ""
        what = "no valid lines" if no_valid_lines else f"{error_count} bad line(s)"
        super().__init__(
            f"{what} in {lines} lines; nothing was imported{more}:\n" + "\n".join(str(e) for e in line_errors),
            field="file",
        )


@dataclass
class Validation:
    """The first pass's verdict on a file: how many lines were read and which were bad."""

    lines: int = 0
    valid: int = 0
    invalid_count: int = 0
    invalid_lines: list[LineError] = field(
        default_factory=list
    )  # skip-invalid: each skipped line, up to MAX_SKIPPED_KEPT


class _Problems:
    """Collects a file's bad lines; lines with the wrong number of completions are summed up per count."""

    def __init__(self, keep: int):
        self.keep = keep
        self.other: list[LineError] = []  # everything but K mismatches, the first `keep`
        self.k_lines: list[LineError] = []  # K mismatches line by line, the first `keep`
        self.k_groups: dict[int, tuple[str, list[int], int]] = {}  # got -> (field, first lines, count)
        self.count = self.other_count = 0
        self.whole_file = False

    def add(self, error: LineError) -> None:
        self.count += 1
        self.whole_file = self.whole_file or error.whole_file
        if error.k_got is None:
            self.other_count += 1
            if len(self.other) < self.keep:
                self.other.append(error)
            return
        if len(self.k_lines) < self.keep:
            self.k_lines.append(error)
        field_name, lines, n = self.k_groups.get(error.k_got, (error.field, [], 0))
        if len(lines) < K_LINES_SHOWN:
            lines.append(error.line)
        self.k_groups[error.k_got] = (field_name, lines, n + 1)

    def rejection(self, project: Project, total: int, *, no_valid_lines: bool) -> ImportRejected:
        """The file refused: one error per wrong completion count, and the other bad lines, by line."""
        k = [k_mismatch_summary(project, got, f, lines, n, total) for got, (f, lines, n) in self.k_groups.items()]
        shown = sorted(k + self.other, key=lambda e: e.line)[:MAX_ERRORS]
        return ImportRejected(
            shown, self.count, total, no_valid_lines=no_valid_lines, truncated=self.other_count + len(k) > len(shown)
        )

    def every_line(self) -> list[LineError]:
        """Each bad line with its own reason, by line, for a skip-invalid import's report."""
        return sorted(self.other + self.k_lines, key=lambda e: e.line)[: self.keep]


def _check_keys(project: Project) -> frozenset[str]:
    return frozenset(project.checks.values_list("key", flat=True))


def validate_file(
    path: str | Path,
    kind: str,
    *,
    project: Project,
    fmt: str | None = None,
    skip_invalid: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Validation:
    """First pass: how many lines are valid, or ImportRejected listing what to fix.

    With skip_invalid the bad lines are returned instead (the file is still refused when no line
    is valid or an error stops the file from being read).
    """
    problems = _Problems(MAX_SKIPPED_KEPT if skip_invalid else MAX_ERRORS)
    lines = 0
    for item in iter_records(path, kind, project=project, check_keys=_check_keys(project), fmt=fmt):
        lines += 1
        if isinstance(item, LineError):
            problems.add(item)
        if on_progress and lines % 5000 == 0:
            on_progress(lines)
    if lines == 0:
        raise ImportRejected([LineError(1, "(file)", "the file has no data lines")], 1, 0)
    valid = lines - problems.count
    if problems.count and (not skip_invalid or valid == 0 or problems.whole_file):
        raise problems.rejection(project, lines, no_valid_lines=skip_invalid and valid == 0)
    return Validation(lines=lines, valid=valid, invalid_count=problems.count, invalid_lines=problems.every_line())


def import_file(
    *,
    project: Project,
    kind: str,
    path: str | Path,
    source_name: str = "",
    user=None,
    fmt: str | None = None,
    batch_size: int = 1000,
    skip_invalid: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    before_commit: Callable[[ImportResult], None] | None = None,
    job_id: int | None = None,
) -> ImportResult:
    """Validate `path` as a whole, then insert it in one transaction; raises ImportRejected.

    on_progress(phase, done_lines, total_lines) is called as the passes advance (phase
    "validating", then "importing": its first call, with done=0, comes before the insert
    transaction opens). before_commit(result) runs inside that transaction once every line is
    in, so what it writes commits together with the imported rows, or not at all. The rows created
    carry `job_id` (the ImportJob running this), which is what lets the job be undone.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == ImportJob.Kind.PREFERENCES and not source_name.strip():
        raise ServiceError(
            "preference labels need a source name (the dataset or tool they came from), e.g. 'hh-rlhf'",
            field="source_name",
        )
    source = (source_name or Path(path).name)[:200]
    checked = validate_file(
        path,
        kind,
        project=project,
        fmt=fmt,
        skip_invalid=skip_invalid,
        on_progress=(lambda n: on_progress("validating", n, 0)) if on_progress else None,
    )
    result = ImportResult(
        lines=checked.lines, invalid_skipped=checked.invalid_count, invalid_lines=checked.invalid_lines
    )
    user_id = getattr(user, "pk", None)
    if on_progress:
        on_progress("importing", 0, checked.valid)
    with transaction.atomic():
        import_source = None
        if kind == ImportJob.Kind.PREFERENCES:
            import_source, _ = ImportSource.objects.get_or_create(name=source_name.strip()[:200])
        batch: list[Record] = []
        done = 0
        for record in iter_records(path, kind, project=project, check_keys=_check_keys(project), fmt=fmt):
            if isinstance(record, LineError):
                if skip_invalid:
                    continue
                raise RuntimeError(f"the file changed between validation and import: {record}")
            batch.append(record)
            if len(batch) >= batch_size:
                insert_batch(
                    project,
                    kind,
                    batch,
                    result,
                    source=source,
                    user_id=user_id,
                    import_source=import_source,
                    job_id=job_id,
                )
                done += len(batch)
                batch = []
                if on_progress:
                    on_progress("importing", done, checked.valid)
        if batch:
            insert_batch(
                project, kind, batch, result, source=source, user_id=user_id, import_source=import_source, job_id=job_id
            )
            done += len(batch)
        if on_progress:
            on_progress("importing", done, checked.valid)
        if before_commit:
            before_commit(result)
    return result


# ---------------------------------------------------------------------------------------------
# Import jobs: an upload saved under IMPORT_DIR, run inline when small, by Celery when big

UPLOAD_NAME = re.compile(r"^[0-9a-f]{32}\.(jsonl|csv)$")


def import_dir() -> Path:
    from config.env import VAR_DIR

    path = Path(getattr(settings, "IMPORT_DIR", VAR_DIR / "imports"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def async_threshold() -> int:
    """Files with more lines than this run as a Celery job (queue "default")."""
    return int(getattr(settings, "IMPORT_ASYNC_LINES", 2000))


def _upload_path(original_name: str) -> Path:
    suffix = ".csv" if original_name.lower().endswith(".csv") else ".jsonl"
    return import_dir() / f"{uuid.uuid4().hex}{suffix}"


def import_job_create(
    *,
    project: Project,
    kind: str,
    upload,
    original_name: str,
    source_name: str = "",
    user=None,
    skip_invalid: bool = False,
) -> ImportJob:
    """Save the upload (any file-like object or Django UploadedFile) and start its import.

    Small files are imported before this returns; bigger ones are queued after the commit.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    path = _upload_path(original_name)
    with open(path, "wb") as out:
        chunks = upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b"")
        for chunk in chunks:
            out.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
    return _job_start(
        ImportJob(
            project=project,
            kind=kind,
            file_path=str(path),
            original_name=original_name.replace("\x00", "")[:300],
            source_name=source_name.strip(),
            skip_invalid=skip_invalid,
            created_by=user,
        )
    )


def _job_start(job: ImportJob) -> ImportJob:
    job.total_lines = count_lines(job.file_path)
    job.save()
    if job.total_lines > async_threshold():
        from labeling_app.tasks import import_run

        transaction.on_commit(lambda: import_run.delay(job.pk))  # the default queue ("default")
    else:
        import_job_run(job_id=job.pk)
        job.refresh_from_db()
    return job


def import_job_retry(*, job: ImportJob, user, skip_invalid: bool | None = None) -> ImportJob:
    """Run a failed or lost job's saved file again, as a new job (with its own copy of the file)."""
    if job.status not in (ImportJob.Status.FAILED, ImportJob.Status.LOST):
        state = "still running" if job.status not in ImportJob.FINISHED else "already imported"
        raise ServiceError(f"This import is {state}; only a failed or lost import can be retried.")
    if not job.file_path or not os.path.exists(job.file_path):
        raise ServiceError(
            f"The uploaded file is no longer kept (rejected uploads are deleted after "
            f"{retention_days()} days); upload it again."
        )
    path = _upload_path(job.file_path)
    shutil.copyfile(job.file_path, path)
    return _job_start(
        ImportJob(
            project=job.project,
            kind=job.kind,
            file_path=str(path),
            original_name=job.original_name,
            source_name=job.source_name,
            created_by=user,
            skip_invalid=job.skip_invalid if skip_invalid is None else skip_invalid,
        )
    )


class _Heartbeat(threading.Thread):
    """Writes the job's heartbeat_at every `interval` seconds from a connection of its own.

    The insert pass runs in one long transaction, whose writes nobody else sees until it ends: a
    heartbeat written from there would look dead the whole time.
    """

    def __init__(self, job_id: int, interval: float):
        super().__init__(daemon=True, name=f"import-heartbeat-{job_id}")
        self.job_id, self.interval = job_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    _beat(self.job_id)
                except Exception:  # a missed beat is retried next time; the import itself decides the outcome
                    logger.warning("import job %s: heartbeat not written", self.job_id, exc_info=True)
                    # A connection that PostgreSQL dropped (a restart) stays broken in this thread: the next beat
                    # opens a fresh one instead of failing until the job is wrongly marked lost.
                    drop_broken_connection()
        finally:
            connection.close()


def _beat(job_id: int, **fields) -> int:
    return ImportJob.objects.filter(pk=job_id, status__in=ImportJob.RUNNING).update(
        heartbeat_at=timezone.now(), **fields
    )


def import_job_run(*, job_id: int) -> ImportJob:
    """Run one import job to the end, recording success or the errors on its row."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.VALIDATING, heartbeat_at=timezone.now()
    )
    job = ImportJob.objects.select_related("project", "created_by").get(pk=job_id)
    if not claimed:
        return job  # a redelivered task, or a second worker: the job already ran or runs elsewhere

    def progress(phase: str, done: int, total: int) -> None:
        cache.set(
            job.progress_cache_key, {"phase": phase, "done": done, "total": total or job.total_lines}, timeout=3600
        )
        if phase == "validating":
            _beat(job.pk, processed_lines=done)
        elif done == 0:  # the insert transaction is not open yet: the row can still say so
            _beat(job.pk, status=ImportJob.Status.IMPORTING)

    def succeed(result: ImportResult) -> None:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.SUCCEEDED,
            result=result.as_dict(),
            processed_lines=result.lines,
            total_lines=result.lines,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            errors=[e.as_dict() for e in result.invalid_lines],
            error_count=result.invalid_skipped,
        )

    def fail(errors: list[dict], error_count: int = 1, **fields) -> None:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED, errors=errors, error_count=error_count, finished_at=timezone.now(), **fields
        )

    heartbeat = _Heartbeat(job.pk, float(getattr(settings, "JOB_HEARTBEAT_SECONDS", 5)))
    heartbeat.start()
    try:
        import_file(
            project=job.project,
            kind=job.kind,
            path=job.file_path,
            source_name=job.source_name or "",
            user=job.created_by,
            skip_invalid=job.skip_invalid,
            on_progress=progress,
            before_commit=succeed,
            job_id=job.pk,
        )
    except ImportRejected as exc:
        fail([e.as_dict() for e in exc.line_errors], exc.error_count, processed_lines=exc.lines)
    except ServiceError as exc:
        fail([{"line": 0, "field": exc.field, "message": exc.message}])
    except (ValueError, OSError) as exc:
        fail([{"line": 0, "field": "(file)", "message": str(exc)}])
    except Exception as exc:
        # Never leave a job "importing" forever: record the failure, then let the worker log the traceback.
        fail([{"line": 0, "field": "(import)", "message": f"unexpected error, nothing was imported: {exc}"}])
        cache.delete(job.progress_cache_key)
        raise
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=10)
    cache.delete(job.progress_cache_key)
    job.refresh_from_db()
    return job


# ---------------------------------------------------------------------------------------------
# Housekeeping on a schedule: jobs whose worker died, and old rejected uploads


def lost_after_seconds() -> float:
    return float(getattr(settings, "JOB_LOST_AFTER_SECONDS", 120))


def imports_mark_lost(*, now=None) -> int:
    """Running import jobs whose heartbeat stopped (the worker died) become lost, with the reason; returns how many.

    Nothing of a lost job was imported: a job's success is written in the transaction that writes
    its rows, and a dead worker's transaction is rolled back by PostgreSQL.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=lost_after_seconds())
    silent = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    count = 0
    for job in ImportJob.objects.filter(silent, status__in=ImportJob.RUNNING):
        last = job.heartbeat_at or job.created_at
        reason = (
            f"the worker stopped while {job.status} this file: no heartbeat since {last:%Y-%m-%d %H:%M:%S} UTC "
            f"(more than {lost_after_seconds():.0f} s); nothing was imported. Retry runs the same file again."
        )
        count += ImportJob.objects.filter(silent, pk=job.pk, status=job.status).update(
            status=ImportJob.Status.LOST,
            finished_at=now,
            error_count=1,
            errors=[{"line": 0, "field": "(worker)", "message": reason}],
        )
    return count


def retention_days() -> float:
    return float(getattr(settings, "IMPORT_RETENTION_DAYS", 30))


def import_uploads_purge(*, now=None) -> int:
    """Delete the saved files of failed and lost imports finished more than IMPORT_RETENTION_DAYS ago,
    and uploads no job refers to that are as old; returns how many files went.

    A succeeded import keeps its file: it is the record of what was imported.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=retention_days())
    count = 0
    old = ImportJob.objects.filter(
        status__in=(ImportJob.Status.FAILED, ImportJob.Status.LOST), finished_at__lt=cutoff
    ).exclude(file_path="")
    for job in old:
        try:
            os.remove(job.file_path)
        except FileNotFoundError:
            pass
        count += ImportJob.objects.filter(pk=job.pk, file_path=job.file_path).update(file_path="", file_purged_at=now)
    folder = import_dir()
    referenced = set(ImportJob.objects.exclude(file_path="").values_list("file_path", flat=True))
    for path in folder.iterdir():
        if (
            UPLOAD_NAME.match(path.name)
            and str(path) not in referenced
            and path.is_file()
            and path.stat().st_mtime < cutoff.timestamp()
        ):
            path.unlink(missing_ok=True)
            count += 1
    return count
