"""Researcher pages through the Django test client: projects, checks, prompts, demonstrations, upload."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling_app.models import CheckAnswer, CheckQuestion, Completion, Demonstration, Project, Prompt, RankingTask
from tests.labeling_app.researcher_fixtures import label


@pytest.fixture
def rc(client, researcher, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    client.force_login(researcher)
    return client


def test_create_project_then_edit_checks_keeping_old_answers(rc, labeler):
    response = rc.post(
        "/projects/new/",
        {
            "name": "Helpful",
            "instructions": "# Rank\n<script>alert(1)</script>",
            "completions_per_task": 3,
            "overlap": 2,
            "lease_minutes": 20,
        },
    )
    project = Project.objects.get(name="Helpful")
    assert response.status_code == 302 and project.checks.count() == 12 and project.completions_per_task == 3
    detail = rc.get(f"/projects/{project.pk}/").content.decode()
    assert "<h1>Rank</h1>" in detail and "<script>alert(1)</script>" not in detail  # rendered, sanitised

    toxic = project.checks.get(key="toxic")
    prompt = Prompt.objects.create(project=project, text="q")
    from labeling_app.services.projects import task_create

    task = task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in "abc"],
    )
    label(task, labeler, [1, 2, 3], checks={"toxic": [False, True, False]})

    data = {
        "name": "Helpful",
        "instructions": "x",
        "completions_per_task": 3,
        "overlap": 3,
        "lease_minutes": 20,
        "new_question": ["Mentions a competitor", ""],
    }
    for check in project.checks.all():
        data[f"check-{check.pk}-question"] = "Rude or toxic?" if check.pk == toxic.pk else check.question
        if check.pk != toxic.pk:
            data[f"check-{check.pk}-active"] = "on"
    assert rc.post(f"/projects/{project.pk}/edit/", data).status_code == 302
    toxic.refresh_from_db()
    assert toxic.question == "Rude or toxic?" and not toxic.active
    assert CheckAnswer.objects.filter(check_question=toxic).count() == 3  # old answers kept
    assert project.checks.get(key="mentions_a_competitor").active
    task.refresh_from_db()
    assert task.overlap == 3  # the new overlap applies to open tasks

    data["completions_per_task"] = 4
    page = rc.post(f"/projects/{project.pk}/edit/", data).content.decode()
    assert "K cannot change" in page and Project.objects.get(pk=project.pk).completions_per_task == 3


def test_prompts_one_by_one_plain_and_chat_and_duplicates(rc, demo_project):
    url = f"/projects/{demo_project.pk}/prompts/new/"
    assert rc.post(url, {"mode": "plain", "text": "Explain tides."}).status_code == 302
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sea salty?"}]
    assert rc.post(url, {"mode": "chat", "messages": json.dumps(chat)}).status_code == 302
    assert Prompt.objects.get(messages=chat).text == "Why is the sea salty?"
    page = rc.post(url, {"mode": "plain", "text": "Explain   tides."}).content.decode()
    assert "already in the project" in page
    page = rc.post(
        url, {"mode": "chat", "messages": json.dumps(chat + [{"role": "assistant", "content": "x"}])}
    ).content.decode()
    assert "must end with a user turn" in page


def test_demonstration_editor_and_as_completion(rc, demo_project):
    prompt = demo_project.prompts.first()
    url = f"/projects/{demo_project.pk}/prompts/{prompt.pk}/"
    assert rc.post(url, {"text": "The ideal answer.", "as_completion": "on"}).status_code == 302
    demo = Demonstration.objects.get(prompt=prompt)
    completion = Completion.objects.get(demonstration=demo)
    assert completion.source == "demonstration" and completion.text == "The ideal answer."
    assert (
        rc.post(f"{url}demonstrations/{demo.pk}/", {"text": "A better answer.", "as_completion": "on"}).status_code
        == 302
    )
    completion.refresh_from_db()
    assert completion.text == "A better answer." and Demonstration.objects.get(pk=demo.pk).text == "A better answer."
    assert "empty" in rc.post(url, {"text": "  "}).content.decode()
    # a task with the demonstration as one of the K=4 completions
    picks = list(prompt.completions.exclude(pk=completion.pk).values_list("pk", flat=True)[:3]) + [completion.pk]
    rc.post(f"{url}tasks/new/", {"completion": picks})
    assert RankingTask.objects.filter(prompt=prompt, task_completions__completion=completion).exists()


def test_upload_small_file_and_see_errors(rc, demo_project):
    url = f"/projects/{demo_project.pk}/import/"
    good = "\n".join(json.dumps({"prompt": f"up {i}", "completions": ["a", "b", "c", "d"]}) for i in range(3))
    response = rc.post(url, {"kind": "completions", "file": SimpleUploadedFile("c.jsonl", good.encode())}, follow=True)
    assert "3 ranking tasks" in response.content.decode()
    assert RankingTask.objects.filter(prompt__text__startswith="up ").count() == 3
    bad = json.dumps({"prompt": "z", "completions": ["a"]})
    page = rc.post(
        url, {"kind": "completions", "file": SimpleUploadedFile("bad.jsonl", bad.encode())}, follow=True
    ).content.decode()
    assert "Nothing was imported" in page and "K=4" in page
    page = rc.post(url, {"kind": "preferences", "file": SimpleUploadedFile("p.jsonl", b"{}")}).content.decode()
    assert "Name the source" in page


def test_edit_with_a_bad_check_saves_nothing_and_shows_the_error_beside_it(rc, demo_project):
    """Settings and checks are one save: a refused check must not leave the settings half-saved."""
    checks = list(demo_project.checks.all())
    data = {
        "name": "Renamed",
        "instructions": "New words",
        "completions_per_task": 4,
        "overlap": 3,
        "lease_minutes": 45,
        "new_question": ["Mentions a competitor"],
    }
    for check in checks:
        data[f"check-{check.pk}-question"] = check.question
        data[f"check-{check.pk}-active"] = "on"
    data[f"check-{checks[0].pk}-active"] = ""  # an edit that must not be kept either
    data[f"check-{checks[1].pk}-question"] = "   "
    response = rc.post(f"/projects/{demo_project.pk}/edit/", data)
    assert response.status_code == 200
    project = Project.objects.get(pk=demo_project.pk)
    assert (project.name, project.instructions, project.overlap, project.lease_minutes) == ("Test project", "", 2, 30)
    assert set(project.tasks.values_list("overlap", flat=True)) == {2}
    assert CheckQuestion.objects.get(pk=checks[0].pk).active
    assert not project.checks.filter(key="mentions_a_competitor").exists()
    page = response.content.decode()
    row = page[page.index(f'name="check-{checks[1].pk}-question"') :]
    row = row[: row.index("</tr>")]
    assert "the question is empty" in row and 'aria-invalid="true"' in row  # beside the check it is about
    assert 'value="Renamed"' in page and 'value="Mentions a competitor"' in page  # what was typed is kept


def test_queue_order_on_the_settings_page(rc, demo_project):
    """The order and the source are saved from the settings page; a bad combination says what to fix."""
    url = f"/projects/{demo_project.pk}/edit/"
    data = {"name": demo_project.name, "instructions": "", "completions_per_task": 4, "overlap": 2, "lease_minutes": 30}
    page = rc.get(url).content.decode()
    assert 'name="queue_order"' in page and ">imported (no model name)</option>" in page
    assert "until one runs" in page  # no score job yet

    page = rc.post(url, {**data, "queue_order": "source_first", "queue_source": ""}).content.decode()
    assert "needs a source" in page
    assert Project.objects.get(pk=demo_project.pk).queue_order == "oldest"
    page = rc.post(url, {**data, "queue_order": "source_first", "queue_source": "imported:nobody"}).content.decode()
    assert "Select a valid choice" in page

    assert rc.post(url, {**data, "queue_order": "source_first", "queue_source": "imported:"}).status_code == 302
    saved = Project.objects.get(pk=demo_project.pk)
    assert (saved.queue_order, saved.queue_source) == ("source_first", "imported:")
    assert "Chosen source first: imported (no model name)" in rc.get(f"/projects/{demo_project.pk}/").content.decode()

    response = rc.post(url, {**data, "queue_order": "uncertainty"}, follow=True)
    assert "hands tasks out oldest first" in response.content.decode()  # the warning after saving
    assert Project.objects.get(pk=demo_project.pk).queue_order == "uncertainty"
    assert rc.post(url, data).status_code == 302  # a post without the order keeps it
    assert Project.objects.get(pk=demo_project.pk).queue_order == "uncertainty"


def test_adaptive_overlap_settings_on_the_project_page(rc, demo_project):
    page = rc.get(f"/projects/{demo_project.pk}/edit/").content.decode()
    assert 'name="overlap_max"' in page and "Disagreement threshold" in page
    data = {
        "name": demo_project.name,
        "instructions": "",
        "completions_per_task": 4,
        "overlap": 3,
        "lease_minutes": 30,
        "overlap_max": 2,
        "disagreement_threshold": "1.5",
    }
    page = rc.post(f"/projects/{demo_project.pk}/edit/", data).content.decode()
    assert "The maximum overlap (2) must be at least the overlap (3)" in page
    data["overlap_max"] = 4
    page = rc.post(f"/projects/{demo_project.pk}/edit/", data).content.decode()
    assert "above 0 and at most 1" in page and Project.objects.get(pk=demo_project.pk).overlap == 2  # nothing saved
    data["disagreement_threshold"] = "0.5"
    assert rc.post(f"/projects/{demo_project.pk}/edit/", data).status_code == 302
    project = Project.objects.get(pk=demo_project.pk)
    assert (project.overlap, project.overlap_max, project.disagreement_threshold) == (3, 4, 0.5)
    assert "up to 4 when the labels disagree" in rc.get(f"/projects/{demo_project.pk}/").content.decode()
    # Emptied: off again, and a later overlap change alone is not refused for the old maximum.
    data.update(overlap_max="", disagreement_threshold="")
    assert rc.post(f"/projects/{demo_project.pk}/edit/", data).status_code == 302
    project = Project.objects.get(pk=demo_project.pk)
    assert (project.overlap_max, project.disagreement_threshold, project.adaptive_overlap) == (3, 0.5, False)
