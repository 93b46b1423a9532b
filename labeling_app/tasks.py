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
