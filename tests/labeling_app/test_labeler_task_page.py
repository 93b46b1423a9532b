"""The labeler's task page as served: ranking previews on one line, the cut-at-length badge, progress in the header."""

from __future__ import annotations

import pytest

from labeling_app.models import Completion, Prompt
from labeling_app.selectors import progress
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, task_create
from labeling_app.views.labeler import PREVIEW_CHARS

pytestmark = pytest.mark.django_db

LIST_ANSWER = "1.\nPreheat the oven.\n\n2.   Mix the flour\r\n3. Bake"


@pytest.fixture
def generated(researcher):
    project = project_create(name="Generated", user=researcher, completions_per_task=3)
    prompt = Prompt.objects.create(project=project, text="How do I bake bread?")
    texts = [LIST_ANSWER, "word " * 200, "Once upon a"]
    reasons = ["stop", "stop", "length"]
    completions = [
        Completion.objects.create(
            prompt=prompt, text=t, source=Completion.Source.MODEL, sampling={"max_new_tokens": 64, "finish_reason": r}
        )
        for t, r in zip(texts, reasons)
    ]
    task_create(project=project, prompt=prompt, completions=completions)
    return project, prompt, completions


def test_previews_are_one_line_and_the_cut_answer_is_marked(client, labeler, generated):
    project, _, (listed, long, cut) = generated
    task_id = task_assign_next(project=project, labeler=labeler).task_id
    client.force_login(labeler)
    response = client.get(f"/label/tasks/{task_id}/")
    assert response.status_code == 200
    config = response.context["config"]
    previews = {c["id"]: c["snippet"] for c in config["completions"]}
    assert previews[listed.pk] == "1. Preheat the oven. 2. Mix the flour 3. Bake"
    assert len(previews[long.pk]) == PREVIEW_CHARS and previews[long.pk].endswith("word…")
    html = response.content.decode()
    assert html.count("cut at the length limit") == 1
    assert html.index(f'id="comp-{cut.pk}"') < html.index("cut at the length limit")
    # The compact toggles carry each check's key in words.
    assert {c["key"]: c["short"] for c in config["checks"]}["fails_instruction"] == "fails instruction"


def test_progress_in_the_header(client, labeler, generated, monkeypatch):
    project, prompt, completions = generated
    task_create(
        project=project,
        prompt=prompt,
        completions=completions[:2]
        + [Completion.objects.create(prompt=prompt, text="another", source=Completion.Source.IMPORTED)],
    )
    task_id = task_assign_next(project=project, labeler=labeler).task_id
    client.force_login(labeler)
    html = client.get(f"/label/tasks/{task_id}/").content.decode()
    assert '<dd id="today-count">0</dd>' in html and '<dd id="left-count">1</dd>' in html
    monkeypatch.setattr(progress, "LEFT_CAP", 0)  # past the cap the page says "N+"
    html = client.get(f"/label/tasks/{task_id}/").content.decode()
    assert '<dd id="left-count">0+</dd>' in html


def test_the_researchers_prompt_page_marks_the_cut_answer(client, researcher, generated):
    project, prompt, _ = generated
    client.force_login(researcher)
    html = client.get(f"/projects/{project.pk}/prompts/{prompt.pk}/").content.decode()
    assert html.count("cut at the length limit") == 1
