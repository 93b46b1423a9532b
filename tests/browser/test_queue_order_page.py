"""A researcher picks the queue order on the project's settings page; the labeler's next task follows it."""

from __future__ import annotations

import re

import pytest

from labeling_app.models import Completion, Project, Prompt
from labeling_app.services.projects import project_create, task_create
from rlhf_worker.models import ModelVersion
from tests.conftest import ARTIFACTS, login, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"queue-order-{name}.png"), full_page=True)


def make_project() -> Project:
    researcher = make_user("res-q", "researcher")
    make_user("lab-q", "labeler")
    project = project_create(name="Queue project", user=researcher, completions_per_task=2, overlap=1)
    policy = ModelVersion.objects.create(kind="policy", name="ppo-2", path="/nowhere")
    for text, version in [
        ("Old prompt one?", None),
        ("Old prompt two?", None),
        ("What did the new policy say?", policy),
    ]:
        prompt = Prompt.objects.create(project=project, text=text)
        task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(
                    prompt=prompt,
                    text=f"{text} answer {j}",
                    source="model" if version else "imported",
                    model_name="" if version else "old-model",
                    model_version=version,
                )
                for j in range(2)
            ],
        )
    return project


def test_researcher_picks_newest_first_and_the_labeler_gets_the_newest_task(browser, page, live_server):
    project = make_project()
    login(page, live_server, "res-q")
    page.goto(f"{live_server.url}/projects/{project.pk}/edit/")
    assert page.locator("#id_queue_order").input_value() == "oldest"
    # No score job has run: the page says "least sure first" falls back to oldest first.
    assert "until one runs" in page.locator("#unscored-note").inner_text()
    # The sources of the project's tasks are offered, the new policy version by its name.
    options = page.locator("#id_queue_source option").all_inner_texts()
    assert any("policy ppo-2 (version" in o for o in options), options
    assert any("imported from old-model" in o for o in options), options

    # "Chosen source first" without a source is refused with a message saying what to pick.
    page.select_option("#id_queue_order", "source_first")
    page.click("button[type=submit].primary")
    page.wait_for_selector("#queue-order .has-error")
    assert "needs a source" in page.locator("#queue-order").inner_text()
    shot(page, "1-source-without-source")

    page.select_option("#id_queue_order", "newest")
    shot(page, "2-newest-picked")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"**/projects/{project.pk}/")
    assert page.locator("#queue-summary").inner_text() == "Newest first"
    shot(page, "3-project-page")
    project.refresh_from_db()
    assert project.queue_order == "newest"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    labeler_page = context.new_page()
    try:
        login(labeler_page, live_server, "lab-q")
        labeler_page.goto(f"{live_server.url}/label/")
        labeler_page.click("button.lt-start")
        labeler_page.wait_for_url(re.compile(r"/label/tasks/\d+/$"))
        labeler_page.wait_for_selector(".lt-item")
        assert "What did the new policy say?" in labeler_page.content()
        assert "Old prompt" not in labeler_page.content()
        shot(labeler_page, "4-labeler-gets-newest")
    finally:
        context.close()
