"""Label quality for a project: progress, inter-labeler agreement and per-labeler figures (imported labels kept apart)."""
from __future__ import annotations

from collections import defaultdict

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckAnswer, CheckQuestion, Project, RankingTask
from labeling_app.selectors import agreement as stats


def project_progress(project: Project) -> dict:
    """Tasks done (all overlap labels in) / in progress (some labels, or leased now) / waiting, and labels per day."""
    tasks = RankingTask.objects.filter(project=project)
    leased = Exists(Assignment.objects.filter(task=OuterRef("pk"), expires_at__gt=timezone.now()))
    counts = tasks.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(submitted_count__gte=F("overlap"))),
    )
    in_progress = tasks.filter(submitted_count__lt=F("overlap")).filter(Q(submitted_count__gt=0) | leased).count()
    per_day = (
        Annotation.objects.filter(task__project=project, status=Annotation.Status.SUBMITTED)
        .annotate(day=TruncDate("submitted_at"))
        .values("day")
        .annotate(human=Count("id", filter=Q(labeler__isnull=False)), imported=Count("id", filter=Q(labeler__isnull=True)))
        .order_by("day")
    )
    return {
        "tasks": counts["total"], "done": counts["done"], "in_progress": in_progress,
        "waiting": counts["total"] - counts["done"] - in_progress,
        "labels_per_day": list(per_day),
    }


# The project's submitted human labels that rank every completion of their task (`iter_label_rows` drops the
# others too), one row per (label, task completion). Imported labels are never compared. Every statistic
# below is a query over this, so the page reads aggregates, never the labels themselves.
_USABLE = """
WITH ann AS (
    SELECT a.id, a.task_id, a.labeler_id, a.submitted_at, a.started_at, a.shown_order
    FROM labeling_app_annotation a JOIN labeling_app_rankingtask t ON t.id = a.task_id
    WHERE t.project_id = %(project)s AND a.status = 'submitted' AND a.labeler_id IS NOT NULL
), rated AS (
    SELECT ann.id AS annotation_id, ann.task_id, tc.completion_id, tc.position, r.id AS rating_id, r.rank, r.likert
    FROM ann JOIN labeling_app_taskcompletion tc ON tc.task_id = ann.task_id
    LEFT JOIN labeling_app_rating r ON r.annotation_id = ann.id AND r.completion_id = tc.completion_id
), usable AS (
    SELECT annotation_id FROM rated GROUP BY annotation_id HAVING count(rank) = count(*)
), ur AS (
    SELECT rated.* FROM rated JOIN usable USING (annotation_id)
), pairs AS (  -- two labels of a task x two completions: the signs of their rank differences
    SELECT x1.annotation_id AS a, y1.annotation_id AS b, x1.task_id,
           sign(x1.rank - x2.rank) AS sa, sign(y1.rank - y2.rank) AS sb
    FROM ur x1
    JOIN ur x2 ON x2.annotation_id = x1.annotation_id AND x2.position > x1.position
    JOIN ur y1 ON y1.task_id = x1.task_id AND y1.completion_id = x1.completion_id AND y1.annotation_id > x1.annotation_id
    JOIN ur y2 ON y2.annotation_id = y1.annotation_id AND y2.completion_id = x2.completion_id
), label_pairs AS (  -- per pair of labels: InstructGPT's agreeing/comparable and Kendall's tau-b
    SELECT a, b, task_id,
           count(*) FILTER (WHERE sa <> 0 AND sb <> 0 AND sa = sb) AS agreeing,
           count(*) FILTER (WHERE sa <> 0 AND sb <> 0) AS comparable,
           count(*) AS n0, count(*) FILTER (WHERE sa = 0) AS tied_a, count(*) FILTER (WHERE sb = 0) AS tied_b
    FROM pairs GROUP BY a, b, task_id
), label_pair_tau AS (
    SELECT *, CASE WHEN (n0 - tied_a) * (n0 - tied_b) > 0
                   THEN (2 * agreeing - comparable) / sqrt(((n0 - tied_a) * (n0 - tied_b))::float8) END AS tau
    FROM label_pairs
)
"""


def _query(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(_USABLE + sql, params)
        return cursor.fetchall()


def _ranking_agreement(project: Project) -> dict:
    ((shared_tasks,),) = _query("SELECT count(*) FROM (SELECT task_id FROM ur GROUP BY task_id "
                                "HAVING count(DISTINCT annotation_id) >= 2) shared", {"project": project.pk})
    ((agreeing, comparable, tau_sum, tau_pairs),) = _query(
        "SELECT coalesce(sum(agreeing), 0)::bigint, coalesce(sum(comparable), 0)::bigint, sum(tau), count(tau) "
        "FROM label_pair_tau",
        {"project": project.pk})
    return {"shared_tasks": shared_tasks, "ranking": {
        "agreeing": int(agreeing), "comparable": int(comparable),
        "pair_agreement": agreeing / comparable if comparable else None,
        "kendall_tau": tau_sum / tau_pairs if tau_pairs else None, "tau_pairs": tau_pairs}}


def _likert_agreement(project: Project) -> dict:
    """Krippendorff's ordinal alpha over units (task, completion) from the coincidence matrix summed in SQL."""
    rows = _query("""
        , uv AS (SELECT task_id, completion_id, likert, count(*) AS n FROM ur WHERE likert IS NOT NULL
                 GROUP BY task_id, completion_id, likert)
        , um AS (SELECT task_id, completion_id, sum(n) AS m FROM uv GROUP BY task_id, completion_id HAVING sum(n) >= 2)
        SELECT c.likert, k.likert, sum((c.n * (k.n - (c.likert = k.likert)::int))::float8 / (um.m - 1)),
               (SELECT count(*) FROM um)
        FROM uv c JOIN uv k USING (task_id, completion_id) JOIN um USING (task_id, completion_id)
        GROUP BY c.likert, k.likert""", {"project": project.pk})
    coincidence = {(c, k): w for c, k, w, _ in rows}
    return {"alpha": stats.krippendorff_alpha_from_coincidence(coincidence), "units": rows[0][3] if rows else 0}


def _check_tallies(project: Project) -> dict[str, list[stats.BinaryTally]]:
    """Per check key: items (task, completion) answered by two or more labels, grouped by their answers."""
    rows = _query("""
        , items AS (
            SELECT q.key, ur.task_id, ur.position, count(*) AS answers, count(*) FILTER (WHERE ans.value) AS yes,
                   (array_agg(ans.value ORDER BY ur.annotation_id))[1] AS first,
                   (array_agg(ans.value ORDER BY ur.annotation_id))[2] AS second
            FROM ur JOIN labeling_app_checkanswer ans ON ans.rating_id = ur.rating_id
            JOIN labeling_app_checkquestion q ON q.id = ans.check_question_id
            GROUP BY q.key, ur.task_id, ur.position HAVING count(*) >= 2)
        SELECT key, answers, yes, first, second, count(*), min(ARRAY[task_id, position])
        FROM items GROUP BY key, answers, yes, first, second""", {"project": project.pk})
    tallies: dict[str, list[stats.BinaryTally]] = defaultdict(list)
    for key, answers, yes, first, second, items, first_seen in rows:
        tallies[key].append(stats.BinaryTally(answers, yes, first, second, items, tuple(first_seen)))
    return tallies


def agreement_for_project(project: Project) -> dict:
    """Inter-labeler agreement over tasks with two or more human labels, aggregated in SQL.

    ranking: pooled share of strictly-ordered completion pairs two labelers order the same way
    (InstructGPT's figure) and the mean Kendall tau-b over labeler pairs; likert: Krippendorff's
    ordinal alpha with one unit per (task, completion); checks: per yes/no question, percent
    agreement and Cohen's (2 answers per item) or Fleiss' kappa, one item per (task, completion),
    next to the check's problem rate (`check_problem_counts`).
    """
    ranking = _ranking_agreement(project)
    tallies = _check_tallies(project)
    problem_counts = check_problem_counts(project)
    checks = []
    for q in CheckQuestion.objects.filter(project=project):
        result = stats.binary_agreement_from_tallies(tallies.get(q.key, []))
        answers, problems = problem_counts.get(q.pk, (0, 0))
        checks.append({"key": q.key, "question": q.question, "active": q.active, "problem_word": q.problem_word,
                       "serious": q.serious, "answers": answers, "problems": problems,
                       "problem_rate": problems / answers if answers else None, **result})
    imported = Annotation.objects.filter(task__project=project, status=Annotation.Status.SUBMITTED, labeler__isnull=True).count()
    return {**ranking, "likert": _likert_agreement(project), "checks": checks, "imported_labels": imported}


def agreement_per_day(project: Project) -> list[dict]:
    """Pair agreement of the labels compared on each day (the day the later of two labels came in): the chart's series."""
    rows = _query("""
        SELECT (greatest(x.submitted_at, y.submitted_at) AT TIME ZONE %(tz)s)::date AS day,
               sum(agreeing)::bigint, sum(comparable)::bigint
        FROM label_pairs lp JOIN ann x ON x.id = lp.a JOIN ann y ON y.id = lp.b
        GROUP BY day ORDER BY day""", {"project": project.pk, "tz": timezone.get_current_timezone_name()})
    return [{"day": day, "agreeing": int(a), "comparable": int(c), "pair_agreement": a / c if c else None}
            for day, a, c in rows]


def check_problem_counts(project: Project) -> dict[int, tuple[int, int]]:
    """{check id: (answers, answers that flag a problem)} over the project's submitted human labels.

    Agreement does not depend on a check's polarity, this does: an answer flags a problem when it
    equals the check's `problem_answer` ("no" to "satisfies the constraints", "yes" to the others).
    """
    rows = (CheckAnswer.objects.filter(check_question__project=project, rating__annotation__status=Annotation.Status.SUBMITTED,
                                       rating__annotation__labeler__isnull=False)
            .values("check_question_id")
            .annotate(answers=Count("id"), problems=Count("id", filter=Q(value=F("check_question__problem_answer"))))
            .order_by())
    return {r["check_question_id"]: (r["answers"], r["problems"]) for r in rows}


def labeler_stats(project: Project, *, labeler_id: int | None = None) -> list[dict]:
    """Per human labeler (or only `labeler_id`): tasks, median seconds per task, pair agreement with the others on
    shared tasks, position bias (share of labels whose first-shown completion got rank 1, against 1/K by chance,
    ties inflate it) and labels whose Likert ratings contradict their own ranking. One query, by labeler."""
    rows = _query("""
        , per_label AS (
            SELECT ann.id, ann.labeler_id,
                   extract(epoch FROM ann.submitted_at - ann.started_at)::float8 AS seconds,
                   (SELECT first.rank = min(ur.rank) FROM ur LEFT JOIN ur first ON first.annotation_id = ann.id
                        AND jsonb_typeof(ann.shown_order -> 0) = 'number'
                        AND first.completion_id = (ann.shown_order ->> 0)::bigint
                    WHERE ur.annotation_id = ann.id GROUP BY first.rank) AS first_best,
                   (SELECT count(*) FROM ur i JOIN ur j ON j.annotation_id = i.annotation_id AND j.position > i.position
                    WHERE i.annotation_id = ann.id AND i.likert IS NOT NULL AND j.likert IS NOT NULL
                      AND ((i.rank < j.rank AND i.likert < j.likert) OR (j.rank < i.rank AND j.likert < i.likert)))
                       AS contradicting
            FROM ann JOIN usable ON usable.annotation_id = ann.id
            WHERE %(labeler)s::int IS NULL OR ann.labeler_id = %(labeler)s::int
        ), pair_sides AS (
            SELECT a AS id, agreeing, comparable FROM label_pairs UNION ALL SELECT b, agreeing, comparable FROM label_pairs
        ), per_pairs AS (
            SELECT p.labeler_id, sum(s.agreeing)::bigint AS agreeing, sum(s.comparable)::bigint AS comparable
            FROM pair_sides s JOIN per_label p ON p.id = s.id GROUP BY p.labeler_id
        )
        SELECT p.labeler_id, u.username, count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY p.seconds) FILTER (WHERE p.seconds IS NOT NULL),
               coalesce(max(pp.agreeing), 0), coalesce(max(pp.comparable), 0),
               count(*) FILTER (WHERE p.first_best), count(p.first_best),
               count(*) FILTER (WHERE p.contradicting > 0), sum(p.contradicting)::bigint
        FROM per_label p JOIN auth_user u ON u.id = p.labeler_id LEFT JOIN per_pairs pp ON pp.labeler_id = p.labeler_id
        GROUP BY p.labeler_id, u.username ORDER BY u.username""", {"project": project.pk, "labeler": labeler_id})
    k = project.completions_per_task
    return [{
        "labeler": name, "labeler_id": lid, "tasks": tasks, "median_seconds": median,
        "agreement": agreeing / comparable if comparable else None, "comparable_pairs": int(comparable),
        "position_bias": first_best / first_known if first_known else None, "chance": 1 / k,
        "contradicting_labels": contradicting_labels, "contradicting_pairs": int(contradicting_pairs),
    } for lid, name, tasks, median, agreeing, comparable, first_best, first_known, contradicting_labels, contradicting_pairs
        in rows]


def labeler_or_404(user_id: int):
    return get_object_or_404(get_user_model(), pk=user_id)


def labeler_activity(project: Project, labeler, *, recent: int = 20) -> dict:
    """One labeler's submitted labels in a project: `per_day` [{day, n}] and the `recent` newest."""
    annotations = Annotation.objects.filter(task__project=project, labeler=labeler, status=Annotation.Status.SUBMITTED)
    per_day = annotations.annotate(day=TruncDate("submitted_at")).values("day").annotate(n=Count("id")).order_by("day")
    return {"per_day": list(per_day), "recent": list(annotations.order_by("-submitted_at")[:recent])}
