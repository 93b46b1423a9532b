"""Django project package: settings from the environment, URLs, the Celery app and the service launcher."""

from .celery import app as celery_app

__all__ = ("celery_app",)
