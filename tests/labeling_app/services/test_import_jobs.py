"""Import jobs over time: a job whose worker died is marked lost, Retry runs its file again, old rejected uploads are purged."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from labeling_app.models import ImportJob, Prompt
from labeling_app.services.imports import import_job_create, import_job_retry, import_uploads_purge, imports_mark_lost
from labeling_app.services.projects import project_create
from labeling_app.tasks import import_uploads_purge_task, imports_mark_lost_task
from tests.labeling_app.researcher_fixtures import write_jsonl


@pytest.fixture
def project(db, researcher):
    return project_create(name="Jobs", user=researcher, completions_per_task=2)


@pytest.fixture
def import_dir(settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    return Path(settings.IMPORT_DIR)


def stuck_job(project, researcher, import_dir, *, status="validating", seconds_silent=600) -> ImportJob:
    """A job as a worker killed mid-import leaves it: running, its file saved, its heartbeat old."""
    import_dir.mkdir(parents=True, exist_ok=True)
    path = write_jsonl(import_dir / f"{uuid.uuid4().hex}.jsonl", [{"prompt": "one"}, {"prompt": "two"}])
    then = timezone.now() - timedelta(seconds=seconds_silent)
    job = ImportJob.objects.create(
        project=project,
        kind="prompts",
        file_path=str(path),
        original_name="mine.jsonl",
        status=status,
        total_lines=2,
        created_by=researcher,
    )
    ImportJob.objects.filter(pk=job.pk).update(created_at=then, heartbeat_at=then)
    return job


def test_a_job_with_an_old_heartbeat_is_marked_lost_with_the_reason(project, researcher, import_dir, settings):
    settings.JOB_LOST_AFTER_SECONDS = 120
    dead = stuck_job(project, researcher, import_dir)
    importing = stuck_job(project, researcher, import_dir, status="importing")
    alive = stuck_job(project, researcher, import_dir, seconds_silent=10)
    queued = stuck_job(project, researcher, import_dir, status="queued")
    assert imports_mark_lost() == 2
    dead.refresh_from_db(), importing.refresh_from_db(), alive.refresh_from_db(), queued.refresh_from_db()
    assert (dead.status, importing.status, alive.status, queued.status) == ("lost", "lost", "validating", "queued")
    assert dead.finished_at is not None
    assert dead.errors[0]["field"] == "(worker)" and "the worker stopped" in dead.errors[0]["message"]
    assert "nothing was imported" in dead.errors[0]["message"]
    assert imports_mark_lost() == 0  # already marked: nothing more to do


def test_the_sweep_takes_its_time_from_now(project, researcher, import_dir):
    job = stuck_job(project, researcher, import_dir, seconds_silent=30)
    assert imports_mark_lost(now=timezone.now()) == 0
    assert imports_mark_lost(now=timezone.now() + timedelta(hours=1)) == 1
    job.refresh_from_db()
    assert job.status == "lost"


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_stays_fresh_for_others_while_the_insert_transaction_runs(
    researcher, import_dir, settings, monkeypatch
):
    """The insert pass is one long transaction: the heartbeat must be written outside it, or the job looks dead."""
    from labeling_app.services import imports as svc

    settings.JOB_HEARTBEAT_SECONDS = 0.05
    project = project_create(name="Slow", user=researcher, completions_per_task=2)
    seen = []
    real_insert = svc.insert_batch

    def other_session() -> tuple:
        out = []
        thread = threading.Thread(
            target=lambda: (
                out.append(ImportJob.objects.values_list("status", "heartbeat_at").get()),
                connection.close(),
            )
        )
        thread.start()
        thread.join()
        return out[0]

    def slow_insert(*args, **kwargs):
        real_insert(*args, **kwargs)
        before = timezone.now()
        time.sleep(0.5)
        status, beat = other_session()
        seen.append((status, beat >= before))

    monkeypatch.setattr(svc, "insert_batch", slow_insert)
    with open(write_jsonl(import_dir.parent / "f.jsonl", [{"prompt": "p"}]), "rb") as upload:
        job = import_job_create(
            project=project, kind="prompts", upload=upload, original_name="f.jsonl", user=researcher
        )
    assert job.status == "succeeded"
    assert seen == [("importing", True)]


def test_retry_runs_the_same_file_as_a_new_job(project, researcher, import_dir):
    dead = stuck_job(project, researcher, import_dir)
    imports_mark_lost()
    dead.refresh_from_db()
    retry = import_job_retry(job=dead, user=researcher)
    assert retry.pk != dead.pk and retry.status == "succeeded", retry.errors
    assert retry.original_name == "mine.jsonl" and retry.kind == "prompts" and retry.file_path != dead.file_path
    assert retry.result["prompts_created"] == 2 and Prompt.objects.count() == 2
    assert os.path.exists(dead.file_path)  # each job keeps its own copy: purging one never breaks the other


def test_retry_refuses_a_job_that_is_running_or_whose_file_is_gone(project, researcher, import_dir):
    from config.errors import ServiceError

    running = stuck_job(project, researcher, import_dir, seconds_silent=1)
    with pytest.raises(ServiceError, match="still running"):
        import_job_retry(job=running, user=researcher)
    failed = stuck_job(project, researcher, import_dir, status="failed")
    os.remove(failed.file_path)
    with pytest.raises(ServiceError, match="no longer kept"):
        import_job_retry(job=failed, user=researcher)


def test_retry_button_on_the_job_page_for_researchers_only(client, project, researcher, labeler, import_dir):
    dead = stuck_job(project, researcher, import_dir)
    imports_mark_lost()
    url = f"/projects/{project.pk}/imports/{dead.pk}/"
    client.force_login(labeler)
    assert client.post(url, {"action": "retry"}).status_code == 403
    assert ImportJob.objects.count() == 1
    client.force_login(researcher)
    page = client.get(url).content.decode()
    assert "Lost" in page and "the worker stopped" in page and 'value="retry"' in page
    response = client.post(url, {"action": "retry"})
    retry = ImportJob.objects.exclude(pk=dead.pk).get()
    assert response.status_code == 302 and response.url == f"/projects/{project.pk}/imports/{retry.pk}/"
    assert retry.status == "succeeded" and retry.created_by == researcher
    assert 'value="retry"' not in client.get(response.url).content.decode()  # nothing to retry after success


def test_retry_of_a_rejected_file_can_skip_the_bad_lines(client, project, researcher, import_dir):
    with open(write_jsonl(import_dir.parent / "f.jsonl", [{"prompt": "ok"}, {"prompt": ""}]), "rb") as upload:
        failed = import_job_create(
            project=project, kind="prompts", upload=upload, original_name="f.jsonl", user=researcher
        )
    assert failed.status == "failed"
    client.force_login(researcher)
    client.post(f"/projects/{project.pk}/imports/{failed.pk}/", {"action": "retry", "skip_invalid": "on"})
    retry = ImportJob.objects.exclude(pk=failed.pk).get()
    assert retry.status == "succeeded" and retry.skip_invalid and retry.error_count == 1
    assert list(Prompt.objects.values_list("text", flat=True)) == ["ok"]


def test_mark_lost_celery_task_runs_the_service(project, researcher, import_dir):
    stuck_job(project, researcher, import_dir)
    assert imports_mark_lost_task.apply().get() == 1


def _aged(job: ImportJob, days: float) -> None:
    ImportJob.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(days=days))


def test_purge_deletes_old_rejected_and_lost_uploads_only(project, researcher, import_dir, settings):
    settings.IMPORT_RETENTION_DAYS = 7
    uploads = {}
    for name, rows in [("ok", [{"prompt": "fine"}]), ("bad", [{"prompt": ""}]), ("recent_bad", [{"prompt": ""}])]:
        with open(write_jsonl(import_dir.parent / f"{name}.jsonl", rows), "rb") as upload:
            uploads[name] = import_job_create(
                project=project, kind="prompts", upload=upload, original_name=f"{name}.jsonl", user=researcher
            )
    lost = stuck_job(project, researcher, import_dir)
    imports_mark_lost()
    lost.refresh_from_db()
    running = stuck_job(project, researcher, import_dir, status="importing", seconds_silent=1)
    ok, bad, recent_bad = uploads["ok"], uploads["bad"], uploads["recent_bad"]
    for job in (ok, bad, lost):
        _aged(job, 8)
    _aged(recent_bad, 6)
    orphan = import_dir / ("0" * 32 + ".jsonl")
    orphan.write_text("{}\n")
    os.utime(orphan, (0, 0))
    other = import_dir / "README.txt"
    other.write_text("not an upload")
    os.utime(other, (0, 0))

    assert import_uploads_purge() == 3
    for job in (ok, bad, recent_bad, lost, running):
        job.refresh_from_db()
    assert not os.path.exists(bad.file_path or "/nonexistent") and not bad.file_path and not lost.file_path
    assert os.path.exists(ok.file_path)  # a succeeded import keeps its file: the record of what was imported
    assert os.path.exists(recent_bad.file_path) and os.path.exists(running.file_path)
    assert not orphan.exists() and other.exists()
    assert import_uploads_purge() == 0
    # the page says why Retry is gone
    page_job = ImportJob.objects.get(pk=bad.pk)
    assert page_job.file_purged_at is not None


def test_purge_task_and_retention_from_now(project, researcher, import_dir, settings):
    settings.IMPORT_RETENTION_DAYS = 30
    with open(write_jsonl(import_dir.parent / "bad.jsonl", [{"prompt": ""}]), "rb") as upload:
        bad = import_job_create(
            project=project, kind="prompts", upload=upload, original_name="bad.jsonl", user=researcher
        )
    assert import_uploads_purge(now=timezone.now() + timedelta(days=29)) == 0
    assert import_uploads_purge_task.apply(kwargs={}).get() == 0
    assert import_uploads_purge(now=timezone.now() + timedelta(days=31)) == 1
    bad.refresh_from_db()
    assert not bad.file_path


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_reconnects_after_the_database_dropped_its_connection(project, researcher, import_dir):
    """PostgreSQL restarted under a running import: the heartbeat thread's connection is gone, and the next beats
    come from a fresh one (before, every later beat failed on the dead connection until the job was marked lost)."""
    from labeling_app.services.imports import _Heartbeat

    job = stuck_job(project, researcher, import_dir)
    heartbeat = _Heartbeat(job.pk, 0.05)
    heartbeat.start()
    try:
        first = _wait_for_beat(job, after=timezone.now() - timedelta(seconds=60))
        with connection.cursor() as cursor:  # what a restart does to every other session
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        dropped = timezone.now()
        assert _wait_for_beat(job, after=dropped) > first
    finally:
        heartbeat.stopped.set()
        heartbeat.join(timeout=10)


def _wait_for_beat(job: ImportJob, *, after, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        beat = ImportJob.objects.values_list("heartbeat_at", flat=True).get(pk=job.pk)
        if beat > after:
            return beat
        time.sleep(0.05)
    raise AssertionError(f"no heartbeat after {after}")
