"""A researcher sets adaptive overlap on the project's settings page: a refused maximum says why, a good one is saved."""

from __future__ import annotations

import pytest

from labeling_app.models import Project
from tests.conftest import ARTIFACTS, login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"adaptive-overlap-{name}.png"), full_page=True)


def test_researcher_sets_the_maximum_overlap_and_threshold(page, live_server, researcher, demo_project):
    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/edit/")
    fieldset = page.locator("#adaptive-overlap")
    assert "Adaptive overlap" in fieldset.inner_text() and "newest reward model" in fieldset.inner_text()
    assert page.input_value("#id_overlap_max") == ""  # off: empty, not a number to trip over
    page.fill("#id_overlap_max", "1")
    page.fill("#id_disagreement_threshold", "0")
    page.click("button[type=submit].primary")
    page.wait_for_selector("#adaptive-overlap .errorlist")
    text = page.locator("#adaptive-overlap").inner_text()
    assert "The maximum overlap (1) must be at least the overlap (2)" in text
    shot(page, "1-refused")
    assert Project.objects.get(pk=demo_project.pk).overlap_max == 2  # nothing saved

    page.fill("#id_overlap_max", "3")
    page.fill("#id_disagreement_threshold", "1.5")
    page.click("button[type=submit].primary")
    page.wait_for_selector("#adaptive-overlap .errorlist")
    assert "above 0 and at most 1" in page.locator("#adaptive-overlap").inner_text()

    page.fill("#id_disagreement_threshold", "0.5")
    shot(page, "2-filled")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"**/projects/{demo_project.pk}/")
    project = Project.objects.get(pk=demo_project.pk)
    assert (project.overlap, project.overlap_max, project.disagreement_threshold) == (2, 3, 0.5)
    assert "up to 3 when the labels disagree on 0.50 of the pairs or more" in page.inner_text("body")
    shot(page, "3-saved")
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/quality/")
    assert "Adaptive overlap: tasks that got extra labels" in page.inner_text("#extra-labels")
    shot(page, "4-quality")
