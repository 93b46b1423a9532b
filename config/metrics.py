"""Prometheus metrics at /metrics: request metrics (django-prometheus) and the app's own, read from PostgreSQL per scrape.

Where each number comes from, and why:

- Request counts and latencies are counted by django-prometheus in the web process that served the request.
  gunicorn runs several worker processes, and a scrape reaches one of them, so per-process counters would show
  one worker's share, different at each scrape. gunicorn.conf.py therefore turns on prometheus_client's
  multiprocess mode (PROMETHEUS_MULTIPROC_DIR): each worker writes its counters to files in that folder, and a
  scrape sums all of them, including workers that have exited since.
- The app's metrics (labels submitted, open tasks per project, training jobs by state and their durations) are
  not counted in any process: they are the state of PostgreSQL, which every web and worker process shares. The
  collector below reads them with one aggregate query each at scrape time, so they are right whichever process
  answers, and after any restart. Each query runs under a statement timeout, so a slow database makes the
  scrape report the failure (rlhf_metrics_query_success 0) instead of hanging.

Nobody needs a login to be counted, but reading the numbers does: an admin (or staff) session, or
`Authorization: Bearer $METRICS_TOKEN` for Prometheus.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from labeling_app.models import Annotation, Project, RankingTask
from labeling_app.roles import ADMIN, has_role
from rlhf_worker.models import TrainingJob

logger = logging.getLogger(__name__)

QUERY_TIMEOUT_MS = 2000
# Training jobs run from seconds (tiny test models) to many hours (PPO on a GPU).
JOB_DURATION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


class AppMetrics:
    """A prometheus_client collector: the app's state, aggregated in PostgreSQL when Prometheus scrapes."""

    def describe(self) -> list:
        # Registering must not query the database; the families are only known from the rows.
        return []

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "rlhf_metrics_query_success",
            "1 if the query behind these metrics answered in time, else 0.",
            labels=["query"],
        )
        seconds = GaugeMetricFamily(
            "rlhf_metrics_query_seconds", "How long the query behind these metrics took.", labels=["query"]
        )
        for name, query in (("tasks", self._tasks), ("labels", self._labels), ("jobs", self._jobs)):
            started = time.monotonic()
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    previous = _set_statement_timeout(cursor, f"{QUERY_TIMEOUT_MS}ms")
                    families = query(cursor)
                    # SET LOCAL lasts until the outermost transaction ends: put it back for whoever shares it.
                    _set_statement_timeout(cursor, previous)
            except DatabaseError as exc:
                logger.warning("metrics query %r failed: %s", name, exc)
                success.add_metric([name], 0)
            else:
                yield from families
                success.add_metric([name], 1)
            seconds.add_metric([name], time.monotonic() - started)
        yield success
        yield seconds

    @staticmethod
    def _tasks(cursor) -> list[Metric]:
        cursor.execute(
            f"""SELECT p.name,
                       count(t.id) FILTER (WHERE t.submitted_count < t.overlap),
                       coalesce(sum(t.overlap - t.submitted_count) FILTER (WHERE t.submitted_count < t.overlap), 0)
                FROM {_table(Project)} p LEFT JOIN {_table(RankingTask)} t ON t.project_id = p.id
                GROUP BY p.id, p.name"""
        )
        open_tasks = GaugeMetricFamily(
            "rlhf_tasks_open", "Tasks that still want labels (the labeling queue's depth).", labels=["project"]
        )
        wanted = GaugeMetricFamily(
            "rlhf_labels_wanted", "Labels the open tasks still want (overlap minus submitted).", labels=["project"]
        )
        for project, tasks, labels in cursor.fetchall():
            open_tasks.add_metric([project], tasks)
            wanted.add_metric([project], labels)
        return [open_tasks, wanted]

    @staticmethod
    def _labels(cursor) -> list[Metric]:
        cursor.execute(
            f"""SELECT p.name, count(a.id) FILTER (WHERE a.labeler_id IS NOT NULL), count(a.id) FILTER (WHERE a.labeler_id IS NULL)
                FROM {_table(Project)} p
                LEFT JOIN {_table(RankingTask)} t ON t.project_id = p.id
                LEFT JOIN {_table(Annotation)} a ON a.task_id = t.id AND a.status = %s
                GROUP BY p.id, p.name""",
            [Annotation.Status.SUBMITTED],
        )
        submitted = CounterMetricFamily(
            "rlhf_labels_submitted",
            "Submitted labels; source is labeler (a person) or import.",
            labels=["project", "source"],
        )
        for project, by_labelers, imported in cursor.fetchall():
            submitted.add_metric([project, "labeler"], by_labelers)
            submitted.add_metric([project, "import"], imported)
        return [submitted]

    @staticmethod
    def _jobs(cursor) -> list[Metric]:
        buckets = ", ".join(f"count(*) FILTER (WHERE d <= {float(bound)})" for bound in JOB_DURATION_BUCKETS)
        cursor.execute(
            f"""SELECT kind, status, count(*), count(d), coalesce(sum(d), 0), {buckets}
                FROM (SELECT kind, status, extract(epoch FROM finished_at - started_at)::float8 AS d
                      FROM {_table(TrainingJob)}) jobs
                GROUP BY kind, status"""
        )
        jobs = GaugeMetricFamily(
            "rlhf_training_jobs",
            "Training jobs by kind and state (queued, running, succeeded, ...).",
            labels=["kind", "status"],
        )
        durations = HistogramMetricFamily(
            "rlhf_training_job_duration_seconds",
            "Finished training jobs: time from start to end.",
            labels=["kind", "status"],
        )
        for kind, status, count, timed, total, *cumulative in cursor.fetchall():
            jobs.add_metric([kind, status], count)
            if status in TrainingJob.FINISHED and timed:
                le = [(str(float(bound)), n) for bound, n in zip(JOB_DURATION_BUCKETS, cumulative, strict=True)]
                durations.add_metric([kind, status], [*le, ("+Inf", timed)], sum_value=total)
        return [jobs, durations]


def _set_statement_timeout(cursor, value: str) -> str:
    """Sets this transaction's statement timeout; returns the one it replaced."""
    cursor.execute("SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)", [value])
    return cursor.fetchone()[0]


class ThisProcess:
    """The metrics this process counted (django-prometheus's, Python's), when there is one process to ask."""

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    """Everything one scrape reports. Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) the request metrics are the
    sum over all worker processes; otherwise (manage.py runserver, tests) this process's own."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(ThisProcess())
    registry.register(AppMetrics())
    return registry


def _unauthorized(error: str = "") -> HttpResponse:
    challenge = 'Bearer realm="metrics"' + (f', error="{error}"' if error else "")
    response = HttpResponse(
        "A bearer token (METRICS_TOKEN) or an admin login is required.\n", status=401, content_type="text/plain"
    )
    response["WWW-Authenticate"] = challenge
    return response


def _bearer_token_matches(header: str) -> bool:
    scheme, _, token = header.partition(" ")
    expected = settings.METRICS_TOKEN
    return (
        bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


@never_cache
@require_safe
def metrics(request):
    """Prometheus exposition: 200 for `Authorization: Bearer $METRICS_TOKEN` or an admin/staff session; 401 for no
    or a wrong token; 403 for other users."""
    header = request.headers.get("Authorization")
    if header is not None:
        if not _bearer_token_matches(header):
            return _unauthorized("invalid_token")
    elif not request.user.is_authenticated:
        return _unauthorized()
    elif not (request.user.is_staff or has_role(request.user, ADMIN)):
        raise PermissionDenied("Metrics are for admins and for Prometheus (with METRICS_TOKEN).")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(scrape_registry()), content_type=content_type)
