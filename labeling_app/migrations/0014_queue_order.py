"""Queue orders: a project hands its open tasks out oldest first, newest first, fewest labels first, a chosen
source first, or the reward model's least certain first (Project.queue_order).

The hand-out function of 0009 (as 0012_task_archive changed it) is replaced by the same function with its candidate pick made per order;
the pick statements are cut out of 0009's SQL (the candidate condition with them, whatever earlier
changes made of it) and repeated once per order with that order's ORDER BY, so every order is a static
query the planner answers with an index scan and LIMIT 1:

- oldest: task_open_idx (project, id) forwards; newest: the same index backwards;
- fewest_labels: task_open_fewest_idx (project, submitted_count, id);
- source_first: task_open_source_idx (project, source_key, id) for the chosen source, then oldest;
- uncertainty: task_open_margin_idx (project, uncertainty_margin, id); never scored tasks (null margin)
  sort after the scored ones, oldest first among themselves.

Tasks others already started still come first, in the project's order among themselves (a small set).
RankingTask.source_key is kept by a statement trigger on TaskCompletion inserts (every path that builds
tasks inserts their completions), and filled here for the tasks that exist.
"""

import re
from importlib import import_module

from django.db import migrations, models


# The hand-out as 0012_task_archive left it (0009's, with archived tasks out of the candidates).
_BASE = import_module("labeling_app.migrations.0012_task_archive")
_PREVIOUS = _BASE.ASSIGN_WITHOUT_ARCHIVED

# One completion's source as the queue names it; a task's source_key joins its completions' distinct ones.
SOURCE_KEY = """
CREATE OR REPLACE FUNCTION labeling_completion_source_key(p_source text, p_model_name text, p_model_version bigint)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_source = 'model' THEN 'model:' || coalesce(p_model_version::text, '')
                WHEN p_source = 'imported' THEN 'imported:' || coalesce(p_model_name, '')
                ELSE p_source END
$$;

CREATE OR REPLACE FUNCTION labeling_task_source_key_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE labeling_app_rankingtask t SET source_key = k.source_key
    FROM (SELECT tc.task_id,
                 string_agg(DISTINCT labeling_completion_source_key(c.source, c.model_name, c.model_version_id), ' + '
                            ORDER BY labeling_completion_source_key(c.source, c.model_name, c.model_version_id)) AS source_key
          FROM labeling_app_taskcompletion tc JOIN labeling_app_completion c ON c.id = tc.completion_id
          WHERE tc.task_id IN (SELECT DISTINCT n.task_id FROM new_rows n)
          GROUP BY tc.task_id) k
    WHERE t.id = k.task_id AND t.source_key IS DISTINCT FROM k.source_key;
    RETURN NULL;
END;
$$;

CREATE TRIGGER labeling_task_source_key_fill
AFTER INSERT ON labeling_app_taskcompletion REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION labeling_task_source_key_fill();

UPDATE labeling_app_rankingtask t SET source_key = k.source_key
FROM (SELECT tc.task_id,
             string_agg(DISTINCT labeling_completion_source_key(c.source, c.model_name, c.model_version_id), ' + '
                        ORDER BY labeling_completion_source_key(c.source, c.model_name, c.model_version_id)) AS source_key
      FROM labeling_app_taskcompletion tc JOIN labeling_app_completion c ON c.id = tc.completion_id
      GROUP BY tc.task_id) k
WHERE t.id = k.task_id;
"""

DROP_SOURCE_KEY = """
DROP TRIGGER IF EXISTS labeling_task_source_key_fill ON labeling_app_taskcompletion;
DROP FUNCTION IF EXISTS labeling_task_source_key_fill();
DROP FUNCTION IF EXISTS labeling_completion_source_key(text, text, bigint);
"""


def _replace_once(sql: str, old: str, new: str) -> str:
    assert sql.count(old) == 1, f"0009's hand-out changed: {old!r} is not in it exactly once; update 0014_queue_order"
    return sql.replace(old, new)


# The project's order is read with its lease length (the statement that also checks the labeler may label it).
_LEASE = "SELECT make_interval(mins => p.lease_minutes) INTO v_lease FROM labeling_app_project p"
_DECLARE = "    v_tried bigint[] := '{}';\n"


# Among the started tasks (a small set: partly labeled tasks and live leases) the project's order applies too.
# The order's sort keys are read with the set, so the statement sorts the set first and checks candidates
# (the probes of CANDIDATE) lazily in that order, as 0008 did with `ORDER BY c.id`; a key read from the
# joined task row instead made the planner check every started task before sorting (or worse, loop over
# the whole set per open task: 9 s on 20k tasks).
def _started_keys(alias: str) -> str:
    return (
        f"CASE WHEN v_order = 'source_first' AND {alias}.source_key = v_source THEN 0 ELSE 1 END AS k_source, "
        f"CASE WHEN v_order = 'fewest_labels' THEN {alias}.submitted_count END AS k_labels, "
        f"CASE WHEN v_order = 'uncertainty' THEN {alias}.uncertainty_margin END AS k_margin, "
        f"CASE WHEN v_order = 'newest' THEN -{alias}.id ELSE {alias}.id END AS k_id"
    )


_STARTED_SUBMITTED = "SELECT st.id FROM labeling_app_rankingtask st"
STARTED_SUBMITTED = f"SELECT st.id, {_started_keys('st')} FROM labeling_app_rankingtask st"
_STARTED_LEASED = "SELECT s.task_id FROM labeling_app_assignment s WHERE s.expires_at > p_now"
STARTED_LEASED = (
    f"SELECT k.id, {_started_keys('k')} FROM labeling_app_assignment s "
    "JOIN labeling_app_rankingtask k ON k.id = s.task_id WHERE s.expires_at > p_now AND k.project_id = p_project"
)
_STARTED_FROM = "FROM started c JOIN labeling_app_rankingtask t ON t.id = c.id"
# Sorted in a subquery (OFFSET 0 keeps it one): the join keeps its order, so the top ORDER BY needs no sort.
STARTED_FROM = (
    "FROM (SELECT * FROM started ORDER BY k_source, k_labels, k_margin, k_id OFFSET 0) c "
    "JOIN labeling_app_rankingtask t ON t.id = c.id"
)
_STARTED_ORDER = "ORDER BY c.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED;"
STARTED_ORDER = "ORDER BY c.k_source, c.k_labels, c.k_margin, c.k_id LIMIT 1 FOR UPDATE OF t SKIP LOCKED;"

# The two picks of an open task (skipping locked rows, then waiting for a lock), oldest first in 0009.
_PICK = re.compile(
    r"(?P<indent>[ ]*)SELECT t\.id INTO v_candidate FROM labeling_app_rankingtask t WHERE (?P<condition>.*?)\n"
    r"[ ]*ORDER BY t\.project_id, t\.id LIMIT 1 FOR UPDATE OF t(?P<lock>( SKIP LOCKED)?);",
    re.DOTALL,
)


def _pick_in_order(match: re.Match) -> str:
    """The pick statement once per queue order, each with its own ORDER BY (and index)."""
    indent, condition, lock = match["indent"], match["condition"], match["lock"]

    def pick(order_by: str, extra: str = "", pad: str = "    ") -> str:
        return (
            f"{indent}{pad}SELECT t.id INTO v_candidate FROM labeling_app_rankingtask t WHERE {condition}{extra}\n"
            f"{indent}{pad}ORDER BY {order_by} LIMIT 1 FOR UPDATE OF t{lock};"
        )

    oldest = "t.project_id, t.id"
    return "\n".join(
        [
            f"{indent}IF v_order = 'newest' THEN",
            pick("t.project_id DESC, t.id DESC"),
            f"{indent}ELSIF v_order = 'fewest_labels' THEN",
            pick("t.project_id, t.submitted_count, t.id"),
            f"{indent}ELSIF v_order = 'uncertainty' THEN",
            pick("t.project_id, t.uncertainty_margin, t.id"),
            f"{indent}ELSE",
            f"{indent}    IF v_order = 'source_first' AND v_source <> '' THEN",
            pick("t.project_id, t.source_key, t.id", " AND t.source_key = v_source", pad="        "),
            f"{indent}    END IF;",
            f"{indent}    IF v_candidate IS NULL THEN",
            pick(oldest, pad="        "),
            f"{indent}    END IF;",
            f"{indent}END IF;",
        ]
    )


def assign_in_order(previous: str) -> str:
    """`previous` (the hand-out's CREATE OR REPLACE SQL) with the project's queue order applied."""
    sql = _replace_once(
        previous,
        _LEASE,
        "SELECT make_interval(mins => p.lease_minutes), p.queue_order, p.queue_source "
        "INTO v_lease, v_order, v_source FROM labeling_app_project p",
    )
    sql = _replace_once(sql, _DECLARE, _DECLARE + "    v_order text;\n    v_source text;\n")
    sql = _replace_once(sql, _STARTED_SUBMITTED, STARTED_SUBMITTED)
    sql = _replace_once(sql, _STARTED_LEASED, STARTED_LEASED)
    sql = _replace_once(sql, _STARTED_FROM, STARTED_FROM)
    sql = _replace_once(sql, _STARTED_ORDER, STARTED_ORDER)
    picks = len(_PICK.findall(sql))
    assert picks == 2, f"0009's hand-out has {picks} open-task picks, not 2: update 0014_queue_order"
    sql = sql.replace(
        "-- Any open task, oldest first, walking task_open_idx.",
        "-- Any open task, in the project's queue order, each order walking its own index.",
    )
    return _PICK.sub(_pick_in_order, sql)


ASSIGN_IN_ORDER = assign_in_order(_PREVIOUS)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0013_review"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="queue_order",
            field=models.CharField(
                choices=[
                    ("oldest", "Oldest first"),
                    ("newest", "Newest first"),
                    ("fewest_labels", "Fewest labels first"),
                    ("source_first", "Chosen source first"),
                    ("uncertainty", "Reward model least sure first"),
                ],
                db_default="oldest",
                default="oldest",
                help_text="Which open task a labeler gets next.",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="queue_source",
            field=models.TextField(
                blank=True,
                db_default="",
                default="",
                help_text="With 'source first': the tasks of this source come first.",
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="source_key",
            field=models.TextField(blank=True, db_default="", default="", editable=False),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="uncertainty_margin",
            field=models.FloatField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True), ("submitted_count__lt", models.F("overlap"))),
                fields=["project", "submitted_count", "id"],
                name="task_open_fewest_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True), ("submitted_count__lt", models.F("overlap"))),
                fields=["project", "source_key", "id"],
                name="task_open_source_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True), ("submitted_count__lt", models.F("overlap"))),
                fields=["project", "uncertainty_margin", "id"],
                name="task_open_margin_idx",
            ),
        ),
        migrations.RunSQL(SOURCE_KEY, DROP_SOURCE_KEY),
        migrations.RunSQL(ASSIGN_IN_ORDER, _PREVIOUS),
    ]
