"""A researcher in a real browser reads the label-quality page: three plotly charts drawn from the SQL aggregates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling_app.models import Completion, Prompt
from labeling_app.services.projects import project_create, task_create
from tests.conftest import ARTIFACTS, login, make_user
from tests.labeling_app.researcher_fixtures import label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def trace(page, chart: str, i: int = 0) -> dict:
    """What plotly drew: the trace's x and y as the browser holds them."""
    return page.eval_on_selector(f"#chart-{chart}", f"el => ({{x: el.data[{i}].x, y: el.data[{i}].y}})")


def test_researcher_sees_quality_charts(page, live_server, researcher):
    ana, ben = make_user("ana", "labeler"), make_user("ben", "labeler")
    project = project_create(
        name="Charts", user=researcher, completions_per_task=3, overlap=2, checks=[("toxic", "Toxic?")]
    )
    now = timezone.now().replace(hour=12)
    for i in range(4):
        prompt = Prompt.objects.create(project=project, text=f"P{i}")
        task = task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"c{i}{j}", source="imported") for j in range(3)
            ],
        )
        day = now - timedelta(days=2 - min(i, 2))  # days -2, -1, 0, 0
        label(task, ana, [1, 2, 3], [7, 4, 1], {"toxic": [False, False, True]}, submitted_at=day)
        # ben agrees fully on the first two tasks and reverses one pair on the last two
        label(
            task,
            ben,
            [1, 2, 3] if i < 2 else [1, 3, 2],
            [6, 4, 2],
            {"toxic": [False, False, True]},
            submitted_at=day + timedelta(minutes=5),
        )

    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{project.pk}/quality/")
    for chart in ("labels-per-day", "agreement-per-day", "agreement-per-labeler"):
        page.wait_for_selector(f"#chart-{chart} .main-svg")
    days = [(now - timedelta(days=d)).date().isoformat() for d in (2, 1, 0)]
    assert trace(page, "labels-per-day") == {"x": days, "y": [2, 2, 4]}  # people: both labelers each day
    per_day = trace(page, "agreement-per-day")
    assert per_day["x"] == days and per_day["y"][:2] == [1, 1] and per_day["y"][2] == pytest.approx(4 / 6)
    per_labeler = trace(page, "agreement-per-labeler")
    assert per_labeler["x"] == ["ana", "ben"] and per_labeler["y"] == pytest.approx([10 / 12, 10 / 12])
    assert "Agreement over time" in page.inner_text("#chart-agreement-per-day")
    assert "labels submitted" in page.inner_text("#chart-labels-per-day")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "quality-charts.png"), full_page=True)


def test_quality_charts_say_so_when_there_is_nothing_yet(page, live_server, researcher):
    project = project_create(name="Empty charts", user=researcher, completions_per_task=2, overlap=2)
    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{project.pk}/quality/")
    page.wait_for_selector("#chart-labels-per-day.chart-empty")
    assert "no labels yet" in page.inner_text("#chart-labels-per-day")
    assert "no task has two labels" in page.inner_text("#chart-agreement-per-day")


def test_the_page_says_how_old_its_figures_are_and_refreshes_them(page, live_server, researcher, labeler, labeler2):
    project = project_create(
        name="Snapshot", user=researcher, completions_per_task=3, overlap=2, checks=[("toxic", "Toxic?")]
    )
    tasks = []
    for i in range(2):
        prompt = Prompt.objects.create(project=project, text=f"P{i}")
        completions = [Completion.objects.create(prompt=prompt, text=f"c{i}{j}", source="imported") for j in range(3)]
        tasks.append(task_create(project=project, prompt=prompt, completions=completions))
    label(tasks[0], labeler, [1, 2, 3], [7, 4, 1])
    label(tasks[0], labeler2, [1, 3, 2], [6, 2, 4])
    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{project.pk}/quality/")
    note = page.inner_text("#snapshot-note")
    assert "figures as of" in note and "since" not in note and page.inner_text("#ranking-agreement") == "66.7%"

    label(tasks[1], labeler, [1, 2, 3], [7, 4, 1])
    label(tasks[1], labeler2, [1, 2, 3], [6, 4, 2])
    page.reload()
    assert "(2 new labels since; refreshing…)" in page.inner_text("#snapshot-note")
    assert page.inner_text("#ranking-agreement") == "66.7%", "the stored figures until the refresh"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "quality-snapshot-stale.png"))

    page.click("#snapshot-note button:has-text('Refresh now')")
    page.wait_for_selector(".messages >> text=Statistics recomputed from 4 labels.")
    assert "since" not in page.inner_text("#snapshot-note")
    assert page.inner_text("#ranking-agreement") == "83.3%"  # 2 + 3 of 3 + 3 pairs ordered alike
    page.screenshot(path=str(ARTIFACTS / "quality-snapshot-refreshed.png"))
