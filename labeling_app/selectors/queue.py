"""Reads for a project's queue order: the task sources it can put first, and whether any task has a reward margin."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from labeling_app.models import RankingTask
from rlhf_worker.models import ModelVersion


@dataclass(frozen=True)
class QueueSource:
    """One RankingTask.source_key of a project's open tasks, named for people."""

    key: str
    label: str


def _part_label(part: str, versions: dict[int, str]) -> str:
    kind, _, rest = part.partition(":")
    if kind == "model":
        name = versions.get(int(rest)) if rest.isdigit() else None
        return f"policy {name} (version {rest})" if name else f"policy version {rest or '(deleted)'}"
    if kind == "imported":
        return f"imported from {rest}" if rest else "imported (no model name)"
    if kind == "demonstration":
        return "demonstrations"
    return part


def source_label(key: str, versions: dict[int, str] | None = None) -> str:
    """'model:7 + demonstration' -> 'policy sft-2 (version 7) + demonstrations'."""
    parts = key.split(" + ") if key else []
    if versions is None:
        ids = [int(p[6:]) for p in parts if p.startswith("model:") and p[6:].isdigit()]
        versions = dict(ModelVersion.objects.filter(pk__in=ids).values_list("pk", "name"))
    return " + ".join(_part_label(p, versions) for p in parts) or "(no completions)"


# The distinct sources of a project's open tasks by a skip scan of task_open_source_idx: one index probe
# per source, however many tasks the project holds (a GROUP BY would read every task on each page view).
_OPEN_SOURCES = """
WITH RECURSIVE s AS (
    (SELECT t.source_key FROM {task} t WHERE t.project_id = %(project)s AND t.submitted_count < t.overlap
     ORDER BY t.source_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.source_key FROM {task} t
            WHERE t.project_id = %(project)s AND t.submitted_count < t.overlap AND t.source_key > s.source_key
            ORDER BY t.source_key LIMIT 1)
    FROM s WHERE s.source_key IS NOT NULL
)
SELECT source_key FROM s WHERE source_key IS NOT NULL
"""


def queue_sources(project_id: int, *, keep: str = "") -> list[QueueSource]:
    """The sources of the project's open tasks (policy versions first, then by name), plus `keep` (the
    project's chosen source, listed even once its tasks are done)."""
    with connection.cursor() as cur:
        cur.execute(_OPEN_SOURCES.format(task=RankingTask._meta.db_table), {"project": project_id})
        keys = [row[0] for row in cur.fetchall()]
    if keep and keep not in keys:
        keys.append(keep)
    ids = {int(p[6:]) for k in keys for p in k.split(" + ") if p.startswith("model:") and p[6:].isdigit()}
    versions = dict(ModelVersion.objects.filter(pk__in=ids).values_list("pk", "name"))
    sources = [QueueSource(k, source_label(k, versions)) for k in keys]
    return sorted(sources, key=lambda s: (not s.key.startswith("model:"), s.label))


def project_has_margins(project_id: int) -> bool:
    """Whether a score job has given any of the project's tasks a reward margin (task_open_margin_idx answers it
    for open tasks; closed ones are read too, which is one more probe)."""
    return RankingTask.objects.filter(project_id=project_id, uncertainty_margin__isnull=False).exists()
