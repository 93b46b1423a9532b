"""Celery tasks of the labeling app."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="labeling_app.ping", ignore_result=False)
def ping(value: str) -> dict:
    """Health check through the broker: echoes `value` with the worker's database name."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    return {"echo": value, "database": database}


@shared_task(name="labeling_app.import_run")
def import_run(job_id: int) -> None:
    """Researcher area: run a big import job in the background (queue "default")."""
    from django.db import close_old_connections

    from labeling_app.services.imports import import_job_run

    try:
        import_job_run(job_id=job_id)
    finally:
        close_old_connections()  # a worker thread must not keep a database session open between jobs


@shared_task(name="labeling_app.imports_mark_lost")
def imports_mark_lost_task() -> int:
    """Scheduled: import jobs whose worker died are marked lost; returns how many."""
    from labeling_app.services.imports import imports_mark_lost

    return imports_mark_lost()


@shared_task(name="labeling_app.import_uploads_purge")
def import_uploads_purge_task() -> int:
    """Scheduled: rejected uploads older than IMPORT_RETENTION_DAYS are deleted; returns how many files."""
    from labeling_app.services.imports import import_uploads_purge

    return import_uploads_purge()


@shared_task(name="labeling_app.quality_snapshot_refresh")
def quality_snapshot_refresh_task(project_id: int) -> None:
    """Researcher area: recompute a project's quality figures into the cache (queue "default"), then free the
    project's refresh lock (`quality_snapshot_refresh_enqueue` took it). A worker's database connections are closed
    around each task by Celery's Django fixup; a direct call (tests) keeps the caller's."""
    from labeling_app.models import Project
    from labeling_app.services.quality_snapshot import quality_snapshot_refresh, quality_snapshot_refresh_unlock

    project = Project.objects.filter(pk=project_id).first()
    if project is None:  # deleted since: nothing to refresh, and its lock times out
        return
    try:
        quality_snapshot_refresh(project=project)
    finally:
        quality_snapshot_refresh_unlock(project=project)
