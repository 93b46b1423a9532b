"""A researcher in a real browser uploads a file, finds it in the Import tab's list, undoes it after confirming, and the project's counts go to zero."""

from __future__ import annotations

import json

import pytest

from labeling_app.models import ImportJob
from labeling_app.services.projects import project_create
from tests.conftest import ARTIFACTS, login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"import-undo-{name}.png"), full_page=True)


def test_upload_list_undo_and_the_counts_go_to_zero(page, live_server, researcher, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    project = project_create(name="Undo me", user=researcher, completions_per_task=2)
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "completions": [f"Yes {i}.", f"No {i}."], "model": "m"}) + "\n"
            for i in range(3)
        ),
        encoding="utf-8",
    )
    login(page, live_server, "res1")

    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    page.select_option("#id_kind", "completions")
    page.set_input_files("#id_file", str(path))
    page.click("text=Check and import")
    page.wait_for_selector("#import-state:has-text('Succeeded')")
    job = ImportJob.objects.get()

    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    row = page.locator(f"#import-list tr[data-job='{job.pk}']")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "pairs.jsonl" and cells[2].startswith("Succeeded") and cells[3:7] == ["12", "0", "0", "3"]
    shot(page, "1-list")
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert (page.inner_text("#count-prompts"), page.inner_text("#count-tasks")) == ("3", "3")

    page.goto(f"{live_server.url}/projects/{project.pk}/imports/{job.pk}/")
    assert not page.is_visible("#undo-dialog")
    page.click("#undo-open")
    assert page.is_visible("#undo-dialog")
    assert page.locator("#undo-counts li").all_inner_texts() == ["3 prompts", "6 completions", "3 ranking tasks"]
    shot(page, "2-confirm")
    page.click("#undo-confirm")
    page.wait_for_selector("#import-state:has-text('Undone')")
    assert "Import undone: deleted 3 prompts, 6 completions, 3 ranking tasks." in page.inner_text(".messages")
    assert "Undone by res1" in page.inner_text("#undone-note")
    shot(page, "3-undone")

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert (page.inner_text("#count-prompts"), page.inner_text("#count-tasks")) == ("0", "0")
    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    assert page.locator(f"#import-list tr[data-job='{job.pk}'] td").nth(2).inner_text().startswith("Undone")
    shot(page, "4-list-after-undo")
