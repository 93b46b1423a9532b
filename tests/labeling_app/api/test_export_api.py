"""Export API and export page: the file by token (JSONL or Parquet, `?format=` is the export format), the preview
(count, first rows, Features), and an empty selection answered with a message instead of an empty file."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling_app.models import Completion, Prompt
from labeling_app.selectors.exports import EMPTY_SELECTION
from labeling_app.services.projects import project_create, task_create
from tests.labeling_app.researcher_fixtures import label

LONG = "A very long answer that keeps going. " * 40


@pytest.fixture
def project(researcher, labeler):
    project = project_create(name="Export API", user=researcher, completions_per_task=2)
    for i in range(7):
        prompt = Prompt.objects.create(project=project, text=f"Question {i}")
        task = task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=t, source="imported")
                for t in (f"{LONG}{i}", f"Short {i}")
            ],
        )
        label(task, labeler, [1, 2], [6, 2])
    return project


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=researcher).key}")
    return client


def test_api_streams_jsonl_and_parquet_with_format_as_the_export_format(api, project):
    response = api.get(f"/api/projects/{project.pk}/export/", {"format": "grouped"})
    assert (
        response.status_code == 200 and response.streaming and response["Content-Type"].startswith("application/jsonl")
    )
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert len(rows) == 7 and rows[0]["ranks"] == [1, 2]  # grouped, not DRF's renderer named "grouped" (404)
    response = api.get(f"/api/projects/{project.pk}/export/", {"format": "pairwise", "file": "parquet"})
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(b"".join(response.streaming_content)))
    assert table.num_rows == 7 and str(table.schema.field("chosen_rating").type) == "int64"
    assert table.column("chosen").to_pylist()[0] == f"{LONG}0"


def test_api_preview_counts_shows_first_rows_and_features(api, project):
    body = api.get(f"/api/projects/{project.pk}/export/preview/", {"format": "pairwise", "rows": 3}).json()
    assert body["count"] == 7 and len(body["rows"]) == 3 and body["rows"][0]["chosen"] == f"{LONG}0"
    assert body["chat"] is False and body["columns"][:3] == ["prompt", "chosen", "rejected"]
    assert body["features"]["chosen_rating"] == {"dtype": "int64", "_type": "Value"} and "detail" not in body
    body = api.get(f"/api/projects/{project.pk}/export/preview/", {"format": "pairwise", "labeler": "nobody"}).json()
    assert (body["count"], body["rows"], body["detail"]) == (0, [], EMPTY_SELECTION)


def test_api_empty_selection_is_404_with_a_message_and_bad_filters_are_400(api, project):
    response = api.get(f"/api/projects/{project.pk}/export/", {"format": "pairwise", "date_to": "2000-01-01"})
    assert response.status_code == 404 and response.json()["detail"] == EMPTY_SELECTION
    assert "Content-Disposition" not in response
    response = api.get(f"/api/projects/{project.pk}/export/", {"format": "csv", "min_agreement": 2})
    assert response.status_code == 400 and set(response.json()["errors"]) == {"format", "min_agreement"}
    response = api.get(f"/api/projects/{project.pk}/export/", {"date_from": "31/01/2026"})
    assert response.status_code == 400 and "YYYY-MM-DD" in response.json()["errors"]["date_from"][0]
    assert api.get(f"/api/projects/{project.pk}/export/preview/", {"rows": 500}).status_code == 400


def test_labelers_get_403_from_the_export_api(labeler, project):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    assert client.get(f"/api/projects/{project.pk}/export/").status_code == 403
    assert client.get(f"/api/projects/{project.pk}/export/preview/").status_code == 403


def test_export_page_shows_the_count_and_truncated_first_rows(client, researcher, project):
    client.force_login(researcher)
    html = client.get(f"/projects/{project.pk}/export/").content.decode()
    assert "<strong>7</strong> pairwise rows" in html
    assert "Short 0" in html and LONG not in html and "…" in html  # text cut short
    assert html.count("<tr>") == 1 + 5  # header and the first five rows
    fragment = client.get(
        f"/projects/{project.pk}/export/", {"format": "sft", "submitted": "1"}, HTTP_HX_REQUEST="true"
    )
    assert (
        fragment.content.decode().lstrip().startswith('<div id="export-preview"')
        and EMPTY_SELECTION in fragment.content.decode()
    )


def test_export_page_download_of_an_empty_selection_says_so_instead_of_an_empty_file(client, researcher, project):
    client.force_login(researcher)
    response = client.get(
        f"/projects/{project.pk}/export/download/", {"format": "pairwise", "labeler": "nobody", "submitted": "1"}
    )
    assert response.status_code == 404 and "Content-Disposition" not in response
    assert "Nothing was downloaded" in response.content.decode() and EMPTY_SELECTION in response.content.decode()
    response = client.get(f"/projects/{project.pk}/export/features/", {"format": "kto"})
    assert response.status_code == 200 and response.json()["label"] == {"dtype": "bool", "_type": "Value"}
