"""The Celery app: Redis broker, tasks discovered from the Django apps, logging through Django's LOGGING."""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rlhf")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def use_django_logging(**kwargs) -> None:
    """Workers log with the web's format and level (LOG_FORMAT, LOG_LEVEL; config/logs.py). With a receiver on
    this signal Celery leaves logging alone: it neither replaces the root logger's handlers nor applies
    `--loglevel`."""
    from django.conf import settings

    from config.logs import configure

    configure(settings.LOGGING)
