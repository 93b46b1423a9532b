"""The quality page's SQL aggregates give the numbers of the row-by-row Python computation they replaced.

`reference_agreement` and `reference_labeler_stats` are that earlier path (every label loaded through
`iter_label_rows`, statistics over lists), kept here as the oracle. The fixture is random but seeded, with
ties, missing Likert ratings, unanswered checks, a label that ranks only some completions, imported labels,
three labelers on some tasks and two on others (Cohen and Fleiss both appear) and shown orders.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from itertools import combinations

import pytest
from django.db.models import Count, F, Q
from django.utils import timezone

from labeling_app.models import (
    Annotation,
    CheckAnswer,
    CheckQuestion,
    Completion,
    ImportSource,
    Prompt,
    RankingTask,
    Rating,
)
from labeling_app.selectors import agreement as stats
from labeling_app.selectors.labels import LabelFilters, iter_label_rows
from labeling_app.selectors.quality import (
    agreement_for_project,
    agreement_per_day,
    labeler_stats,
    quality_aggregates,
)
from labeling_app.services.projects import project_create, task_create
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label


def _rows_by_task(project):
    by_task = defaultdict(list)
    for row in iter_label_rows(LabelFilters(project_ids=[project.pk], include_imported=False)):
        by_task[row.task_id].append(row)
    return by_task


def reference_agreement(project) -> dict:
    by_task = _rows_by_task(project)
    agreeing = comparable = 0
    taus, likert_units, shared = [], [], 0
    check_items = defaultdict(list)
    for rows in by_task.values():
        if len(rows) < 2:
            continue
        shared += 1
        for a, b in combinations(rows, 2):
            ag, co = stats.ranking_pair_agreement(a.ranks, b.ranks)
            agreeing, comparable = agreeing + ag, comparable + co
            tau = stats.kendall_tau_b(a.ranks, b.ranks)
            if tau is not None:
                taus.append(tau)
        k = len(rows[0].completions)
        for pos in range(k):
            likert_units.append([r.ratings[pos] for r in rows])
        for key in set().union(*(r.checks for r in rows)):
            for pos in range(k):
                answers = [r.checks[key][pos] for r in rows if key in r.checks and r.checks[key][pos] is not None]
                if len(answers) >= 2:
                    check_items[key].append(answers)
    return {
        "shared_tasks": shared,
        "ranking": {
            "agreeing": agreeing,
            "comparable": comparable,
            "pair_agreement": agreeing / comparable if comparable else None,
            "kendall_tau": sum(taus) / len(taus) if taus else None,
            "tau_pairs": len(taus),
        },
        "likert": {
            "alpha": stats.krippendorff_alpha_ordinal(likert_units),
            "units": sum(1 for u in likert_units if sum(v is not None for v in u) >= 2),
        },
        "checks": {
            q.key: stats.binary_agreement(check_items.get(q.key, []))
            for q in CheckQuestion.objects.filter(project=project)
        },
    }


def reference_labeler_stats(project) -> list[dict]:
    per = defaultdict(
        lambda: {
            "tasks": 0,
            "seconds": [],
            "agreeing": 0,
            "comparable": 0,
            "first_best": 0,
            "first_known": 0,
            "contradicting_labels": 0,
            "contradicting_pairs": 0,
        }
    )
    for rows in _rows_by_task(project).values():
        for row in rows:
            s = per[(row.labeler, row.labeler_id)]
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
    return [
        {
            "labeler": name,
            "labeler_id": lid,
            "tasks": s["tasks"],
            "median_seconds": stats.median(s["seconds"]),
            "agreement": s["agreeing"] / s["comparable"] if s["comparable"] else None,
            "comparable_pairs": s["comparable"],
            "position_bias": s["first_best"] / s["first_known"] if s["first_known"] else None,
            "contradicting_labels": s["contradicting_labels"],
            "contradicting_pairs": s["contradicting_pairs"],
        }
        for (name, lid), s in sorted(per.items())
    ]


def same(a, b) -> bool:
    """Equal, floats to 1e-12 (SQL sums in another order than Python)."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return a == b


@pytest.fixture
def random_world(researcher):
    rng = random.Random(12)
    people = [make_user(f"rq{i}", "labeler") for i in range(4)]
    project = project_create(
        name="SQL quality",
        user=researcher,
        completions_per_task=3,
        overlap=5,
        checks=[("toxic", "Toxic?"), ("satisfies", "Satisfies?", False), ("rare", "Rare?")],
    )
    source = ImportSource.objects.create(name="pub")
    now = timezone.now()
    for t in range(30):
        prompt = Prompt.objects.create(project=project, text=f"P{t}")
        task = task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"c{t}-{j}", source="imported") for j in range(3)
            ],
        )
        ids = [tc.completion_id for tc in task.task_completions.order_by("position")]
        chosen = rng.sample(people, rng.choice([1, 2, 2, 3]))
        for person in chosen:
            ranks = [rng.randint(1, 3) for _ in range(3)]  # ties on purpose
            likerts = [rng.choice([None, 1, 2, 4, 5, 7]) for _ in range(3)] if rng.random() < 0.8 else None
            checks = {
                key: [rng.random() < 0.3 for _ in range(3)] for key in ("toxic", "satisfies") if rng.random() < 0.8
            }
            if len(chosen) == 3:  # asked on three-label tasks only: Fleiss' kappa
                checks["rare"] = [rng.random() < 0.5 for _ in range(3)]
            shown = rng.sample(ids, 3) if rng.random() < 0.8 else []
            label(
                task,
                person,
                ranks,
                likerts,
                checks,
                seconds=rng.randint(5, 500),
                shown_order=shown or None,
                submitted_at=now - timedelta(days=rng.randint(0, 4), hours=rng.randint(0, 23)),
            )
        if t % 7 == 0:  # an imported label: never compared
            imported = Annotation.objects.create(task=task, import_source=source, status="submitted", submitted_at=now)
            for cid in ids:
                Rating.objects.create(annotation=imported, completion_id=cid, rank=rng.randint(1, 3))
        if t % 11 == 0:  # a label that ranks only some completions: unusable, left out everywhere
            partial = label(task, make_user(f"partial{t}", "labeler"), [1, 2, 3], [1, 2, 3])
            Rating.objects.filter(annotation=partial, completion_id=ids[2]).delete()
    return project


def test_sql_agreement_equals_the_python_path(random_world):
    expected, got = reference_agreement(random_world), agreement_for_project(random_world)
    assert got["shared_tasks"] == expected["shared_tasks"] > 10
    for key, value in expected["ranking"].items():
        assert same(got["ranking"][key], value), key
    for key, value in expected["likert"].items():
        assert same(got["likert"][key], value), key
    kinds = set()
    for check in got["checks"]:
        for key, value in expected["checks"][check["key"]].items():
            assert same(check[key], value), (check["key"], key)
        kinds.add(check["kappa_kind"])
    assert kinds >= {"Cohen", "Fleiss"}  # both kappas are exercised


def test_sql_labeler_stats_equal_the_python_path(random_world):
    expected, got = reference_labeler_stats(random_world), labeler_stats(random_world)
    assert [r["labeler"] for r in got] == [r["labeler"] for r in expected] and len(got) == 4
    for g, e in zip(got, expected):
        for key, value in e.items():
            assert same(g[key], value), (e["labeler"], key)
    one = labeler_stats(random_world, labeler_id=expected[1]["labeler_id"])
    assert [r["labeler"] for r in one] == [expected[1]["labeler"]] and same(
        one[0]["agreement"], expected[1]["agreement"]
    )


def test_agreement_per_day_adds_up_to_the_pooled_figure(random_world):
    days = agreement_per_day(random_world)
    pooled = agreement_for_project(random_world)["ranking"]
    assert len(days) >= 2 and [d["day"] for d in days] == sorted(d["day"] for d in days)
    assert sum(d["agreeing"] for d in days) == pooled["agreeing"]
    assert sum(d["comparable"] for d in days) == pooled["comparable"]


def test_one_labeler_query_gives_that_labelers_row_of_the_project_figures(random_world):
    """The labeler page reads only the tasks that labeler labeled; each labeler's row must be the project-wide one."""
    every = quality_aggregates(random_world)["labelers"]
    assert len(every) == 4
    for row in every:
        assert labeler_stats(random_world, labeler_id=row["labeler_id"]) == [row]
    nobody = make_user("no_labels", "labeler")
    assert labeler_stats(random_world, labeler_id=nobody.pk) == []


def test_position_bias_when_the_first_shown_completion_is_unknown(random_world):
    """A shown order that is empty, not a number, or names a completion outside the task gives no position-bias
    figure for that label, in SQL as in the Python path; a float id equal to a completion's id still counts."""
    labels = list(
        Annotation.objects.filter(task__project=random_world, labeler__username__startswith="rq").order_by("id")
    )
    assert labels[2].task_id != labels[-1].task_id
    another_tasks = labels[-1].task.task_completions.values_list("completion_id", flat=True).first()
    for annotation, shown in zip(labels, ([], ["x"], [another_tasks], None)):
        if shown is None:  # a float equal to the first shown completion's id
            shown = [float(annotation.shown_order[0])]
        Annotation.objects.filter(pk=annotation.pk).update(shown_order=shown)
    expected, got = reference_labeler_stats(random_world), labeler_stats(random_world)
    for g, e in zip(got, expected, strict=True):
        for key, value in e.items():
            assert same(g[key], value), (e["labeler"], key)


def test_problem_counts_cover_every_submitted_human_label(random_world):
    """A check's answers and problems count every submitted human label, a label that ranks only some completions
    too (it is left out of agreement only), and never an imported label or a draft."""
    partial = Annotation.objects.filter(task__project=random_world, labeler__username__startswith="partial").first()
    toxic = CheckQuestion.objects.get(project=random_world, key="toxic")
    for rating in partial.ratings.all():
        CheckAnswer.objects.create(rating=rating, check_question=toxic, value=True)
    roomy = RankingTask.objects.filter(project=random_world, submitted_count__lt=F("overlap")).first()
    draft = label(roomy, make_user("drafty", "labeler"), [1, 2, 3], [1, 2, 3], {"toxic": [True, True, True]})
    Annotation.objects.filter(pk=draft.pk).update(status="draft")
    expected = {
        q["check_question_id"]: (q["answers"], q["problems"])
        for q in CheckAnswer.objects.filter(
            check_question__project=random_world,
            rating__annotation__status="submitted",
            rating__annotation__labeler__isnull=False,
        )
        .values("check_question_id")
        .annotate(answers=Count("id"), problems=Count("id", filter=Q(value=F("check_question__problem_answer"))))
    }
    got = {c["key"]: (c["answers"], c["problems"]) for c in agreement_for_project(random_world)["checks"]}
    questions = {q.key: q.pk for q in CheckQuestion.objects.filter(project=random_world)}
    assert got == {key: expected.get(pk, (0, 0)) for key, pk in questions.items()}
    assert got["toxic"][0] >= 2 + partial.ratings.count()  # the partial label's answers are in
