"""A researcher in a real browser on the export page: sees the row count and the first rows, narrows the selection
to nothing and is told so (no empty file), then downloads the selection as Parquet and reads it back."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from labeling_app.models import Completion, Prompt
from labeling_app.services.imports import import_file
from labeling_app.services.projects import project_create, task_create
from tests.conftest import ARTIFACTS, login
from tests.labeling_app.researcher_fixtures import label, write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"export-{name}.png"), full_page=True)


def test_researcher_previews_sees_an_empty_selection_and_downloads_parquet(
    page, live_server, researcher, labeler, tmp_path
):
    project = project_create(name="Export walk", user=researcher, completions_per_task=2)
    long_answer = "This answer explains Rayleigh scattering at great length. " * 20
    write_jsonl(
        tmp_path / "public.jsonl",
        [
            {"prompt": f"Public question {i}", "chosen": f"{long_answer}{i}", "rejected": f"No idea {i}"}
            for i in range(8)
        ],
    )
    import_file(project=project, kind="preferences", path=tmp_path / "public.jsonl", source_name="public")
    prompt = Prompt.objects.create(
        project=project, text="Why is the sky blue?", messages=[{"role": "user", "content": "Why is the sky blue?"}]
    )
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[
            Completion.objects.create(prompt=prompt, text=t, source="imported")
            for t in ("Rayleigh scattering.", "Oceans.")
        ],
    )
    label(task, labeler, [1, 2], [7, 2])

    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{project.pk}/export/")
    page.wait_for_selector("#export-count")
    assert "9 pairwise rows, written as chat" in page.inner_text("#export-count")  # one chat prompt: all chat
    cells = page.locator(".export-rows tbody tr").first.locator("td").all_inner_texts()
    assert cells[0] == "user: Public question 0" and cells[1].endswith("…") and len(cells[1]) <= 120
    assert page.locator(".export-rows tbody tr").count() == 5
    shot(page, "1-preview")

    page.fill("#id_labeler", "somebody-else")  # htmx asks for the preview as the filter changes
    page.wait_for_selector("#export-empty")
    assert "No rows match this selection" in page.inner_text("#export-empty")
    shot(page, "2-empty-selection")
    page.click("#export-download")
    page.wait_for_selector("#download-empty")
    assert "Nothing was downloaded" in page.inner_text("#download-empty")

    page.fill("#id_labeler", "import:public")
    page.select_option("#id_file", "parquet")
    page.wait_for_selector("#export-count:has-text('8 pairwise rows')")
    shot(page, "3-filtered-parquet")
    with page.expect_download() as download_info:
        page.click("#export-download")
    download = download_info.value
    assert download.suggested_filename.startswith("Export walk-pairwise-") and download.suggested_filename.endswith(
        ".parquet"
    )
    table = pq.read_table(download.path())
    assert table.num_rows == 8 and set(table.column("labeler").to_pylist()) == {"import:public"}
    assert table.column("chosen_rating").null_count == 8 and str(table.schema.field("chosen_rating").type) == "int64"
    assert table.column("chosen").to_pylist()[0] == f"{long_answer}0"  # only plain prompts selected now: strings, whole
