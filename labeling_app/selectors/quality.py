"""Label quality for a project: progress, inter-labeler agreement and per-labeler figures (imported labels kept apart)."""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckAnswer, CheckQuestion, Project, RankingTask
from labeling_app.selectors import agreement as stats
from labeling_app.selectors.labels import LabelFilters, iter_label_rows


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


def _human_rows_by_task(project: Project):
    """{task_id: [LabelRow, ...]} of the project's human labels (imported ones are not compared)."""
    by_task = defaultdict(list)
    for row in iter_label_rows(LabelFilters(project_ids=[project.pk], include_imported=False)):
        by_task[row.task_id].append(row)
    return by_task


def agreement_for_project(project: Project) -> dict:
    """Inter-labeler agreement over tasks with two or more human labels.

    ranking: pooled share of strictly-ordered completion pairs two labelers order the same way
    (InstructGPT's figure) and the mean Kendall tau-b over labeler pairs; likert: Krippendorff's
    ordinal alpha with one unit per (task, completion); checks: per yes/no question, percent
    agreement and Cohen's (2 answers per item) or Fleiss' kappa, one item per (task, completion),
    next to the check's problem rate (`check_problem_counts`).
    """
    by_task = _human_rows_by_task(project)
    agreeing = comparable = 0
    taus: list[float] = []
    likert_units: list[list] = []
    check_items: dict[str, list[list[bool]]] = defaultdict(list)
    shared_tasks = 0
    for rows in by_task.values():
        if len(rows) < 2:
            continue
        shared_tasks += 1
        for a, b in combinations(rows, 2):
            ag, co = stats.ranking_pair_agreement(a.ranks, b.ranks)
            agreeing, comparable = agreeing + ag, comparable + co
            tau = stats.kendall_tau_b(a.ranks, b.ranks)
            if tau is not None:
                taus.append(tau)
        k = len(rows[0].completions)
        for pos in range(k):
            likert_units.append([r.ratings[pos] for r in rows])
        keys = set().union(*(r.checks for r in rows))
        for key in keys:
            for pos in range(k):
                answers = [r.checks[key][pos] for r in rows if key in r.checks and r.checks[key][pos] is not None]
                if len(answers) >= 2:
                    check_items[key].append(answers)
    questions = {q.key: q for q in CheckQuestion.objects.filter(project=project)}
    problem_counts = check_problem_counts(project)
    checks = []
    for key, q in questions.items():
        result = stats.binary_agreement(check_items.get(key, []))
        answers, problems = problem_counts.get(q.pk, (0, 0))
        checks.append({"key": key, "question": q.question, "active": q.active, "problem_word": q.problem_word,
                       "serious": q.serious, "answers": answers, "problems": problems,
                       "problem_rate": problems / answers if answers else None, **result})
    imported = Annotation.objects.filter(task__project=project, status=Annotation.Status.SUBMITTED, labeler__isnull=True).count()
    return {
        "shared_tasks": shared_tasks,
        "ranking": {"agreeing": agreeing, "comparable": comparable,
                    "pair_agreement": agreeing / comparable if comparable else None,
                    "kendall_tau": sum(taus) / len(taus) if taus else None, "tau_pairs": len(taus)},
        "likert": {"alpha": stats.krippendorff_alpha_ordinal(likert_units),
                   "units": sum(1 for u in likert_units if sum(v is not None for v in u) >= 2)},
        "checks": checks,
        "imported_labels": imported,
    }


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


def labeler_stats(project: Project) -> list[dict]:
    """Per human labeler: tasks, median seconds per task, pair agreement with the others on shared tasks,
    position bias (share of labels whose first-shown completion got rank 1, against 1/K by chance, ties
    inflate it) and labels whose Likert ratings contradict their own ranking."""
    by_task = _human_rows_by_task(project)
    per: dict[str, dict] = defaultdict(lambda: {"tasks": 0, "seconds": [], "agreeing": 0, "comparable": 0,
                                                "first_best": 0, "first_known": 0, "contradicting_labels": 0,
                                                "contradicting_pairs": 0, "labeler_id": None})
    for rows in by_task.values():
        for row in rows:
            s = per[row.labeler]
            s["labeler_id"] = row.labeler_id
            s["tasks"] += 1
            if row.submitted_at and row.started_at:
                s["seconds"].append((row.submitted_at - row.started_at).total_seconds())
            best = stats.first_shown_ranked_best(row.shown_order, dict(zip(row.completion_ids, row.ranks)))
            if best is not None:
                s["first_known"] += 1
                s["first_best"] += best
            c = stats.rating_contradictions(row.ranks, row.ratings)
            s["contradicting_pairs"] += c
            s["contradicting_labels"] += c > 0
            for other in rows:
                if other.annotation_id != row.annotation_id:
                    ag, co = stats.ranking_pair_agreement(row.ranks, other.ranks)
                    s["agreeing"] += ag
                    s["comparable"] += co
    k = project.completions_per_task
    out = []
    for name, s in sorted(per.items()):
        out.append({
            "labeler": name, "labeler_id": s["labeler_id"], "tasks": s["tasks"],
            "median_seconds": stats.median(s["seconds"]),
            "agreement": s["agreeing"] / s["comparable"] if s["comparable"] else None, "comparable_pairs": s["comparable"],
            "position_bias": s["first_best"] / s["first_known"] if s["first_known"] else None, "chance": 1 / k,
            "contradicting_labels": s["contradicting_labels"], "contradicting_pairs": s["contradicting_pairs"],
        })
    return out


def labeler_or_404(user_id: int):
    return get_object_or_404(get_user_model(), pk=user_id)


def labeler_activity(project: Project, labeler, *, recent: int = 20) -> dict:
    """One labeler's submitted labels in a project: `per_day` [{day, n}] and the `recent` newest."""
    annotations = Annotation.objects.filter(task__project=project, labeler=labeler, status=Annotation.Status.SUBMITTED)
    per_day = annotations.annotate(day=TruncDate("submitted_at")).values("day").annotate(n=Count("id")).order_by("day")
    return {"per_day": list(per_day), "recent": list(annotations.order_by("-submitted_at")[:recent])}
