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
