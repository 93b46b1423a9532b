"""The Import tab lists every import with its counts (paged); a job's page confirms and undoes it, or says why not."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling_app.models import ImportJob, Prompt, RankingTask
from labeling_app.services.projects import project_create
from tests.labeling_app.researcher_fixtures import label


@pytest.fixture
def rc(client, researcher, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    client.force_login(researcher)
    return client


@pytest.fixture
def project(db, researcher):
    return project_create(name="Undo pages", user=researcher, completions_per_task=2)


def post_file(rc, project, name: str, rows: list[dict], kind: str = "completions"):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return rc.post(f"/projects/{project.pk}/import/", {"kind": kind, "file": SimpleUploadedFile(name, data)})


def row_of(page: str, job: ImportJob) -> list[str]:
    row = re.search(rf'<tr data-job="{job.pk}">(.*?)</tr>', page, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_the_list_shows_file_kind_counts_result_and_date(rc, project):
    rows = [{"prompt": f"Q{i}", "completions": [f"a{i}", f"b{i}"]} for i in range(3)]
    post_file(rc, project, "three.jsonl", rows)
    post_file(rc, project, "again.jsonl", rows[:2] + [{"prompt": "Q9", "completions": ["x", "y"]}])
    post_file(rc, project, "bad.jsonl", [{"prompt": "z", "completions": ["only one"]}])
    page = rc.get(f"/projects/{project.pk}/import/").content.decode()
    three, again, bad = (ImportJob.objects.get(original_name=n) for n in ("three.jsonl", "again.jsonl", "bad.jsonl"))
    cells = row_of(page, three)
    assert cells[0] == "three.jsonl" and cells[1] == "Completions" and cells[2] == "Succeeded"
    assert cells[3:7] == ["12", "0", "0", "3"]  # 3 prompts + 6 completions + 3 tasks created
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d", cells[7]) and cells[8] == "res1"
    # Q9's prompt, 2 completions and task are new; Q0 and Q1's 2 prompts, 4 completions and 2 tasks are reused.
    assert row_of(page, again)[3:6] == ["4", "8", "0"]
    assert row_of(page, bad)[2:6] == ["Failed", "—", "—", "—"]
    assert "Imports (3)" in page


def test_the_list_is_paged(rc, project, researcher):
    ImportJob.objects.bulk_create(
        [
            ImportJob(
                project=project, kind="prompts", original_name=f"f{i}.jsonl", status="failed", created_by=researcher
            )
            for i in range(45)
        ]
    )
    first = rc.get(f"/projects/{project.pk}/import/").content.decode()
    assert first.count("<tr data-job=") == 20 and "page 1 of 3" in first
    last = rc.get(f"/projects/{project.pk}/import/?page=3").content.decode()
    assert last.count("<tr data-job=") == 5


def test_the_job_page_confirms_what_undo_deletes_then_undoes_it(rc, project, researcher):
    post_file(rc, project, "three.jsonl", [{"prompt": f"Q{i}", "completions": [f"a{i}", f"b{i}"]} for i in range(3)])
    job = ImportJob.objects.get()
    page = rc.get(f"/projects/{project.pk}/imports/{job.pk}/").content.decode()
    assert '<dialog id="undo-dialog"' in page
    counts = re.search(r'<ul id="undo-counts">(.*?)</ul>', page, re.S).group(1)
    assert [re.sub(r"<[^>]+>", "", li) for li in re.findall(r"<li>.*?</li>", counts)] == [
        "3 prompts",
        "6 completions",
        "3 ranking tasks",
    ]
    response = rc.post(f"/projects/{project.pk}/imports/{job.pk}/undo/", follow=True)
    text = response.content.decode()
    assert "Import undone: deleted 3 prompts, 6 completions, 3 ranking tasks." in text
    assert 'id="undone-note">Undone by res1' in text and "deleted 3 prompts, 6 completions, 3 ranking tasks." in text
    assert not Prompt.objects.exists()
    assert row_of(rc.get(f"/projects/{project.pk}/import/").content.decode(), job)[2].startswith("Undone")


def test_the_job_page_says_why_an_undo_is_not_possible(rc, project, labeler):
    post_file(rc, project, "three.jsonl", [{"prompt": f"Q{i}", "completions": [f"a{i}", f"b{i}"]} for i in range(3)])
    job = ImportJob.objects.get()
    label(RankingTask.objects.first(), labeler, [1, 2])
    page = rc.get(f"/projects/{project.pk}/imports/{job.pk}/").content.decode()
    assert "cannot be undone: 1 label by labelers (drafts included) depends on tasks it created" in page
    assert "undo-dialog" not in page
    # A POST anyway (an old page) is refused with the same reason, and nothing goes.
    text = rc.post(f"/projects/{project.pk}/imports/{job.pk}/undo/", follow=True).content.decode()
    assert "1 label by labelers (drafts included) depends on tasks this import created" in text
    assert Prompt.objects.count() == 3
    ImportJob.objects.filter(pk=job.pk).update(rows_recorded=False)
    assert (
        "ran before imports recorded the rows" in rc.get(f"/projects/{project.pk}/imports/{job.pk}/").content.decode()
    )
