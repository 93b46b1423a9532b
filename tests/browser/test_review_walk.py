"""Review in headless Chromium: a researcher rejects a label with a note, its labeler reads the note on My labels
and revises the label on the labeling page, and the researcher sees the earlier version kept."""

from __future__ import annotations

import re

import pytest

from labeling_app.models import Annotation, AnnotationVersion, Rating
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from tests.browser.test_labeling import CHECKS, make_project
from tests.conftest import ARTIFACTS, login
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTE = "Response B invents a date: answer the hallucination check with yes."


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review-{name}.png"), full_page=True)


def test_reject_read_the_note_revise_and_see_the_history(page, live_server):
    from django.contrib.auth.models import User

    project = make_project("Review project", CHECKS)
    labeler = User.objects.get(username="lab-b")
    task = task_assign_next(project=project, labeler=labeler).task
    annotation_submit(
        task=task,
        labeler=labeler,
        ratings=valid_ratings(task, labeler, likert_by_position=[7, 6, 5]),
        comment="first try",
    )
    annotation = Annotation.objects.get(task=task, labeler=labeler)
    a, b, c = annotation.shown_order

    # The researcher opens the task from its prompt's page and rejects the label with a note.
    login(page, live_server, "res-b")
    page.goto(f"{live_server.url}/projects/{project.pk}/prompts/{task.prompt_id}/")
    page.click(f"#task-link-{task.pk}")
    page.wait_for_url(re.compile(rf"/projects/{project.pk}/tasks/{task.pk}/$"))
    label = page.locator(f"#label-{annotation.pk}")
    assert "lab-b" in label.inner_text() and "Pending review" in label.inner_text()
    assert label.locator(".review-ranking").inner_text() == "A > B > C"
    assert "first try" in label.locator(".review-comment").inner_text()
    shot(page, "1-researcher-task")
    label.locator("textarea[name=note]").fill(NOTE)
    label.locator("button[value=reject]").click()
    page.wait_for_load_state("networkidle")
    assert "left out of training data and exports" in page.locator(".messages").inner_text()
    assert "Rejected" in page.locator(f"#label-{annotation.pk} .review-badge").inner_text()
    shot(page, "2-researcher-rejected")
    annotation.refresh_from_db()
    assert (annotation.review_state, annotation.review_note) == ("rejected", NOTE)

    # The labeler reads the note on My labels, opens the label and revises it on the labeling page.
    page.context.clear_cookies()
    login(page, live_server, "lab-b")
    page.click("nav >> text=My labels")
    row = page.locator(f"#my-label-{task.pk}")
    assert "Rejected" in row.inner_text() and NOTE in row.inner_text()
    shot(page, "3-labeler-my-labels")
    row.locator("a").first.click()
    assert NOTE in page.locator("#review-note").inner_text()
    shot(page, "4-labeler-label")
    page.click("#revise-link")
    page.wait_for_url(re.compile(rf"/label/mine/{task.pk}/revise/$"))
    page.wait_for_selector(".lt-item")
    assert NOTE in page.locator("#revise-banner").inner_text()
    # The page opens with the label as submitted: B rated 6, the comment, the ranking A > B > C.
    assert page.locator(f'#comp-{b} input[name="likert-{b}"][value="6"]').is_checked()
    assert page.locator("#comment").input_value() == "first try"
    assert page.locator("#skip-open").count() == 0
    page.click(f'#comp-{b} label.lt-pill:has(input[value="5"])')
    page.click(f'#comp-{b} .lt-check[data-check="hallucination"] label:has(input[value="yes"])')
    page.fill("#comment", "B's date is made up")
    shot(page, "5-labeler-revising")
    page.click("#submit-btn")
    page.wait_for_url(re.compile(rf"/label/mine/{task.pk}/$"))
    assert "Pending review" in page.locator("#review-state").inner_text()
    shot(page, "6-labeler-revised")

    annotation.refresh_from_db()
    assert annotation.review_state == "pending" and annotation.comment == "B's date is made up"
    assert annotation.revision_count == 1 and annotation.status == "submitted"
    assert Rating.objects.get(annotation=annotation, completion_id=b).likert == 5
    version = AnnotationVersion.objects.get(annotation=annotation)
    assert version.comment == "first try" and version.review_note == NOTE
    task.refresh_from_db()
    assert task.submitted_count == 1

    # The researcher sees the new version, pending again, with the rejected one kept below it.
    page.context.clear_cookies()
    login(page, live_server, "res-b")
    page.goto(f"{live_server.url}/projects/{project.pk}/tasks/{task.pk}/")
    label = page.locator(f"#label-{annotation.pk}")
    assert "version 2" in label.locator("h2").inner_text() and "Pending review" in label.inner_text()
    history = label.locator(".review-history")
    assert "Earlier versions (1)" in history.inner_text()
    assert "first try" in history.inner_text() and NOTE in history.inner_text()
    assert "B's date is made up" in label.locator(".review-comment").first.inner_text()
    shot(page, "7-researcher-history")
