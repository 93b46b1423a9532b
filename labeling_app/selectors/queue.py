"""Reads for a project's queue order: the task sources it can put first, and whether any task has a reward margin."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, F, Q

from labeling_app.models import RankingTask
from rlhf_worker.models import ModelVersion


@dataclass(frozen=True)
class QueueSource:
    """One RankingTask.source_key present in a project, named for people, with its task counts."""

    key: str
    label: str
    tasks: int
    open_tasks: int


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


def queue_sources(project_id: int) -> list[QueueSource]:
    """The sources of the project's tasks, newest policy versions first; one grouped read of the project's tasks."""
    rows = (RankingTask.objects.filter(project_id=project_id).order_by().values("source_key")
            .annotate(tasks=Count("id"), open_tasks=Count("id", filter=Q(submitted_count__lt=F("overlap")))))
    ids = {int(p[6:]) for r in rows for p in r["source_key"].split(" + ") if p.startswith("model:") and p[6:].isdigit()}
    versions = dict(ModelVersion.objects.filter(pk__in=ids).values_list("pk", "name"))
    sources = [QueueSource(r["source_key"], source_label(r["source_key"], versions), r["tasks"], r["open_tasks"])
               for r in rows]
    return sorted(sources, key=lambda s: (not s.key.startswith("model:"), s.label))


def project_has_margins(project_id: int) -> bool:
    """Whether a score job has given any of the project's tasks a reward margin (task_open_margin_idx answers it
    for open tasks; closed ones are read too, which is one more probe)."""
    return RankingTask.objects.filter(project_id=project_id, uncertainty_margin__isnull=False).exists()
