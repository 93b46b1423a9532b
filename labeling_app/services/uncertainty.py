"""The reward model's uncertainty per task (RankingTask.uncertainty_margin), which the queue order "uncertainty" reads.

A score job computes each task's margin with `rlhf_worker.training.uncertainty.task_margins` (the mean over
the task's completion pairs of the score difference in posterior standard deviations of a last-layer Laplace
approximation; smaller = less sure) and stores it here.
"""

from __future__ import annotations

from typing import Mapping

from django.db import connection

from labeling_app.models import RankingTask, TaskCompletion
from rlhf_worker.models import CompletionScore, ModelVersion

# A margin is stored only where `version` has scored every completion of the task, and only where no newer
# reward version (by created_at, then id) has: where several versions scored a task, the newest one's margin
# counts, whichever job ran last. One statement for the whole batch of tasks.
_WRITE = """
UPDATE {task} t SET uncertainty_margin = u.margin
FROM unnest(%(task_ids)s::bigint[], %(margins)s::float8[]) AS u(task_id, margin)
WHERE t.id = u.task_id
  AND t.uncertainty_margin IS DISTINCT FROM u.margin
  AND NOT EXISTS (
      SELECT 1 FROM {tc} tc
      WHERE tc.task_id = t.id
        AND NOT EXISTS (SELECT 1 FROM {cs} cs
                        WHERE cs.completion_id = tc.completion_id AND cs.model_version_id = %(version)s))
  AND NOT EXISTS (
      SELECT 1 FROM {mv} newer
      WHERE (newer.created_at, newer.id) > (%(created_at)s, %(version)s)
        AND NOT EXISTS (
            SELECT 1 FROM {tc} tc
            WHERE tc.task_id = t.id
              AND NOT EXISTS (SELECT 1 FROM {cs} cs
                              WHERE cs.completion_id = tc.completion_id AND cs.model_version_id = newer.id)))
"""


def task_margins_write(*, model_version: ModelVersion, margins: Mapping[int, float]) -> int:
    """Store {task id: margin} computed from `model_version`'s scores (write its CompletionScore rows first).

    A task `model_version` has not fully scored, or that a newer reward version has fully scored, keeps its
    margin. Returns the number of tasks whose margin changed."""
    if not margins:
        return 0
    sql = _WRITE.format(
        task=RankingTask._meta.db_table,
        tc=TaskCompletion._meta.db_table,
        cs=CompletionScore._meta.db_table,
        mv=ModelVersion._meta.db_table,
    )
    with connection.cursor() as cur:
        cur.execute(
            sql,
            {
                "task_ids": list(margins),
                "margins": [float(m) for m in margins.values()],
                "version": model_version.pk,
                "created_at": model_version.created_at,
            },
        )
        return cur.rowcount
