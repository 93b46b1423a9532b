"""The reward model's uncertainty per task: the margin between its two best-scored completions, for the queue order."""

from __future__ import annotations

from typing import Sequence

from django.db import connection

from labeling_app.models import RankingTask, TaskCompletion
from rlhf_worker.models import CompletionScore, ModelVersion

# Per task touched by the given completions, the newest reward version (by created_at, then id) that has
# scored every one of its completions gives the margin: top score minus second score. One statement, so a
# chunk of a score job costs one round trip whatever its size; a task not yet fully scored keeps its margin.
_UPDATE = """
WITH affected AS (
    SELECT DISTINCT tc.task_id FROM {tc} tc WHERE tc.completion_id = ANY(%s)
), per_version AS (
    SELECT tc.task_id, cs.model_version_id, count(*) AS scored,
           (array_agg(cs.score ORDER BY cs.score DESC))[1] - (array_agg(cs.score ORDER BY cs.score DESC))[2] AS margin
    FROM affected a
    JOIN {tc} tc ON tc.task_id = a.task_id
    JOIN {cs} cs ON cs.completion_id = tc.completion_id
    GROUP BY tc.task_id, cs.model_version_id
), latest AS (
    SELECT DISTINCT ON (pv.task_id) pv.task_id, pv.margin
    FROM per_version pv JOIN {mv} mv ON mv.id = pv.model_version_id
    WHERE pv.scored = (SELECT count(*) FROM {tc} x WHERE x.task_id = pv.task_id)
    ORDER BY pv.task_id, mv.created_at DESC, mv.id DESC
)
UPDATE {task} t SET uncertainty_margin = latest.margin
FROM latest WHERE t.id = latest.task_id AND t.uncertainty_margin IS DISTINCT FROM latest.margin
"""


def task_margins_update(*, completion_ids: Sequence[int]) -> int:
    """Recompute the uncertainty margin of every task holding one of `completion_ids` (call it after writing
    their CompletionScore rows); returns the number of tasks whose margin changed."""
    if not completion_ids:
        return 0
    sql = _UPDATE.format(
        tc=TaskCompletion._meta.db_table,
        cs=CompletionScore._meta.db_table,
        mv=ModelVersion._meta.db_table,
        task=RankingTask._meta.db_table,
    )
    with connection.cursor() as cur:
        cur.execute(sql, [list(completion_ids)])
        return cur.rowcount
