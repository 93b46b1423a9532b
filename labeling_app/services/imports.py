"""Bulk import of prompts, completions, demonstrations and preference labels: validate a file, then insert it.

Two streaming passes over the file, so memory stays flat in the file's size:

1. **Validate** every line (no writes; `labeling_app.imports.parsing` reads them). Any bad line
   fails the whole file with ImportRejected; errors name the line and the field (the first
   `MAX_ERRORS` are kept, all are counted).
2. **Insert** in batches of `batch_size` lines inside one transaction (`import_writes`).

Import jobs wrap this for uploads: small files run inline, big ones in a Celery job with progress.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.imports.parsing import KINDS, LineError, Record, count_lines, iter_records
from labeling_app.models import ImportJob, ImportSource, Project
from labeling_app.services.import_writes import ImportResult, insert_batch

MAX_ERRORS = 100


class ImportRejected(ServiceError):
    """The file was rejected as a whole; nothing was written.

    `line_errors` lists the first MAX_ERRORS bad lines (each names its line and field),
    `error_count` counts them all, `lines` is the number of data lines read.
    """

    def __init__(self, line_errors: list[LineError], error_count: int, lines: int):
        self.line_errors, self.error_count, self.lines = line_errors, error_count, lines
        more = f" (showing the first {len(line_errors)})" if error_count > len(line_errors) else ""
        super().__init__(f"{error_count} bad line(s) in {lines} lines; nothing was imported{more}:\n"
                         + "\n".join(str(e) for e in line_errors), field="file")


def _check_keys(project: Project) -> frozenset[str]:
    return frozenset(project.checks.values_list("key", flat=True))


def validate_file(path: str | Path, kind: str, *, project: Project, fmt: str | None = None,
                  on_progress: Callable[[int], None] | None = None) -> int:
    """First pass: the number of valid lines, or ImportRejected listing what to fix."""
    errors: list[LineError] = []
    error_count = lines = 0
    for item in iter_records(path, kind, project=project, check_keys=_check_keys(project), fmt=fmt):
        lines += 1
        if isinstance(item, LineError):
            error_count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(item)
        if on_progress and lines % 5000 == 0:
            on_progress(lines)
    if lines == 0:
        raise ImportRejected([LineError(1, "(file)", "the file has no data lines")], 1, 0)
    if error_count:
        raise ImportRejected(errors, error_count, lines)
    return lines


def import_file(*, project: Project, kind: str, path: str | Path, source_name: str = "", user=None,
                fmt: str | None = None, batch_size: int = 1000,
                on_progress: Callable[[str, int, int], None] | None = None) -> ImportResult:
    """Validate `path` as a whole, then insert it in one transaction; raises ImportRejected.

    on_progress(phase, done_lines, total_lines) is called as the passes advance
    (phase "validating" or "importing").
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == ImportJob.Kind.PREFERENCES and not source_name.strip():
        raise ServiceError("preference labels need a source name (the dataset or tool they came from), e.g. 'hh-rlhf'",
                           field="source_name")
    source = (source_name or Path(path).name)[:200]
    total = validate_file(path, kind, project=project, fmt=fmt,
                          on_progress=(lambda n: on_progress("validating", n, 0)) if on_progress else None)
    result = ImportResult(lines=total)
    user_id = getattr(user, "pk", None)
    with transaction.atomic():
        import_source = None
        if kind == ImportJob.Kind.PREFERENCES:
            import_source, _ = ImportSource.objects.get_or_create(name=source_name.strip()[:200])
        batch: list[Record] = []
        done = 0
        for record in iter_records(path, kind, project=project, check_keys=_check_keys(project), fmt=fmt):
            assert isinstance(record, Record), "the file changed between validation and import"
            batch.append(record)
            if len(batch) >= batch_size:
                insert_batch(project, kind, batch, result, source=source, user_id=user_id, import_source=import_source)
                done += len(batch)
                batch = []
                if on_progress:
                    on_progress("importing", done, total)
        if batch:
            insert_batch(project, kind, batch, result, source=source, user_id=user_id, import_source=import_source)
            done += len(batch)
        if on_progress:
            on_progress("importing", done, total)
    return result


# ---------------------------------------------------------------------------------------------
# Import jobs: an upload saved under the var dir, run inline when small, by Celery when big


def import_dir() -> Path:
    from config.env import VAR_DIR

    path = Path(getattr(settings, "IMPORT_DIR", VAR_DIR / "imports"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def async_threshold() -> int:
    """Files with more lines than this run as a Celery job (queue "default")."""
    return int(getattr(settings, "IMPORT_ASYNC_LINES", 2000))


def import_job_create(*, project: Project, kind: str, upload, original_name: str, source_name: str = "",
                      user=None) -> ImportJob:
    """Save the upload (any file-like object or Django UploadedFile) and start its import.

    Small files are imported before this returns; bigger ones are queued after the commit.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}")
    suffix = ".csv" if original_name.lower().endswith(".csv") else ".jsonl"
    path = import_dir() / f"{uuid.uuid4().hex}{suffix}"
    with open(path, "wb") as out:
        chunks = upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b"")
        for chunk in chunks:
            out.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
    job = ImportJob.objects.create(project=project, kind=kind, file_path=str(path), original_name=original_name[:300],
                                   source_name=source_name.strip(), created_by=user, total_lines=count_lines(path))
    if job.total_lines > async_threshold():
        from labeling_app.tasks import import_run

        transaction.on_commit(lambda: import_run.delay(job.pk))  # the default queue ("default")
    else:
        import_job_run(job_id=job.pk)
        job.refresh_from_db()
    return job


def import_job_run(*, job_id: int) -> ImportJob:
    """Run one import job to the end, recording success or the errors on its row."""
    job = ImportJob.objects.select_related("project", "created_by").get(pk=job_id)
    if job.status not in (ImportJob.Status.QUEUED,):
        return job  # a redelivered task: the job already ran
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.VALIDATING)
    job.status = ImportJob.Status.VALIDATING

    def progress(phase: str, done: int, total: int) -> None:
        cache.set(job.progress_cache_key, {"phase": phase, "done": done, "total": job.total_lines}, timeout=3600)
        if phase == "validating":
            ImportJob.objects.filter(pk=job.pk).update(processed_lines=done)

    def fail(errors: list[dict], error_count: int = 1, **fields) -> None:
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.FAILED, errors=errors, error_count=error_count,
                                                   finished_at=timezone.now(), **fields)

    try:
        result = import_file(project=job.project, kind=job.kind, path=job.file_path, source_name=job.source_name or "",
                             user=job.created_by, on_progress=progress)
    except ImportRejected as exc:
        fail([asdict(e) for e in exc.line_errors], exc.error_count, processed_lines=exc.lines)
    except ServiceError as exc:
        fail([{"line": 0, "field": exc.field, "message": exc.message}])
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        fail([{"line": 0, "field": "(file)", "message": str(exc)}])
    except Exception as exc:
        # Never leave a job "importing" forever: record the failure, then let the worker log the traceback.
        fail([{"line": 0, "field": "(import)", "message": f"unexpected error, nothing was imported: {exc}"}])
        cache.delete(job.progress_cache_key)
        raise
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.SUCCEEDED, result=result.as_dict(), processed_lines=result.lines,
            total_lines=result.lines, finished_at=timezone.now(),
        )
        try:
            os.remove(job.file_path)  # the rows are the record now
        except OSError:
            pass
    cache.delete(job.progress_cache_key)
    job.refresh_from_db()
    return job
