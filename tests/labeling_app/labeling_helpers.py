"""Helpers shared by the labeling tests: a valid submission payload for a leased task."""

from __future__ import annotations

from labeling_app.models import Annotation


def valid_ratings(task, labeler, *, likert_by_position=None) -> list[dict]:
    """One complete, valid rating per completion, in the labeler's shown order; rank follows the rating."""
    annotation = Annotation.objects.get(task=task, labeler=labeler)
    keys = list(task.project.checks.filter(active=True).values_list("key", flat=True))
    order = annotation.shown_order
    likerts = likert_by_position or [7 - i for i in range(len(order))]
    distinct = sorted(set(likerts), reverse=True)
    return [
        {
            "completion": cid,
            "likert": likerts[i],
            "rank": distinct.index(likerts[i]) + 1,
            "checks": {k: (j % 2 == 0) for j, k in enumerate(keys)},
        }
        for i, cid in enumerate(order)
    ]
