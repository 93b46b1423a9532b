"""The quality page's stored figures: each project's `quality_aggregates` kept in the cache, recomputed in the
background (Celery, default queue) once the project's labels have changed.

`quality_aggregates` reads every human label of the project (260-360 ms of PostgreSQL CPU at 4,000 labels,
growing with the labels, 2026-11-30); everything else on the page costs a few ms and stays live. A snapshot is
the aggregates, when they were computed and the project's *labels watermark* then: the count, newest id and newest
`updated_at` of its submitted labels, and a digest of its checks' keys and polarities. Every path that changes a
figure changes the watermark: a submit adds a label (count, id), a revision or a review decision saves the label
(`updated_at`), an import adds labels and its undo deletes them (count), a check's polarity moves the digest.
Archiving a task does not: the aggregates read archived tasks' labels too, and the archive counts are live.

The cache is Redis; while it cannot be reached, the page computes its figures per request as before (it fails
open, like the API throttle in config/throttling.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from redis.exceptions import RedisError

from config.logs import OutageWarning
from labeling_app.models import Project
from labeling_app.selectors.quality import quality_aggregates

logger = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT = 30 * 24 * 3600  # a snapshot is kept this long after its last refresh
REFRESH_LOCK_TIMEOUT = 600  # a refresh whose worker died holds the project's lock this long at most
_CACHE_ERRORS = (RedisError, OSError)
_warn_cache_down = OutageWarning(
    logger, "Quality snapshots: the cache cannot be reached, figures are computed per request: %s"
)

# The project's tasks, then each task's submitted labels through the task index (OFFSET 0: a probe per task, as
# in the quality SQL): 5-9 ms at 5,000 tasks and 4,000 labels (pages_at_scale, 2026-11-30). Drafts are left out:
# their autosaves would make every snapshot stale while anyone is labeling.
_WATERMARK_SQL = """
SELECT count(a.id), max(a.id), max(a.updated_at),
       (SELECT md5(coalesce(string_agg(q.id || ':' || q.key || ':' || q.problem_answer::text, ',' ORDER BY q.id), ''))
        FROM labeling_app_checkquestion q WHERE q.project_id = %(project)s)
FROM labeling_app_rankingtask t
CROSS JOIN LATERAL (SELECT a.id, a.updated_at FROM labeling_app_annotation a
                    WHERE a.task_id = t.id AND a.status = 'submitted' OFFSET 0) a
WHERE t.project_id = %(project)s
"""


@dataclass(frozen=True)
class QualitySnapshot:
    """What the quality page shows of the aggregates: `stale` when labels changed since `computed_at` (`new_labels`
    more of them now; a revision or review changes none), `refreshing` when a recompute is queued or running,
    `stored` False when the cache could not be reached (computed for this request only)."""

    aggregates: dict
    computed_at: datetime
    labels: int
    new_labels: int = 0
    stale: bool = False
    refreshing: bool = False
    stored: bool = True


def quality_watermark(project: Project) -> tuple:
    """(submitted labels, newest label id, newest label change, checks digest) of the project: one indexed query."""
    with connection.cursor() as cursor:
        cursor.execute(_WATERMARK_SQL, {"project": project.pk})
        count, newest, changed, checks = cursor.fetchone()
    return (count, newest, changed.isoformat() if changed else None, checks)


def _project_key(project: Project) -> str:
    # The project's creation time keeps a reused id (a re-created test database) from reading another's snapshot
    # or lock.
    return f"{project.pk}:{project.created_at.timestamp():.6f}"


def _snapshot_key(project: Project) -> str:
    # The time zone too: the per-day figures are local days.
    return f"quality-snapshot:v1:{_project_key(project)}:{timezone.get_current_timezone_name()}"


def _lock_key(project: Project) -> str:
    return f"quality-snapshot-refresh:{_project_key(project)}"


def quality_snapshot_refresh(*, project: Project) -> QualitySnapshot:
    """Compute the project's aggregates now and store them (`stored` False when the cache is down)."""
    watermark = quality_watermark(project)  # first: a label that arrives meanwhile makes the snapshot stale
    snapshot = QualitySnapshot(aggregates=quality_aggregates(project), computed_at=timezone.now(), labels=watermark[0])
    try:
        cache.set(
            _snapshot_key(project),
            {"watermark": watermark, "computed_at": snapshot.computed_at, "aggregates": snapshot.aggregates},
            SNAPSHOT_TIMEOUT,
        )
    except _CACHE_ERRORS as exc:
        _warn_cache_down(exc)
        return QualitySnapshot(snapshot.aggregates, snapshot.computed_at, snapshot.labels, stored=False)
    return snapshot


def quality_snapshot_refresh_enqueue(*, project: Project) -> bool:
    """Queue a background refresh unless one of this project is queued or running already; True when one is.

    The lock is a cache `add` (only one caller gets it) that the task deletes when it ends; its timeout frees it if
    the worker dies. A broker that refuses the message frees it at once."""
    from labeling_app.tasks import quality_snapshot_refresh_task

    if not cache.add(_lock_key(project), 1, REFRESH_LOCK_TIMEOUT):
        return True
    try:
        # The web's queue ("default", with imports), never the training queue; read per call like the setting.
        queue = quality_snapshot_refresh_task.app.conf.task_default_queue
        quality_snapshot_refresh_task.apply_async((project.pk,), queue=queue, retry=False)
    except Exception as exc:  # a broker outage must not fail the page: it serves the stale figures
        logger.warning("Quality snapshot of project %s: the refresh could not be queued: %s", project.pk, exc)
        cache.delete(_lock_key(project))
        return False
    return True


def quality_snapshot_refresh_unlock(*, project: Project) -> None:
    cache.delete(_lock_key(project))


def quality_snapshot_for_page(*, project: Project) -> QualitySnapshot:
    """The stored snapshot when the labels have not changed since; the stored one marked stale (and a refresh
    queued) when they have; computed now when there is none or the cache is down."""
    watermark = quality_watermark(project)
    try:
        stored = cache.get(_snapshot_key(project))
    except _CACHE_ERRORS as exc:
        _warn_cache_down(exc)
        return QualitySnapshot(quality_aggregates(project), timezone.now(), watermark[0], stored=False)
    if stored is None:
        return quality_snapshot_refresh(project=project)
    snapshot = QualitySnapshot(stored["aggregates"], stored["computed_at"], stored["watermark"][0])
    if stored["watermark"] == watermark:
        return snapshot
    try:
        refreshing = quality_snapshot_refresh_enqueue(project=project)
    except _CACHE_ERRORS as exc:  # went down since the read
        _warn_cache_down(exc)
        refreshing = False
    return QualitySnapshot(
        snapshot.aggregates,
        snapshot.computed_at,
        snapshot.labels,
        new_labels=max(0, watermark[0] - snapshot.labels),
        stale=True,
        refreshing=refreshing,
    )
