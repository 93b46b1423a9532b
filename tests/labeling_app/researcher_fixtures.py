"""Helpers for the researcher-area tests: files to import and labels submitted by hand."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from labeling_app.models import Annotation, CheckAnswer, Rating, RankingTask


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def label(
    task: RankingTask,
    user,
    ranks: list[int],
    likerts: list[int | None] | None = None,
    checks: dict[str, list[bool]] | None = None,
    *,
    seconds: float = 60,
    shown_order: list[int] | None = None,
    submitted_at=None,
) -> Annotation:
    """A submitted label by `user`: ranks/likerts/checks given in the task's completion order."""
    completions = [tc.completion for tc in task.task_completions.order_by("position")]
    submitted_at = submitted_at or timezone.now()
    annotation = Annotation.objects.create(
        task=task,
        labeler=user,
        status="submitted",
        submitted_at=submitted_at,
        shown_order=shown_order or [c.pk for c in completions],
    )
    Annotation.objects.filter(pk=annotation.pk).update(started_at=submitted_at - timedelta(seconds=seconds))
    questions = {q.key: q for q in task.project.checks.all()}
    for i, c in enumerate(completions):
        rating = Rating.objects.create(
            annotation=annotation, completion=c, rank=ranks[i], likert=likerts[i] if likerts else None
        )
        for key, values in (checks or {}).items():
            CheckAnswer.objects.create(rating=rating, check_question=questions[key], value=values[i])
    annotation.refresh_from_db()
    return annotation
