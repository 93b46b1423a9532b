"""Skip-invalid imports: opt-in only, the valid lines go in, and every skipped line is reported with its reason."""

from __future__ import annotations

import time

import pytest
from django.core.management import CommandError, call_command

from labeling_app.models import Annotation, ImportJob, Prompt
from labeling_app.services import imports as imports_service
from labeling_app.services.imports import ImportRejected, import_file, import_job_create
from labeling_app.services.projects import project_create
from tests.labeling_app.researcher_fixtures import write_jsonl

HH = "\n\nHuman: {q}\n\nAssistant: {a}"


def hh_rows() -> list:
    """Five good HH-style pairs and three bad lines: an empty answer, a different prompt, broken JSON."""
    rows = [{"chosen": HH.format(q=f"Q{i}?", a="Yes."), "rejected": HH.format(q=f"Q{i}?", a="No.")} for i in range(5)]
    rows.insert(1, {"chosen": HH.format(q="Empty?", a="   "), "rejected": HH.format(q="Empty?", a="No.")})
    rows.insert(3, {"chosen": HH.format(q="One?", a="A"), "rejected": HH.format(q="Another?", a="B")})
    rows.insert(6, '{"chosen": ')
    return rows


def test_all_or_nothing_stays_the_default(k2, tmp_path):
    with pytest.raises(ImportRejected) as exc:
        import_file(
            project=k2, kind="preferences", path=write_jsonl(tmp_path / "hh.jsonl", hh_rows()), source_name="hh"
        )
    assert exc.value.error_count == 3 and not Prompt.objects.exists()


def test_skip_invalid_imports_the_valid_lines_and_lists_every_bad_one(k2, tmp_path):
    result = import_file(
        project=k2,
        kind="preferences",
        path=write_jsonl(tmp_path / "hh.jsonl", hh_rows()),
        source_name="hh",
        skip_invalid=True,
    )
    assert (result.lines, result.annotations_created, result.invalid_skipped) == (8, 5, 3)
    assert [(e.line, e.field) for e in result.invalid_lines] == [
        (2, "chosen (last assistant turn)"),
        (4, "rejected"),
        (7, "(json)"),
    ]
    assert "is empty" in result.invalid_lines[0].message
    assert "differ before the last assistant turn" in result.invalid_lines[1].message
    assert Annotation.objects.count() == 5


def test_skip_invalid_with_no_valid_line_rejects_the_file(k2, tmp_path):
    with pytest.raises(ImportRejected, match="no valid lines"):
        import_file(
            project=k2,
            kind="preferences",
            path=write_jsonl(tmp_path / "bad.jsonl", ['{"x', '{"y']),
            source_name="hh",
            skip_invalid=True,
        )


def test_command_line_skip_invalid_reports_each_skipped_line(k2, tmp_path, capsys):
    path = write_jsonl(tmp_path / "hh.jsonl", hh_rows())
    with pytest.raises(CommandError, match="3 bad line"):
        call_command("import_data", str(path), project="Pairs", kind="preferences", source="hh")
    call_command("import_data", str(path), project="Pairs", kind="preferences", source="hh", skip_invalid=True)
    out = capsys.readouterr().out
    assert "5 labels" in out and "3 invalid lines skipped" in out
    assert (
        "line 2, field chosen (last assistant turn): is empty" in out
        and "line 4, field rejected" in out
        and "line 7, field (json)" in out
    )


def test_upload_page_checkbox_keeps_every_skipped_line_on_the_job(k2, client, researcher, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    rows = [{"prompt": f"good {i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    rows += [{"prompt": f"bad {i}", "chosen": "same", "rejected": "same"} for i in range(150)]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    client.force_login(researcher)
    page = client.post(
        f"/projects/{k2.pk}/import/",
        {"kind": "preferences", "source_name": "pub", "skip_invalid": "on", "file": open(path, "rb")},
        follow=True,
    ).content.decode()
    job = ImportJob.objects.get()
    assert job.status == "succeeded" and job.skip_invalid
    assert job.error_count == 150 and len(job.errors) == 150  # all of them, not the first 100
    assert job.errors[0] == {
        "line": 11,
        "field": "rejected",
        "message": "is the same text as chosen; a preference needs two different completions",
    }
    assert "150 invalid lines skipped" in page and "160 lines read" in page and Annotation.objects.count() == 10
    # without the box, the same file is refused whole
    page = client.post(
        f"/projects/{k2.pk}/import/",
        {"kind": "preferences", "source_name": "pub2", "file": open(path, "rb")},
        follow=True,
    ).content.decode()
    assert "Nothing was imported" in page and Annotation.objects.count() == 10


def test_skipped_lines_kept_on_the_job_are_capped_but_counted(k2, researcher, settings, tmp_path, monkeypatch):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    monkeypatch.setattr(imports_service, "MAX_SKIPPED_KEPT", 20)
    rows = [{"prompt": "ok", "chosen": "a", "rejected": "b"}] + ['{"broken'] * 30
    with open(write_jsonl(tmp_path / "f.jsonl", rows), "rb") as upload:
        job = import_job_create(
            project=k2,
            kind="preferences",
            upload=upload,
            original_name="f.jsonl",
            source_name="s",
            user=researcher,
            skip_invalid=True,
        )
    assert job.status == "succeeded" and job.error_count == 30 and len(job.errors) == 20


@pytest.mark.django_db(transaction=True)
def test_a_background_import_skips_invalid_lines_too(celery_worker, researcher, tmp_path, settings):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    settings.IMPORT_ASYNC_LINES = 50
    project = project_create(name="Async", user=researcher, completions_per_task=2)
    rows = [
        {"prompt": f"p{i}", "chosen": "a", "rejected": "b"} if i % 10 else {"prompt": f"p{i}", "chosen": ""}
        for i in range(120)
    ]
    with open(write_jsonl(tmp_path / "big.jsonl", rows), "rb") as upload:
        job = import_job_create(
            project=project,
            kind="preferences",
            upload=upload,
            original_name="big.jsonl",
            source_name="pub",
            user=researcher,
            skip_invalid=True,
        )
    assert job.status == "queued"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.status not in ("succeeded", "failed"):
        time.sleep(0.2)
        job.refresh_from_db()
    assert job.status == "succeeded", job.errors
    assert job.error_count == 12 and job.result["annotations_created"] == 108
    assert [e["line"] for e in job.errors] == list(range(1, 121, 10))
