"""Adaptive overlap: a task whose labels disagree gets one more label, up to the project's maximum.

The rule, as SQL functions the submission's own statement runs (through the submitted-count trigger of
0002, so it holds in the same transaction as the submission, under the task's row lock, whichever path
stored the label):

- `labeling_task_disagreement(task)`: the share of completion pairs ordered differently, pooled over
  every two submitted human labels of the task (pairs that either label ties are not compared; the
  complement of InstructGPT's inter-labeler agreement). With a single human label (base overlap 1) the
  label is compared with the newest reward model version that scored every completion of the task
  (rlhf_worker CompletionScore, higher = better); with no such scores: NULL, nothing to compare, so
  the task is not extended. Imported labels are never compared.
- `labeling_task_extend_if_disagreeing(task)`: when the task is complete (submitted_count = overlap),
  its overlap is below the project's `overlap_max` and the disagreement is at least the project's
  `disagreement_threshold`, the overlap goes up by one and `extra_labels` counts it. The hand-out
  then gives the task (now started, so first in line) to a labeler who has not labeled it.
- The counter trigger calls it only when a human label turns submitted and completes its task: every
  other submission costs nothing more than before.
"""

from importlib import import_module

from django.conf import settings
from django.db import migrations, models

_COUNTER = import_module("labeling_app.migrations.0002_submitted_count_trigger")
_COUNTER_FUNCTION = _COUNTER.CREATE.split("CREATE TRIGGER")[0]
assert "CREATE OR REPLACE FUNCTION labeling_annotation_submitted_count()" in _COUNTER_FUNCTION, (
    "0002 changed: update below"
)

_DECLARE = "RETURNS trigger AS $$\nBEGIN"
_INCREMENT = "UPDATE labeling_app_rankingtask SET submitted_count = submitted_count + 1 WHERE id = NEW.task_id;"
assert _COUNTER_FUNCTION.count(_DECLARE) == 1 and _COUNTER_FUNCTION.count(_INCREMENT) == 1, "0002 changed: update below"

# A human label that turns submitted and completes its task (only then) asks whether the task needs another label.
COUNTER_WITH_EXTENSION = _COUNTER_FUNCTION.replace(
    _DECLARE, "RETURNS trigger AS $$\nDECLARE\n    v_complete boolean;\nBEGIN"
).replace(
    _INCREMENT,
    """UPDATE labeling_app_rankingtask SET submitted_count = submitted_count + 1 WHERE id = NEW.task_id
        RETURNING submitted_count >= overlap INTO v_complete;
        IF v_complete AND NEW.labeler_id IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'submitted') THEN
            PERFORM labeling_task_extend_if_disagreeing(NEW.task_id);
        END IF;""",
)

FUNCTIONS = r"""
CREATE FUNCTION labeling_task_disagreement(p_task bigint) RETURNS float8 LANGUAGE sql STABLE AS $$
    -- Judges of the task: each submitted human label (goodness = -rank, ties equal) and, when there is exactly
    -- one such label, the newest reward version that scored all the task's completions (goodness = score).
    WITH labels AS (
        SELECT a.id FROM labeling_app_annotation a
        WHERE a.task_id = p_task AND a.status = 'submitted' AND a.labeler_id IS NOT NULL
    ), scorer AS (
        SELECT mv.id FROM rlhf_worker_modelversion mv
        WHERE mv.kind = 'reward' AND (SELECT count(*) FROM labels) = 1
          AND NOT EXISTS (SELECT 1 FROM labeling_app_taskcompletion tc
                          WHERE tc.task_id = p_task
                            AND NOT EXISTS (SELECT 1 FROM rlhf_worker_completionscore cs
                                            WHERE cs.model_version_id = mv.id AND cs.completion_id = tc.completion_id))
        ORDER BY mv.created_at DESC, mv.id DESC LIMIT 1
    ), judges AS (
        SELECT r.annotation_id AS judge, r.completion_id, -r.rank::float8 AS goodness
        FROM labeling_app_rating r JOIN labels ON labels.id = r.annotation_id
        UNION ALL
        SELECT -1, cs.completion_id, cs.score
        FROM scorer JOIN rlhf_worker_completionscore cs ON cs.model_version_id = scorer.id
        JOIN labeling_app_taskcompletion tc ON tc.task_id = p_task AND tc.completion_id = cs.completion_id
    ), pairs AS (  -- per two judges and two completions: how each orders them (0 = tie)
        SELECT sign(x1.goodness - x2.goodness) AS sa, sign(y1.goodness - y2.goodness) AS sb
        FROM judges x1
        JOIN judges x2 ON x2.judge = x1.judge AND x2.completion_id > x1.completion_id
        JOIN judges y1 ON y1.judge > x1.judge AND y1.completion_id = x1.completion_id
        JOIN judges y2 ON y2.judge = y1.judge AND y2.completion_id = x2.completion_id
    )
    SELECT (count(*) FILTER (WHERE sa <> sb))::float8 / nullif(count(*), 0) FROM pairs WHERE sa <> 0 AND sb <> 0
$$;

CREATE FUNCTION labeling_task_extend_if_disagreeing(p_task bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
-- Call it holding the task's row lock (the counter trigger does): the overlap and counts read are current.
BEGIN
    UPDATE labeling_app_rankingtask t SET overlap = t.overlap + 1, extra_labels = t.extra_labels + 1
    FROM labeling_app_project p
    WHERE t.id = p_task AND p.id = t.project_id AND t.submitted_count >= t.overlap
      AND t.overlap < coalesce(p.overlap_max, p.overlap)
      AND labeling_task_disagreement(t.id) >= p.disagreement_threshold;
    RETURN FOUND;
END;
$$;
"""

DROP_FUNCTIONS = r"""
DROP FUNCTION IF EXISTS labeling_task_extend_if_disagreeing(bigint);
DROP FUNCTION IF EXISTS labeling_task_disagreement(bigint);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0014_queue_order"),
        ("rlhf_worker", "0002_reward_completion_score"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="disagreement_threshold",
            field=models.FloatField(
                db_default=0.34,
                default=0.34,
                help_text="Share of completion pairs two labels order differently (0 to 1) from which a task gets another label.",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="overlap_max",
            field=models.PositiveSmallIntegerField(
                blank=True,
                help_text="Most labels a task may get when its labels disagree; empty or equal to overlap: never more.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="extra_labels",
            field=models.PositiveSmallIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("extra_labels__gt", 0)), fields=["project"], name="task_extended_idx"
            ),
        ),
        migrations.AddConstraint(
            model_name="project",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("overlap_max__isnull", True), ("overlap_max__gte", models.F("overlap")), _connector="OR"
                ),
                name="project_overlap_max_at_least_overlap",
            ),
        ),
        migrations.AddConstraint(
            model_name="project",
            constraint=models.CheckConstraint(
                condition=models.Q(("disagreement_threshold__gt", 0), ("disagreement_threshold__lte", 1)),
                name="project_disagreement_threshold_0_1",
            ),
        ),
        # Rows written before: adaptive overlap off.
        migrations.RunSQL("UPDATE labeling_app_project SET overlap_max = overlap", migrations.RunSQL.noop),
        migrations.RunSQL(FUNCTIONS, DROP_FUNCTIONS),
        migrations.RunSQL(COUNTER_WITH_EXTENSION, _COUNTER_FUNCTION),
    ]
