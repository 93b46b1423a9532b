"""Label quality for a project: progress, inter-labeler agreement and per-labeler figures (imported labels kept apart)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from django.contrib.auth import get_user_model
from django.db import connection

from config.db import cursor_with_setting
from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckQuestion, Project, RankingTask
from labeling_app.selectors import agreement as stats


def project_progress(project: Project) -> dict:
    """Tasks done (all overlap labels in) / in progress (some labels, or leased now) / waiting, and labels per day.

    Archived tasks are counted apart (`archived`), whatever their labels: done, in progress and waiting are
    over the live tasks, so "waiting" is what labelers can still be given. `tasks` is every task.
    """
    tasks = RankingTask.objects.filter(project=project)
    leased = Exists(Assignment.objects.filter(task=OuterRef("pk"), expires_at__gt=timezone.now()))
    counts = tasks.aggregate(
        total=Count("id"),
        archived=Count("id", filter=Q(archived_at__isnull=False)),
        done=Count("id", filter=Q(submitted_count__gte=F("overlap"), archived_at__isnull=True)),
    )
    in_progress = (
        tasks.filter(submitted_count__lt=F("overlap"), archived_at__isnull=True)
        .filter(Q(submitted_count__gt=0) | leased)
        .count()
    )
    return {
        "tasks": counts["total"],
        "done": counts["done"],
        "in_progress": in_progress,
        "archived": counts["archived"],
        "waiting": counts["total"] - counts["archived"] - counts["done"] - in_progress,
        "labels_per_day": labels_per_day(project),
    }


# The project's tasks, then each task's submitted labels through the (task, labeler) index (OFFSET 0 keeps it a
# probe per task): a join the planner is free to reorder scanned every project's labels (80-90 ms of a page at
# 200,000 labels, 2026-11-30).
_LABELS_PER_DAY_SQL = """
SELECT (a.submitted_at AT TIME ZONE %(tz)s)::date AS day, count(*) FILTER (WHERE a.labeler_id IS NOT NULL),
       count(*) FILTER (WHERE a.labeler_id IS NULL)
FROM labeling_app_rankingtask t
CROSS JOIN LATERAL (SELECT a.submitted_at, a.labeler_id FROM labeling_app_annotation a
                    WHERE a.task_id = t.id AND a.status = 'submitted' OFFSET 0) a
WHERE t.project_id = %(project)s
GROUP BY day ORDER BY day
"""


def labels_per_day(project: Project) -> list[dict]:
    """The project's submitted labels per local day, oldest first: [{day, human, imported}]."""
    with connection.cursor() as cursor:
        cursor.execute(_LABELS_PER_DAY_SQL, {"project": project.pk, "tz": timezone.get_current_timezone_name()})
        return [{"day": day, "human": human, "imported": imported} for day, human, imported in cursor.fetchall()]


# One statement computes every agreement figure of a project from its submitted human labels that rank every
# completion of their task (`iter_label_rows` drops the others too); imported labels are never compared.
#
# `human` reads the labels through the indexes (the project's tasks, then each task's labels), `lab` folds each
# usable one into one row whose arrays hold its completions, positions, ranks and Likert ratings in the task's
# completion order. Two labels of a task are compared position by position (their arrays line up, being the same
# task's completions), so the label rows are never joined with themselves row by row. `answers` reads each
# rating's check answers once, for both the check agreement and the checks' problem counts.
_LABELS_SQL = """
WITH human AS MATERIALIZED (  -- the project's submitted human labels
    SELECT a.*
    FROM labeling_app_rankingtask t
    CROSS JOIN LATERAL (  -- OFFSET 0: the task's labels through the index, not a scan of every project's labels
        SELECT a.id, a.task_id, a.labeler_id, a.submitted_at,
               extract(epoch FROM a.submitted_at - a.started_at)::float8 AS seconds,
               CASE WHEN jsonb_typeof(a.shown_order -> 0) = 'number' THEN (a.shown_order ->> 0)::numeric END AS shown_first
        FROM labeling_app_annotation a
        WHERE a.task_id = t.id AND a.status = 'submitted' AND a.labeler_id IS NOT NULL OFFSET 0) a
    WHERE t.project_id = %(project)s {only_tasks_of_labeler}
), lab AS MATERIALIZED (  -- one row per usable label, arrays in the task's completion order
    SELECT h.id, h.task_id, h.labeler_id, h.submitted_at, h.seconds, r.completions, r.positions,
           r.ranks, r.likerts, r.first_rank = r.best AS first_best
    FROM human h CROSS JOIN LATERAL (
        SELECT array_agg(tc.completion_id ORDER BY tc.position) AS completions,
               array_agg(tc.position ORDER BY tc.position) AS positions,
               array_agg(r.rank ORDER BY tc.position) AS ranks,
               array_agg(r.likert ORDER BY tc.position) AS likerts,
               count(*) > 0 AND count(r.id) = count(*) AS ranks_every_completion,
               min(r.rank) AS best, min(r.rank) FILTER (WHERE tc.completion_id = h.shown_first) AS first_rank
        FROM labeling_app_taskcompletion tc
        LEFT JOIN labeling_app_rating r ON r.annotation_id = h.id AND r.completion_id = tc.completion_id
        WHERE tc.task_id = h.task_id) r
    WHERE r.ranks_every_completion
), label_pairs AS MATERIALIZED (  -- per two labels of a task: InstructGPT's agreeing / comparable pairs, tau-b parts
    SELECT x.id AS a, y.id AS b, s.*
    FROM lab x JOIN lab y ON y.task_id = x.task_id AND y.id > x.id
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE sa <> 0 AND sb <> 0 AND sa = sb) AS agreeing,
               count(*) FILTER (WHERE sa <> 0 AND sb <> 0) AS comparable,
               count(*) AS n0, count(*) FILTER (WHERE sa = 0) AS tied_a, count(*) FILTER (WHERE sb = 0) AS tied_b
        FROM (SELECT sign(x.ranks[i] - x.ranks[j]) AS sa, sign(y.ranks[i] - y.ranks[j]) AS sb
              FROM generate_subscripts(x.ranks, 1) i, generate_subscripts(x.ranks, 1) j WHERE j > i) signs) s
    WHERE s.n0 > 0  -- a task of one completion has no pair to compare
), per_label AS MATERIALIZED (
    SELECT lab.id, lab.labeler_id, lab.seconds, lab.first_best,
           (SELECT count(*)  -- completion pairs ranked one way and rated the other
            FROM generate_subscripts(lab.ranks, 1) i, generate_subscripts(lab.ranks, 1) j
            WHERE j > i AND lab.likerts[i] IS NOT NULL AND lab.likerts[j] IS NOT NULL
              AND ((lab.ranks[i] < lab.ranks[j] AND lab.likerts[i] < lab.likerts[j])
                OR (lab.ranks[j] < lab.ranks[i] AND lab.likerts[j] < lab.likerts[i]))) AS contradicting
    FROM lab
), per_labeler_pairs AS MATERIALIZED (
    SELECT lab.labeler_id, sum(s.agreeing) AS agreeing, sum(s.comparable) AS comparable
    FROM (SELECT a AS id, agreeing, comparable FROM label_pairs UNION ALL SELECT b, agreeing, comparable FROM label_pairs) s
    JOIN lab ON lab.id = s.id GROUP BY lab.labeler_id
), likert_values AS (  -- Krippendorff's units are (task, completion): n labels gave it this value, m any value
    SELECT task_id, completion_id, likert, n, sum(n) OVER (PARTITION BY task_id, completion_id) AS m
    FROM (SELECT lab.task_id, u.completion_id, u.likert, count(*) AS n
          FROM lab, unnest(lab.completions, lab.likerts) u(completion_id, likert) WHERE u.likert IS NOT NULL
          GROUP BY lab.task_id, u.completion_id, u.likert) v
), answers AS MATERIALIZED (  -- every check answer of the project's human labels, usable or not
    SELECT h.id AS annotation_id, r.completion_id, ans.check_question_id, ans.value
    FROM human h
    CROSS JOIN LATERAL (SELECT r.id, r.completion_id FROM labeling_app_rating r WHERE r.annotation_id = h.id OFFSET 0) r
    CROSS JOIN LATERAL (  -- OFFSET 0: each rating's answers by index, not a walk of every project's answers
        SELECT ans.check_question_id, ans.value FROM labeling_app_checkanswer ans WHERE ans.rating_id = r.id OFFSET 0) ans
), check_items AS (  -- a check's items are (task, completion) with two or more answers from usable labels
    SELECT ans.check_question_id, lab.task_id, lab.positions[array_position(lab.completions, ans.completion_id)] AS position,
           count(*) AS answers, count(*) FILTER (WHERE ans.value) AS yes,
           -- the two answers in label order, for Cohen's kappa (items with more answers need neither: Fleiss);
           -- 2 * label id + answer orders the answers by label and keeps the answer in its lowest bit
           CASE WHEN count(*) = 2 THEN min(2 * lab.id + ans.value::int) %% 2 = 1 END AS first,
           CASE WHEN count(*) = 2 THEN max(2 * lab.id + ans.value::int) %% 2 = 1 END AS second
    FROM answers ans JOIN lab ON lab.id = ans.annotation_id
    WHERE ans.completion_id = ANY (lab.completions)  -- a rating of one of the task's completions
    GROUP BY 1, 2, 3 HAVING count(*) >= 2
)
"""

# Per human labeler: usable labels, median seconds, pair agreement with the others, position bias, contradictions.
_LABELERS_SELECT = """
    (SELECT coalesce(json_agg(json_build_array(labeler_id, username, tasks, median, agreeing, comparable, first_best,
                                               first_known, contradicting_labels, contradicting_pairs)
                              ORDER BY username), '[]') FROM (
        SELECT p.labeler_id, u.username, count(*) AS tasks,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY p.seconds) FILTER (WHERE p.seconds IS NOT NULL) AS median,
               coalesce(max(pp.agreeing), 0) AS agreeing, coalesce(max(pp.comparable), 0) AS comparable,
               count(*) FILTER (WHERE p.first_best) AS first_best, count(p.first_best) AS first_known,
               count(*) FILTER (WHERE p.contradicting > 0) AS contradicting_labels, sum(p.contradicting) AS contradicting_pairs
        FROM per_label p JOIN auth_user u ON u.id = p.labeler_id
        LEFT JOIN per_labeler_pairs pp ON pp.labeler_id = p.labeler_id
        {only_labeler}
        GROUP BY p.labeler_id, u.username) labelers)
"""

_QUALITY_SQL = (
    _LABELS_SQL.format(only_tasks_of_labeler="")
    + """
SELECT
    (SELECT count(*) FROM (SELECT task_id FROM lab GROUP BY task_id HAVING count(*) >= 2) shared),
    (SELECT json_build_object(
        'agreeing', coalesce(sum(agreeing), 0), 'comparable', coalesce(sum(comparable), 0),
        'tau_sum', sum(tau), 'tau_pairs', count(tau))
     FROM (SELECT agreeing, comparable, CASE WHEN (n0 - tied_a) * (n0 - tied_b) > 0
                  THEN (2 * agreeing - comparable) / sqrt(((n0 - tied_a) * (n0 - tied_b))::float8) END AS tau
           FROM label_pairs) taus),
    (SELECT coalesce(json_agg(json_build_array(c, k, w)), '[]') FROM (
        SELECT c.likert AS c, k.likert AS k, sum((c.n * (k.n - (c.likert = k.likert)::int))::float8 / (c.m - 1)) AS w
        FROM likert_values c JOIN likert_values k USING (task_id, completion_id) WHERE c.m >= 2
        GROUP BY c.likert, k.likert) coincidence),
    (SELECT count(*) FROM (SELECT FROM likert_values WHERE m >= 2 GROUP BY task_id, completion_id) units),
    (SELECT coalesce(json_agg(json_build_array(key, answers, yes, first, second, items, first_seen)), '[]') FROM (
        SELECT q.key, i.answers, i.yes, i.first, i.second, count(*) AS items, min(ARRAY[i.task_id, i.position]) AS first_seen
        FROM check_items i JOIN labeling_app_checkquestion q ON q.id = i.check_question_id
        GROUP BY q.key, i.answers, i.yes, i.first, i.second) tallies),
    (SELECT coalesce(json_agg(json_build_array(q.id, answers, problems)), '[]') FROM (
        -- an answer flags a problem when it equals the check's problem_answer (the polarity)
        SELECT ans.check_question_id, count(*) AS answers, count(*) FILTER (WHERE ans.value = q.problem_answer) AS problems
        FROM answers ans JOIN labeling_app_checkquestion q ON q.id = ans.check_question_id
        WHERE q.project_id = %(project)s GROUP BY ans.check_question_id) counts
        JOIN labeling_app_checkquestion q ON q.id = counts.check_question_id),
    (SELECT coalesce(json_agg(json_build_array(day, agreeing, comparable) ORDER BY day), '[]') FROM (
        SELECT (greatest(x.submitted_at, y.submitted_at) AT TIME ZONE %(tz)s)::date AS day,
               sum(lp.agreeing) AS agreeing, sum(lp.comparable) AS comparable
        FROM label_pairs lp JOIN lab x ON x.id = lp.a JOIN lab y ON y.id = lp.b GROUP BY day) days),"""
    + _LABELERS_SELECT.format(only_labeler="")
)

# One labeler's row of the same figures, read from the tasks that labeler labeled only (every pair of labels the
# row counts lies on those tasks): the labeler page costs that labeler's labels, not the project's.
_LABELER_SQL = (
    _LABELS_SQL.format(
        only_tasks_of_labeler="""AND t.id IN (SELECT m.task_id FROM labeling_app_annotation m
                           WHERE m.labeler_id = %(labeler)s AND m.status = 'submitted')"""
    )
    + "SELECT"
    + _LABELERS_SELECT.format(only_labeler="WHERE p.labeler_id = %(labeler)s")
)


# _NO_JIT: the planner counts each set-returning call over a label's arrays as 1,000 rows, so these statements'
# estimated cost passes jit_above_cost; compiling them took 7 s on a project of 4,000 labels that runs in well
# under a second without (EXPLAIN ANALYZE at pages_at_scale's size, 2026-11-30). Both statements run with JIT off.


def quality_aggregates(project: Project) -> dict:
    """Every agreement figure of the project's human labels, aggregated in one SQL statement (see `_QUALITY_SQL`):
    `shared_tasks`, `ranking`, `likert`, `check_tallies` {key: [BinaryTally]}, `check_problems` {check id: (answers,
    answers that flag a problem)}, `per_day` and `labelers`."""
    with cursor_with_setting("jit", "off") as cursor:  # see _NO_JIT
        cursor.execute(_QUALITY_SQL, {"project": project.pk, "tz": timezone.get_current_timezone_name()})
        shared, ranking, coincidence, units, tallies, problems, days, labelers = cursor.fetchone()
    check_tallies: dict[str, list[stats.BinaryTally]] = defaultdict(list)
    for key, answers, yes, first, second, items, first_seen in tallies:
        check_tallies[key].append(stats.BinaryTally(answers, yes, first, second, items, tuple(first_seen)))
    agreeing, comparable, tau_pairs = ranking["agreeing"], ranking["comparable"], ranking["tau_pairs"]
    return {
        "shared_tasks": shared,
        "ranking": {
            "agreeing": agreeing,
            "comparable": comparable,
            "pair_agreement": agreeing / comparable if comparable else None,
            "kendall_tau": ranking["tau_sum"] / tau_pairs if tau_pairs else None,
            "tau_pairs": tau_pairs,
        },
        "likert": {
            "alpha": stats.krippendorff_alpha_from_coincidence({(c, k): w for c, k, w in coincidence}),
            "units": units,
        },
        "check_tallies": check_tallies,
        "check_problems": {question: (answers, flagged) for question, answers, flagged in problems},
        "per_day": [
            {"day": date.fromisoformat(day), "agreeing": a, "comparable": c, "pair_agreement": a / c if c else None}
            for day, a, c in days
        ],
        "labelers": _labeler_rows(project, labelers),
    }


def _labeler_rows(project: Project, rows: list) -> list[dict]:
    k = project.completions_per_task
    return [
        {
            "labeler": name,
            "labeler_id": lid,
            "tasks": tasks,
            "median_seconds": median,
            "agreement": ag / co if co else None,
            "comparable_pairs": co,
            "position_bias": best / known if known else None,
            "chance": 1 / k,
            "contradicting_labels": c_labels,
            "contradicting_pairs": c_pairs,
        }
        for lid, name, tasks, median, ag, co, best, known, c_labels, c_pairs in rows
    ]


def extra_label_counts(project: Project) -> dict:
    """Adaptive overlap: `tasks` that got extra labels because their labels disagreed, the extra labels asked
    (`labels`), those tasks still `waiting` for one, and `enabled` (the project asks for them now)."""
    counts = RankingTask.objects.filter(project=project, extra_labels__gt=0).aggregate(
        tasks=Count("id"), labels=Sum("extra_labels"), waiting=Count("id", filter=Q(submitted_count__lt=F("overlap")))
    )
    return {
        "tasks": counts["tasks"],
        "labels": counts["labels"] or 0,
        "waiting": counts["waiting"],
        "enabled": project.adaptive_overlap,
        "max_overlap": project.max_overlap,
        "threshold": project.disagreement_threshold,
    }


def agreement_for_project(project: Project, aggregates: dict | None = None) -> dict:
    """Inter-labeler agreement over tasks with two or more human labels, from `quality_aggregates`.

    ranking: pooled share of strictly-ordered completion pairs two labelers order the same way
    (InstructGPT's figure) and the mean Kendall tau-b over labeler pairs; likert: Krippendorff's
    ordinal alpha with one unit per (task, completion); checks: per yes/no question, percent
    agreement and Cohen's (2 answers per item) or Fleiss' kappa, one item per (task, completion),
    next to the check's problem rate (`check_problems`: over every submitted human label, usable or not);
    extra_labels: how many tasks got extra labels (`extra_label_counts`).
    """
    aggregates = aggregates or quality_aggregates(project)
    problem_counts = aggregates["check_problems"]
    checks = []
    for q in CheckQuestion.objects.filter(project=project):
        result = stats.binary_agreement_from_tallies(aggregates["check_tallies"].get(q.key, []))
        answers, problems = problem_counts.get(q.pk, (0, 0))
        checks.append(
            {
                "key": q.key,
                "question": q.question,
                "active": q.active,
                "problem_word": q.problem_word,
                "serious": q.serious,
                "answers": answers,
                "problems": problems,
                "problem_rate": problems / answers if answers else None,
                **result,
            }
        )
    imported = Annotation.objects.filter(
        task__project=project, status=Annotation.Status.SUBMITTED, labeler__isnull=True
    ).count()
    return {
        "shared_tasks": aggregates["shared_tasks"],
        "ranking": aggregates["ranking"],
        "likert": aggregates["likert"],
        "checks": checks,
        "imported_labels": imported,
        "extra_labels": extra_label_counts(project),
    }


def agreement_per_day(project: Project, aggregates: dict | None = None) -> list[dict]:
    """Pair agreement of the labels compared on each day (the day the later of two labels came in), oldest first."""
    return (aggregates or quality_aggregates(project))["per_day"]


def labeler_stats(project: Project, *, labeler_id: int | None = None, aggregates: dict | None = None) -> list[dict]:
    """Per human labeler (or only `labeler_id`), by name: tasks, median seconds per task, pair agreement with the
    others on shared tasks, position bias (share of labels whose first-shown completion got rank 1, against 1/K
    by chance, ties inflate it) and labels whose Likert ratings contradict their own ranking."""
    if aggregates is None and labeler_id is not None:  # one labeler: read only the tasks they labeled
        with cursor_with_setting("jit", "off") as cursor:  # see _NO_JIT
            cursor.execute(_LABELER_SQL, {"project": project.pk, "labeler": labeler_id})
            return _labeler_rows(project, cursor.fetchone()[0])
    rows = (aggregates or quality_aggregates(project))["labelers"]
    return [r for r in rows if labeler_id is None or r["labeler_id"] == labeler_id]


def labeler_or_404(user_id: int):
    return get_object_or_404(get_user_model(), pk=user_id)


def labeler_activity(project: Project, labeler, *, recent: int = 20) -> dict:
    """One labeler's submitted labels in a project: `per_day` [{day, n}] and the `recent` newest."""
    annotations = Annotation.objects.filter(task__project=project, labeler=labeler, status=Annotation.Status.SUBMITTED)
    per_day = annotations.annotate(day=TruncDate("submitted_at")).values("day").annotate(n=Count("id")).order_by("day")
    return {"per_day": list(per_day), "recent": list(annotations.order_by("-submitted_at")[:recent])}


def agreement_running(per_day: list[dict]) -> list[dict]:
    """Pair agreement of every label pair compared up to and including each day (running sums of `per_day`, which
    SQL aggregated): the labelers' agreement on the data there was by then, oldest first."""
    agreeing = comparable = 0
    out = []
    for day in per_day:
        agreeing, comparable = agreeing + day["agreeing"], comparable + day["comparable"]
        out.append(
            {
                "day": day["day"],
                "agreeing": agreeing,
                "comparable": comparable,
                "pair_agreement": agreeing / comparable if comparable else None,
            }
        )
    return out


def reward_model_ceiling(project: Project, per_day: list[dict]) -> list[dict]:
    """Each reward model trained on the project's rankings (alone or with other projects'), oldest first, with its
    held-out accuracy on human rankings next to its ceiling: the labelers' pairwise agreement over the label pairs
    compared by the day it was trained (`agreement_running`). A model cannot be expected to agree with a labeler
    more often than labelers agree with each other. One query on the model registry; no label is read here."""
    from rlhf_worker.models import ModelVersion
    from rlhf_worker.selectors import metric_value

    running = agreement_running(per_day)
    versions = (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, data_snapshot__project_ids__contains=[project.pk])
        .order_by("created_at", "pk")
        .values("pk", "name", "created_at", "metrics", "is_promoted", "data_snapshot__project_ids")
    )
    rows = []
    for v in versions:
        day = timezone.localtime(v["created_at"]).date()
        ceiling = next((r for r in reversed(running) if r["day"] <= day), None)
        accuracy = metric_value(v["metrics"], "accuracy")
        agreement = ceiling["pair_agreement"] if ceiling else None
        rows.append(
            {
                "pk": v["pk"],
                "name": v["name"],
                "created_at": v["created_at"],
                "promoted": v["is_promoted"],
                "other_projects": len(v["data_snapshot__project_ids"] or []) > 1,
                "accuracy": accuracy,
                "ceiling": agreement,
                "ceiling_pairs": ceiling["comparable"] if ceiling else 0,
                "gap": agreement - accuracy if accuracy is not None and agreement is not None else None,
            }
        )
    return rows


def quality_charts(
    progress: dict, per_day: list[dict], labelers: list[dict], ceiling: list[dict] | None = None
) -> dict:
    """The quality page's chart series as plain JSON data (dates as "YYYY-MM-DD"): labels per day (people and
    imported), pair agreement per day, and agreement per labeler with how many pairs each figure rests on."""
    return {
        "labels_per_day": {
            "days": [d["day"].isoformat() for d in progress["labels_per_day"] if d["day"]],
            "human": [d["human"] for d in progress["labels_per_day"] if d["day"]],
            "imported": [d["imported"] for d in progress["labels_per_day"] if d["day"]],
        },
        "agreement_per_day": {
            "days": [d["day"].isoformat() for d in per_day],
            "agreement": [d["pair_agreement"] for d in per_day],
            "pairs": [d["comparable"] for d in per_day],
        },
        "agreement_per_labeler": {
            "labelers": [r["labeler"] for r in labelers if r["agreement"] is not None],
            "agreement": [r["agreement"] for r in labelers if r["agreement"] is not None],
            "pairs": [r["comparable_pairs"] for r in labelers if r["agreement"] is not None],
        },
        "reward_ceiling": _ceiling_chart(per_day, ceiling or []),
    }


def _ceiling_chart(per_day: list[dict], ceiling: list[dict]) -> dict:
    """The ceiling chart's series: running labeler agreement per day, and each reward model's held-out accuracy at
    the time it was trained (ISO times)."""
    running = [r for r in agreement_running(per_day) if r["pair_agreement"] is not None]
    with_accuracy = [r for r in ceiling if r["accuracy"] is not None]
    days = [r["day"].isoformat() for r in running]
    if running:  # the last figure holds until now: the step line reaches the newest model
        running.append(running[-1])
        days.append(timezone.localtime().isoformat())
    return {
        "days": days,
        "agreement": [r["pair_agreement"] for r in running],
        "pairs": [r["comparable"] for r in running],
        "models": [f"#{r['pk']} {r['name']}" for r in with_accuracy],
        "times": [timezone.localtime(r["created_at"]).isoformat() for r in with_accuracy],
        "accuracy": [r["accuracy"] for r in with_accuracy],
    }
