"""The task browser's selector: each filter over real rows, agreement as agreement.py defines it, keyset pages."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, Completion, ImportJob, Prompt, RankingTask
from labeling_app.selectors.agreement import ranking_pair_agreement
from labeling_app.selectors.labels import DateRange
from labeling_app.selectors.tasks import TaskFilters, task_page, tasks_count, tasks_matching
from labeling_app.services.projects import project_create, task_create
from labeling_app.services.task_archive import tasks_archive
from rlhf_worker.models import ModelVersion
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label

pytestmark = pytest.mark.django_db


def make_task(
    project, name: str, *, source: str = Completion.Source.IMPORTED, model_name: str = "gpt-x", version=None, k: int = 3
) -> RankingTask:
    prompt = Prompt.objects.create(project=project, text=f"Prompt {name}")
    return task_create(
        project=project,
        prompt=prompt,
        completions=[
            Completion.objects.create(
                prompt=prompt, text=f"{name} answer {j}", source=source, model_name=model_name, model_version=version
            )
            for j in range(k)
        ],
    )


@pytest.fixture
def world(researcher):
    """K=3, overlap 3: one task per state the filters tell apart."""
    project = project_create(name="Browse", user=researcher, completions_per_task=3, overlap=3)
    a, b, c = (make_user(f"lab{i}", "labeler") for i in range(3))
    policy = ModelVersion.objects.create(kind="policy", name="policy-v3", path="/models/v3")
    job = ImportJob.objects.create(project=project, kind="completions", status="succeeded", original_name="batch.jsonl")
    t = {
        name: make_task(project, name)
        for name in ("open", "leased", "single", "agree", "disagree", "tied", "full", "archived")
    }
    t["generated"] = make_task(project, "generated", source=Completion.Source.MODEL, model_name="", version=policy)
    RankingTask.objects.filter(pk=t["open"].pk).update(import_job=job)
    RankingTask.objects.filter(pk=t["single"].pk).update(created_at=timezone.now() - timedelta(days=40))
    label(t["single"], a, [1, 2, 3])
    label(t["agree"], a, [1, 2, 3])
    label(t["agree"], b, [1, 2, 2])  # the pair b ties is not comparable; the others agree
    label(t["disagree"], a, [1, 2, 3])
    label(t["disagree"], b, [1, 3, 2])  # completions 2 and 3 ordered oppositely
    label(t["tied"], a, [1, 1, 1])
    label(t["tied"], b, [3, 2, 1])  # every pair tied in a's label: nothing comparable, nothing disagrees
    for person, ranks in zip((a, b, c), ([1, 2, 3], [1, 2, 3], [2, 1, 3])):
        label(t["full"], person, ranks)
    label(t["archived"], a, [1, 2, 3])
    tasks_archive(project=project, tasks=RankingTask.objects.filter(pk=t["archived"].pk))
    Assignment.objects.create(task=t["leased"], labeler=a, expires_at=timezone.now() + timedelta(minutes=5))
    for task in t.values():
        task.refresh_from_db()
    return {"project": project, "t": t, "policy": policy, "job": job}


def names(world, filters: TaskFilters) -> set[str]:
    ids = set(tasks_matching(world["project"], filters).values_list("id", flat=True))
    assert tasks_count(world["project"], filters) == len(ids)
    return {name for name, task in world["t"].items() if task.pk in ids}


def test_status_filters_follow_the_progress_states(world):
    assert names(world, TaskFilters(status="open")) == {"open", "generated"}
    assert names(world, TaskFilters(status="in_progress")) == {"leased", "single", "agree", "disagree", "tied"}
    assert names(world, TaskFilters(status="complete")) == {"full"}
    assert names(world, TaskFilters(status="archived")) == {"archived"}
    assert len(names(world, TaskFilters())) == 9


def test_label_count_exact_and_range(world):
    assert names(world, TaskFilters(labels=0)) == {"open", "leased", "generated"}
    assert names(world, TaskFilters(labels=1)) == {"single", "archived"}
    assert names(world, TaskFilters(labels_min=2)) == {"agree", "disagree", "tied", "full"}
    assert names(world, TaskFilters(labels_min=1, labels_max=2)) == {"single", "archived", "agree", "disagree", "tied"}


def test_agreement_filters_match_the_pairwise_definition(world):
    assert names(world, TaskFilters(agreement="disagree")) == {"disagree", "full"}
    assert names(world, TaskFilters(agreement="agree")) == {"agree", "tied"}
    assert names(world, TaskFilters(agreement="single")) == {"single", "archived"}
    # The SQL says "disagree" exactly where agreement.ranking_pair_agreement finds a comparable pair not agreeing.
    for name, task in world["t"].items():
        labels = list(Annotation.objects.filter(task=task, status="submitted").order_by("id"))
        ranks = [[r.rank for r in a.ratings.order_by("completion_id")] for a in labels]
        by_python = any(
            c > ag for i, x in enumerate(ranks) for y in ranks[i + 1 :] for ag, c in [ranking_pair_agreement(x, y)]
        )
        assert (name in names(world, TaskFilters(agreement="disagree"))) == by_python, name


def test_source_policy_model_and_import_filters(world):
    assert names(world, TaskFilters(source="model")) == {"generated"}
    assert names(world, TaskFilters(policy=world["policy"].pk)) == {"generated"}
    assert names(world, TaskFilters(source="imported", policy=world["policy"].pk)) == set()  # one completion meets all
    assert names(world, TaskFilters(model_name="gpt-x")) == set(world["t"]) - {"generated"}
    assert names(world, TaskFilters(model_name="other")) == set()
    assert names(world, TaskFilters(import_job=world["job"].pk)) == {"open"}


def test_created_date_range(world):
    old_day = (timezone.localtime() - timedelta(days=40)).date()
    assert names(world, TaskFilters(dates=DateRange.parse(None, str(old_day)))) == {"single"}
    assert names(world, TaskFilters(dates=DateRange.parse(str(old_day + timedelta(days=1)), None))) == set(
        world["t"]
    ) - {"single"}
    assert names(world, TaskFilters(dates=DateRange(date(2000, 1, 1), date(2000, 1, 2)))) == set()


def test_filters_combine(world):
    assert names(world, TaskFilters(status="in_progress", agreement="disagree")) == {"disagree"}
    assert names(world, TaskFilters(labels=1, status="archived")) == {"archived"}


def test_page_rows_carry_status_agreement_and_sources(world):
    rows = {t.pk: t for t in task_page(world["project"], TaskFilters()).rows}
    t = world["t"]
    assert rows[t["leased"].pk].status == "in progress" and rows[t["open"].pk].status == "open"
    assert rows[t["archived"].pk].status == "archived" and rows[t["full"].pk].status == "complete"
    assert rows[t["disagree"].pk].disagree and not rows[t["agree"].pk].disagree
    assert rows[t["generated"].pk].sources == ["model: policy-v3"] and rows[t["open"].pk].sources == ["imported: gpt-x"]
    assert rows[t["open"].pk].prompt_snippet == "Prompt open"


def test_keyset_pages_walk_older_and_back_newer_without_counting(world):
    project = world["project"]
    all_ids = sorted(RankingTask.objects.filter(project=project).values_list("id", flat=True), reverse=True)
    first = task_page(project, TaskFilters(), size=4)
    assert [t.pk for t in first.rows] == all_ids[:4] and first.newer is None and first.older == all_ids[3]
    second = task_page(project, TaskFilters(), after=first.older, size=4)
    assert [t.pk for t in second.rows] == all_ids[4:8] and second.newer == all_ids[4]
    last = task_page(project, TaskFilters(), after=second.older, size=4)
    assert [t.pk for t in last.rows] == all_ids[8:] and last.older is None
    back = task_page(project, TaskFilters(), before=second.newer, size=4)
    assert [t.pk for t in back.rows] == all_ids[:4] and back.newer is None and back.older == all_ids[3]
    back2 = task_page(project, TaskFilters(), before=last.newer, size=4)
    assert [t.pk for t in back2.rows] == all_ids[4:8] and back2.newer == all_ids[4]
    # a page is two queries (the rows, their completions' sources) and never a count of the set
    with CaptureQueriesContext(connection) as queries:
        task_page(project, TaskFilters(agreement="disagree"), size=4)
    assert len(queries) == 2 and not any("COUNT(" in q["sql"].upper() for q in queries)
