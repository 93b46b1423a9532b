"""A researcher in a real browser uploads a public file with a few bad lines: refused whole, then imported with the bad ones skipped, then again (nothing doubles)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling_app.models import Annotation, ImportJob, RankingTask
from labeling_app.services.projects import project_create
from tests.conftest import ARTIFACTS, login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HH = "\n\nHuman: {q}\n\nAssistant: {a}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"imports-{name}.png"), full_page=True)


def hh_file(tmp_path):
    rows = [
        {
            "chosen": HH.format(q=f"Question {i}?", a="A helpful answer."),
            "rejected": HH.format(q=f"Question {i}?", a="No."),
        }
        for i in range(6)
    ]
    rows[2] = {"chosen": HH.format(q="Empty?", a="  "), "rejected": HH.format(q="Empty?", a="No.")}
    rows[4] = {"chosen": HH.format(q="One thing?", a="A"), "rejected": HH.format(q="Another thing?", a="B")}
    path = tmp_path / "hh-sample.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def upload(page, live_server, project, path, *, skip: bool, form_shot: str = "") -> None:
    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    page.select_option("#id_kind", "preferences")
    page.fill("#id_source_name", "hh-rlhf")
    page.set_input_files("#id_file", str(path))
    if skip:
        page.check("#id_skip_invalid")
    if form_shot:
        shot(page, form_shot)
    page.click("text=Check and import")
    page.wait_for_selector("#import-state:has-text('Succeeded'), #import-state:has-text('Failed')")


def test_bad_lines_refused_then_skipped_on_request_then_a_reimport_changes_nothing(
    page, live_server, researcher, settings, tmp_path
):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    project = project_create(name="Public pairs", user=researcher, completions_per_task=2)
    path = hh_file(tmp_path)
    login(page, live_server, "res1")

    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    assert page.is_visible("text=Import the valid lines and skip the bad ones")
    upload(page, live_server, project, path, skip=False)
    rows = page.locator("table.errors tbody tr").all_inner_texts()
    assert [r.split("\t")[:2] for r in rows] == [["3", "chosen (last assistant turn)"], ["5", "rejected"]]
    assert "Nothing was imported" in page.inner_text("#import-status")
    shot(page, "1-refused-whole")
    assert not Annotation.objects.exists()

    upload(page, live_server, project, path, skip=True, form_shot="2a-form-with-skip-invalid")
    status = page.inner_text("#import-status")
    assert "4 labels attributed to import:hh-rlhf" in status and "2 invalid lines skipped" in status
    rows = page.locator("table.errors tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == ["3", "5"] and "differ before the last assistant turn" in rows[1]
    shot(page, "2-skipped-bad-lines")
    assert Annotation.objects.count() == 4

    upload(page, live_server, project, path, skip=True)
    status = page.inner_text("#import-status")
    assert "0 labels attributed" in status and "4 identical labels from hh-rlhf skipped" in status
    assert "8 completions reused" in status
    shot(page, "3-reimport-changes-nothing")
    assert Annotation.objects.count() == 4 and RankingTask.objects.count() == 4


def test_a_lost_import_is_retried_from_its_page(page, live_server, researcher, settings, tmp_path):
    from labeling_app.services.imports import import_dir, imports_mark_lost

    settings.IMPORT_DIR = str(tmp_path / "imports")
    project = project_create(name="Lost and found", user=researcher, completions_per_task=2)
    saved = import_dir() / ("a" * 32 + ".jsonl")
    saved.write_text("".join(json.dumps({"prompt": f"Prompt {i}"}) + "\n" for i in range(3)), encoding="utf-8")
    then = timezone.now() - timedelta(minutes=10)
    job = ImportJob.objects.create(
        project=project,
        kind="prompts",
        file_path=str(saved),
        original_name="prompts.jsonl",
        status="importing",
        total_lines=3,
        created_by=researcher,
    )
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=then, created_at=then)
    assert imports_mark_lost() == 1

    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{project.pk}/imports/{job.pk}/")
    assert page.inner_text("#import-state") == "Lost" and "the worker stopped" in page.inner_text("#import-status")
    shot(page, "4-lost")
    page.click("text=Retry with the same file")
    page.wait_for_selector("#import-state:has-text('Succeeded')")
    assert "3 new prompts" in page.inner_text("#import-status")
    shot(page, "5-retried")
    assert project.prompts.count() == 3
