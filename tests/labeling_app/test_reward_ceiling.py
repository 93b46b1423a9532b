"""The quality page puts each reward model trained on the project next to its ceiling: the labelers' pairwise
agreement over the label pairs compared by the day it was trained. Aggregated in SQL: the page's query count does
not grow with the labels."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from labeling_app.models import Completion, Prompt
from labeling_app.selectors.quality import agreement_running, quality_aggregates, reward_model_ceiling
from labeling_app.services.projects import project_create, task_create
from rlhf_worker.models import ModelVersion
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label

pytestmark = pytest.mark.django_db


@pytest.fixture
def labeled(researcher):
    """Four tasks labeled by two people: full agreement on days -2 and -1, one reversed pair of three on day 0 (x2)."""
    ana, ben = make_user("ana", "labeler"), make_user("ben", "labeler")
    project = project_create(name="Ceiling", user=researcher, completions_per_task=3, overlap=3, checks=[])
    now = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    for i in range(4):
        prompt = Prompt.objects.create(project=project, text=f"P{i}")
        task = task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"c{i}{j}", source="imported") for j in range(3)
            ],
        )
        day = now - timedelta(days=2 - min(i, 2))
        label(task, ana, [1, 2, 3], submitted_at=day)
        label(task, ben, [1, 2, 3] if i < 2 else [1, 3, 2], submitted_at=day + timedelta(minutes=5))
    return project, now


def reward(project_ids, when, accuracy, name):
    version = ModelVersion.objects.create(
        kind="reward",
        name=name,
        path=f"/models/{name}",
        metrics={"eval/accuracy": accuracy} if accuracy is not None else {},
        data_snapshot={"project_ids": project_ids},
    )
    ModelVersion.objects.filter(pk=version.pk).update(created_at=when)
    return version


def test_each_reward_model_sits_next_to_the_agreement_by_its_day(labeled, researcher):
    project, now = labeled
    other = project_create(name="Elsewhere", user=researcher, completions_per_task=2)
    early = reward([project.pk], now - timedelta(days=3), 0.55, "before any pair")
    first = reward([project.pk], now - timedelta(days=1, hours=-1), 0.61, "day -1")
    both = reward([other.pk, project.pk], now + timedelta(hours=1), 0.64, "both projects")
    reward([other.pk], now, 0.99, "other project only")
    reward([project.pk], now + timedelta(hours=2), None, "no eval")

    per_day = quality_aggregates(project)["per_day"]
    running = agreement_running(per_day)
    assert [(r["agreeing"], r["comparable"]) for r in running] == [(3, 3), (6, 6), (10, 12)]
    rows = reward_model_ceiling(project, per_day)
    assert [r["name"] for r in rows] == ["before any pair", "day -1", "both projects", "no eval"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["before any pair"]["ceiling"] is None and by_name["before any pair"]["gap"] is None
    assert by_name["day -1"]["ceiling"] == 1.0 and by_name["day -1"]["gap"] == pytest.approx(0.39)
    assert by_name["both projects"]["ceiling"] == pytest.approx(10 / 12) and by_name["both projects"]["other_projects"]
    assert by_name["both projects"]["ceiling_pairs"] == 12
    assert by_name["no eval"]["accuracy"] is None and by_name["no eval"]["gap"] is None
    assert early.pk == rows[0]["pk"] and first.pk == rows[1]["pk"] and both.pk == rows[2]["pk"]


def test_the_quality_page_shows_the_ceiling_table_and_chart_data(labeled, researcher):
    project, now = labeled
    version = reward([project.pk], now, 0.7, "reward-7")
    client = Client()
    client.force_login(researcher)
    response = client.get(f"/projects/{project.pk}/quality/")
    page = response.content.decode()
    assert "The reward model next to its ceiling" in page
    row = page[page.index(f'data-version="{version.pk}"') :]
    assert '<td class="accuracy">70.0%</td>' in row and "83.3%" in row and "(12 pairs)" in row
    chart = response.context["charts"]["reward_ceiling"]
    assert chart["models"] == [f"#{version.pk} reward-7"] and chart["accuracy"] == [0.7]
    # the running agreement per day, its last figure held until now
    assert chart["agreement"] == pytest.approx([1.0, 1.0, 10 / 12, 10 / 12]) and chart["pairs"] == [3, 6, 12, 12]
    assert chart["days"][:3] == [(now - timedelta(days=d)).date().isoformat() for d in (2, 1, 0)]


def test_the_page_costs_the_same_queries_with_more_labels(labeled, researcher, django_assert_max_num_queries):
    """The ceiling reads aggregates (one statement over the labels) and the model registry: more labels, no more queries."""
    project, now = labeled
    reward([project.pk], now, 0.7, "r")
    client = Client()
    client.force_login(researcher)
    client.get(f"/projects/{project.pk}/quality/")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        client.get(f"/projects/{project.pk}/quality/")
    carl = make_user("carl", "labeler")
    for task in project.tasks.all():
        label(task, carl, [2, 1, 3])
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(f"/projects/{project.pk}/quality/")
