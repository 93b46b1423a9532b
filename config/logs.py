"""Logging for web and workers alike: one line per record with time, level and logger; JSON lines when LOG_FORMAT=json."""

from __future__ import annotations

import logging
import logging.config
import os

LOG_FORMATS = ("text", "json")

FORMATTERS = {
    "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    # One JSON object per line: {"level", "logger", "message", "timestamp" (ISO 8601, UTC)}, plus "exc_info"
    # with the traceback, and any `extra=` fields.
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(levelname)s %(name)s %(message)s",
        "rename_fields": {"levelname": "level", "name": "logger"},
        "timestamp": True,
    },
}


def log_settings() -> tuple[str, str]:
    """(LOG_LEVEL, LOG_FORMAT) from the environment, checked."""
    level = (os.environ.get("LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    log_format = (os.environ.get("LOG_FORMAT") or "text").lower()
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return level, log_format


def logging_config(level: str, log_format: str) -> dict:
    """A logging.config.dictConfig dictionary: Django's LOGGING, the Celery workers' (config/celery.py) and
    gunicorn's (gunicorn.conf.py), so every process of the app writes the same kind of line to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": FORMATTERS[log_format]},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "app"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's defaults give "django" a console handler of its own under DEBUG: without this, those
            # records would be written twice, once in Django's format.
            "django": {"handlers": [], "level": level, "propagate": True},
            # gunicorn attaches its own handlers and formats to these two and stops propagation.
            "gunicorn.error": {"handlers": ["console"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


def configure(config: dict) -> None:
    """Applies a logging_config() dictionary (Django's LOGGING_CONFIG, and the Celery workers' set-up), and sends
    Python's warnings through logging too, so that they come out as lines of the same kind."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


class OutageWarning:
    """A warning logged at most once per `every` seconds per process: while a dependency (Redis) is down, every
    request meets the failure, and one log line per request would bury the rest. Call it with the exception."""

    def __init__(self, logger: logging.Logger, message: str, *, every: float = 60.0):
        self.logger, self.message, self.every = logger, message, every
        self._last: float | None = None

    def __call__(self, exc: BaseException) -> None:
        import time

        now = time.monotonic()
        if self._last is None or now - self._last >= self.every:
            self._last = now
            self.logger.warning(self.message, exc)
