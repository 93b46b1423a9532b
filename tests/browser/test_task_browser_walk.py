"""A researcher in a real browser filters the task list, archives the tasks whose labels disagree and every
unlabeled one (after a confirmation with the count), sees the labeler queue empty, and restores them all."""

from __future__ import annotations

import pytest

from labeling_app.models import Completion, Prompt, RankingTask
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, task_create
from tests.conftest import ARTIFACTS, login, make_user
from tests.labeling_app.researcher_fixtures import label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"task-browser-{name}.png"), full_page=True)


def rows(page) -> list[int]:
    return [int(x) for x in page.locator("#task-list tr[data-task]").evaluate_all("rs => rs.map(r => r.dataset.task)")]


def test_filter_select_archive_confirm_all_and_restore(page, live_server, researcher):
    project = project_create(name="Browse me", user=researcher, completions_per_task=2, overlap=2)
    tasks = []
    for i in range(5):
        prompt = Prompt.objects.create(project=project, text=f"Which is better, answer A or B? ({i})")
        tasks.append(
            task_create(
                project=project,
                prompt=prompt,
                completions=[
                    Completion.objects.create(prompt=prompt, text=f"Answer {j}", source="imported", model_name="gpt-x")
                    for j in range(2)
                ],
            )
        )
    a, b = make_user("lab-a", "labeler"), make_user("lab-b", "labeler")
    label(tasks[0], a, [1, 2])
    label(tasks[0], b, [2, 1])  # disagree
    label(tasks[1], a, [1, 2])
    label(tasks[1], b, [1, 2])  # agree
    label(tasks[2], a, [1, 2])  # a single label
    login(page, live_server, "res1")

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.click("#browse-tasks")
    page.wait_for_selector("#task-list")
    assert rows(page) == [t.pk for t in reversed(tasks)]
    shot(page, "1-all")

    page.select_option("#id_agreement", "disagree")
    page.click("#apply-filters")
    page.wait_for_url("**agreement=disagree**")
    assert rows(page) == [tasks[0].pk]
    page.check(f"input[name=task][value='{tasks[0].pk}']")
    shot(page, "2-disagree-selected")
    page.click("#archive-selected")
    page.wait_for_selector(".messages:has-text('1 task archived.')")
    assert "agreement=disagree" in page.url  # the filter stays
    assert page.inner_text(f"tr[data-task='{tasks[0].pk}'] .task-status").startswith("archived")
    shot(page, "3-archived-one")

    page.goto(f"{live_server.url}/projects/{project.pk}/tasks/")
    page.fill("#id_labels", "0")
    page.click("#apply-filters")
    assert rows(page) == [tasks[4].pk, tasks[3].pk]
    page.click("#archive-all")
    page.wait_for_selector("#bulk-confirm")
    assert page.inner_text("h1") == "Archive 2 tasks?"
    assert "Labels (exactly): 0" in page.inner_text("#bulk-filters")
    shot(page, "4-confirm-all")
    page.click("#bulk-confirm-button")
    page.wait_for_selector(".messages:has-text('2 tasks archived.')")
    assert set(RankingTask.objects.filter(archived_at__isnull=False).values_list("id", flat=True)) == {
        tasks[0].pk,
        tasks[3].pk,
        tasks[4].pk,
    }
    # the queue now hands out only the live tasks that want labels: tasks[2] (one label); never an archived one
    c = make_user("lab-c", "labeler")
    assert task_assign_next(project=project, labeler=c).task_id == tasks[2].pk
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert "3 archived" in page.inner_text("#progress-line")

    page.goto(f"{live_server.url}/projects/{project.pk}/tasks/?status=archived")
    assert rows(page) == [tasks[4].pk, tasks[3].pk, tasks[0].pk]
    page.check("#select-page")
    assert page.locator("#task-list input[name=task]:checked").count() == 3
    shot(page, "5-archived-all-selected")
    page.click("#restore-selected")
    page.wait_for_selector(".messages:has-text('3 tasks restored.')")
    assert rows(page) == []
    assert "No tasks match these filters." in page.inner_text("#task-list")
    assert not RankingTask.objects.filter(archived_at__isnull=False).exists()
    shot(page, "6-restored")
