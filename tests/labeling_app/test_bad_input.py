"""Hostile or odd input through the real entry points (API, pages, command line): a clear 4xx or line error, never a 500."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling_app.models import Annotation, CheckQuestion, Completion, Demonstration, ImportJob, Prompt, RankingTask
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, task_create
from tests.labeling_app.labeling_helpers import valid_ratings
from tests.labeling_app.researcher_fixtures import label, write_jsonl

DEEP = "[" * 5000 + "]" * 5000
HUGE = "9" * 5000


# --- labeling API ---------------------------------------------------------------------------


@pytest.fixture
def api(labeler):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    return client


@pytest.fixture
def leased(demo_project, labeler):
    return task_assign_next(project=demo_project, labeler=labeler).task


def test_a_nul_in_a_draft_is_refused_and_nothing_is_stored(api, leased):
    url = reverse("api:label-draft", args=[leased.pk])
    r = api.put(url, {"draft": {"comment": "half\u0000way"}}, format="json")
    assert r.status_code == 400, r.content
    assert "NUL" in r.json()["errors"]["draft"][0]
    r = api.put(url, {"draft": {"ke\u0000y": 1}}, format="json")
    assert r.status_code == 400
    assert Annotation.objects.get(task=leased).draft == {}


def test_a_nul_in_a_comment_is_refused_and_the_draft_stays_storable(api, leased, labeler):
    url = reverse("api:label-submit", args=[leased.pk])
    ratings = valid_ratings(leased, labeler)
    r = api.post(url, {"ratings": ratings, "comment": "bad\u0000"}, format="json")
    assert r.status_code == 400, r.content
    assert Annotation.objects.get(task=leased).status == "draft"


def test_a_nul_in_a_comment_given_to_the_service_is_a_field_error(leased, labeler):
    from labeling_app.services.annotations import AnnotationInvalid, annotation_submit

    with pytest.raises(AnnotationInvalid) as exc:
        annotation_submit(task=leased, labeler=labeler, ratings=valid_ratings(leased, labeler), comment="x\u0000y")
    assert "NUL" in exc.value.errors["comment"][0]
    assert "\u0000" not in json.dumps(Annotation.objects.get(task=leased).draft)


@pytest.mark.parametrize("name", ["label-draft", "label-submit", "label-skip"])
def test_json_nested_thousands_deep_is_a_400(api, leased, name):
    method = api.put if name == "label-draft" else api.post
    r = method(
        reverse(f"api:{name}", args=[leased.pk]), data='{"draft": ' + DEEP + "}", content_type="application/json"
    )
    assert r.status_code == 400, r.content
    assert "nested too deeply" in r.json()["detail"]


def test_a_draft_nested_deeper_than_a_page_needs_is_refused(api, leased):
    deep = {}
    for _ in range(200):
        deep = {"a": deep}
    r = api.put(reverse("api:label-draft", args=[leased.pk]), {"draft": deep}, format="json")
    assert r.status_code == 400 and "nested" in r.json()["errors"]["draft"][0]


def test_an_integer_over_4300_digits_is_a_400(api, leased):
    r = api.put(
        reverse("api:label-draft", args=[leased.pk]),
        data='{"draft": {"n": ' + HUGE + "}}",
        content_type="application/json",
    )
    assert r.status_code == 400, r.content
    assert "digits" in r.json()["detail"]


# --- researcher pages -------------------------------------------------------------------------


@pytest.fixture
def rc(client, researcher, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    client.raise_request_exception = False
    client.force_login(researcher)
    return client


def _edit_data(project, **extra) -> dict:
    data = {
        "name": project.name,
        "instructions": "",
        "completions_per_task": project.completions_per_task,
        "overlap": project.overlap,
        "lease_minutes": 30,
    }
    for check in project.checks.all():
        data[f"check-{check.pk}-question"] = check.question
        data[f"check-{check.pk}-active"] = "on"
    data.update(extra)
    return data


def test_a_nul_in_a_new_check_is_a_form_error(rc, demo_project):
    before = CheckQuestion.objects.count()
    response = rc.post(
        f"/projects/{demo_project.pk}/edit/", _edit_data(demo_project, new_question=["Is it\u0000 rude?"])
    )
    assert response.status_code == 200 and "NUL" in response.content.decode()
    assert CheckQuestion.objects.count() == before


def test_a_nul_in_a_check_key_given_to_the_service_is_refused(demo_project):
    from config.errors import ServiceError
    from labeling_app.services.projects import check_add

    with pytest.raises(ServiceError, match="NUL"):
        check_add(project=demo_project, question="Rude?", key="ru\u0000de")


def test_chat_prompt_form_with_nul_deep_json_or_huge_numbers_is_a_form_error(rc, demo_project):
    url = f"/projects/{demo_project.pk}/prompts/new/"
    nul = json.dumps([{"role": "user", "content": "hi\u0000"}])
    for raw, words in [
        (nul, "NUL"),
        (DEEP, "nested too deeply"),
        ('[{"role": "user", "content": "x", "n": ' + HUGE + "}]", "digits"),
    ]:
        response = rc.post(url, {"mode": "chat", "messages": raw})
        assert response.status_code == 200 and words in response.content.decode(), raw[:40]
    assert not Prompt.objects.filter(text__startswith="hi").exists()


def test_max_text_chars_applies_to_prompt_and_demonstration_forms(rc, demo_project, settings):
    settings.MAX_TEXT_CHARS = 50
    response = rc.post(f"/projects/{demo_project.pk}/prompts/new/", {"mode": "plain", "text": "x" * 51})
    assert response.status_code == 200 and "at most 50 characters" in response.content.decode()
    chat = json.dumps([{"role": "user", "content": "y" * 51}])
    assert (
        "at most 50 characters"
        in rc.post(f"/projects/{demo_project.pk}/prompts/new/", {"mode": "chat", "messages": chat}).content.decode()
    )
    prompt = demo_project.prompts.first()
    response = rc.post(f"/projects/{demo_project.pk}/prompts/{prompt.pk}/", {"text": "z" * 51})
    assert "at most 50 characters" in response.content.decode() and not Demonstration.objects.exists()
    assert rc.post(f"/projects/{demo_project.pk}/prompts/new/", {"mode": "plain", "text": "x" * 50}).status_code == 302


@pytest.mark.parametrize(
    "url, suffix",
    [
        ("/projects/{pk}/export/download/?format=pairwise", ".jsonl"),
        ("/projects/{pk}/export/download/?format=pairwise&file=parquet", ".parquet"),
        ("/projects/{pk}/export/features/?format=pairwise", ".features.json"),
        ("/api/projects/{pk}/export/?format=pairwise&file=parquet", ".parquet"),
    ],
)
def test_export_download_header_survives_quotes_and_newlines_in_the_project_name(rc, researcher, labeler, url, suffix):
    project = project_create(name='Evil "name"\r\nX-Injected: 1 é', user=researcher, completions_per_task=2)
    prompt = Prompt.objects.create(project=project, text="Q")
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in ("a", "b")],
    )
    label(task, labeler, [1, 2])  # an empty selection answers 404 with a message, not a file
    response = rc.get(url.format(pk=project.pk))
    assert response.status_code == 200
    header = response["Content-Disposition"]
    assert "\r" not in header and "\n" not in header
    ascii_name = header.split('filename="')[1].split('"')[0]
    assert ascii_name.startswith("Evil_name_X-Injected_1_e-pairwise-") and ascii_name.endswith(suffix)
    assert "filename*=UTF-8''Evil%20%22name%22" in header and "%C3%A9" in header and header.endswith(suffix)
    assert "X-Injected" not in {k for k, _ in response.items()}


# --- imports: upload page and command line ----------------------------------------------------


def upload(rc, project, kind: str, content: bytes, name: str = "f.jsonl", **extra) -> ImportJob:
    response = rc.post(
        f"/projects/{project.pk}/import/",
        {"kind": kind, "file": SimpleUploadedFile(name, content), **extra},
        follow=True,
    )
    assert response.status_code == 200, response.content[:500]
    return ImportJob.objects.order_by("-pk").first()


def lines(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


GOOD = {"prompt": "fine", "completions": ["a", "b"]}
BAD_IMPORT_LINES = [
    # (bad line, field, words)
    ({"prompt": "nul\u0000here", "completions": ["a", "b"]}, "prompt", "NUL"),
    ({"messages": [{"role": "user", "content": "nul\u0000"}], "completions": ["a", "b"]}, "messages[0].content", "NUL"),
    ({"prompt": "q", "completions": ["a", "b\u0000"]}, "completions[1]", "NUL"),
    ({"prompt": "q", "completions": ["a", {"text": "b", "model": "m\u0000"}]}, "completions[1].model", "NUL"),
    ('{"prompt": "q", "completions": ' + DEEP + "}", "(json)", "nested too deeply"),
    ('{"prompt": "q", "n": ' + HUGE + ', "completions": ["a", "b"]}', "(json)", "4300 digits"),
    ({"prompt": "q", "completions": ["a", "b"], "model": "m" * 201}, "model", "at most 200 characters"),
    (
        {"prompt": "q", "completions": ["a", {"text": "b", "model": "m" * 201}]},
        "completions[1].model",
        "at most 200 characters",
    ),
]


@pytest.mark.parametrize("bad,field,words", BAD_IMPORT_LINES, ids=[f"{b[1]}-{b[2]}" for b in BAD_IMPORT_LINES])
def test_bad_import_lines_are_line_errors_on_the_upload_page(rc, k2, bad, field, words):
    job = upload(rc, k2, "completions", lines(GOOD, bad, GOOD))
    assert job.status == "failed"
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, field)], job.errors
    assert words in job.errors[0]["message"]
    assert not Prompt.objects.exists()


def test_a_nul_in_a_grouped_rankings_check_key_is_reported_and_the_page_renders(rc, k4):
    row = {"prompt": "q", "completions": list("abcd"), "ranks": [1, 2, 3, 4], "checks": {"to\u0000xic": [True] * 4}}
    job = upload(rc, k4, "preferences", lines(row), source_name="s")
    assert job.status == "failed" and job.errors[0]["field"] == "checks.to\\u0000xic"
    assert "not a check" in rc.get(f"/projects/{k4.pk}/imports/{job.pk}/").content.decode()


def test_a_text_over_max_text_chars_is_a_line_error(rc, k2, settings):
    settings.MAX_TEXT_CHARS = 100
    job = upload(rc, k2, "completions", lines(GOOD, {"prompt": "q", "completions": ["a", "b" * 101]}))
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, "completions[1]")]
    assert "at most 100 characters" in job.errors[0]["message"] and "MAX_TEXT_CHARS" in job.errors[0]["message"]
    chat = {"messages": [{"role": "user", "content": "c" * 101}], "completions": ["a", "b"]}
    job = upload(rc, k2, "completions", lines(chat))
    assert job.errors[0]["field"] == "messages[0].content"


@pytest.mark.parametrize(
    "name,content",
    [
        ("bom.jsonl", "\ufeff" + json.dumps({"prompt": "with a BOM"}) + "\n"),
        ("bom.csv", "\ufeffprompt,source\nwith a BOM,x\n"),
    ],
)
def test_a_file_starting_with_a_utf8_bom_imports(rc, k2, name, content):
    job = upload(rc, k2, "prompts", content.encode("utf-8"), name=name)
    assert job.status == "succeeded", job.errors
    assert Prompt.objects.get().text == "with a BOM"


@pytest.mark.parametrize(
    "name,content",
    [
        ("bad.jsonl", b'{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "caf\xe9"}\n{"prompt": "four"}\n'),
        ("bad.csv", b'prompt\none\n"two\nlines"\ncaf\xe9\nfour\n'),
    ],
)
def test_invalid_utf8_names_the_real_line(rc, k2, name, content):
    job = upload(rc, k2, "prompts", content, name=name)
    assert job.status == "failed"
    line = 3 if name.endswith(".jsonl") else 5
    assert [(e["line"], e["field"]) for e in job.errors] == [(line, "(encoding)")], job.errors
    assert "UTF-8" in job.errors[0]["message"]
    assert not Prompt.objects.exists()


def test_invalid_utf8_with_skip_invalid_skips_only_that_jsonl_line(rc, k2):
    job = upload(
        rc, k2, "prompts", b'{"prompt": "one"}\n{"prompt": "caf\xe9"}\n{"prompt": "three"}\n', skip_invalid="on"
    )
    assert job.status == "succeeded" and [e["line"] for e in job.errors] == [2]
    assert set(Prompt.objects.values_list("text", flat=True)) == {"one", "three"}


def test_grouped_ranks_must_be_dense_like_the_api(rc, k4):
    from labeling_app.services.annotations import AnnotationInvalid, annotation_submit  # noqa: F401 (same rule)

    row = {"prompt": "q", "completions": list("abcd"), "ranks": [1, 5, 5, 9]}
    job = upload(rc, k4, "preferences", lines(row), source_name="s")
    assert job.status == "failed" and job.errors[0]["field"] == "ranks"
    assert "without gaps" in job.errors[0]["message"] and "nothing is ranked 2, 3, 4" in job.errors[0]["message"]
    ok = {"prompt": "q", "completions": list("abcd"), "ranks": [1, 2, 2, 3]}
    assert upload(rc, k4, "preferences", lines(ok), source_name="s").status == "succeeded"


def test_a_k_mismatch_on_every_line_is_reported_once(k4, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": f"q{i}", "completions": ["a", "b", "c"]} for i in range(50)])
    with pytest.raises(CommandError) as exc:
        call_command("import_data", str(path), project="Fours", kind="completions")
    message = str(exc.value)
    assert "every line has 3 completions, but project 'Fours' ranks K=4" in message
    assert message.count("K=4") == 1
    assert not RankingTask.objects.exists()


def test_a_k_mismatch_on_some_lines_is_reported_once_with_their_lines(k4, tmp_path):
    from labeling_app.services.imports import ImportRejected, import_file

    rows = [{"prompt": f"q{i}", "completions": ["a", "b", "c"] if i % 2 else list("abcd")} for i in range(10)]
    with pytest.raises(ImportRejected) as exc:
        import_file(project=k4, kind="completions", path=write_jsonl(tmp_path / "c.jsonl", rows))
    (error,) = exc.value.line_errors
    assert exc.value.error_count == 5 and error.line == 2 and error.field == "completions"
    assert "5 lines have 3 completions (lines 2, 4, 6, 8, 10)" in error.message


def test_pairwise_preferences_into_a_k4_project_are_reported_once(k4, tmp_path):
    from labeling_app.services.imports import ImportRejected, import_file

    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(30)]
    with pytest.raises(ImportRejected) as exc:
        import_file(project=k4, kind="preferences", path=write_jsonl(tmp_path / "p.jsonl", rows), source_name="s")
    assert len(exc.value.line_errors) == 1 and "every line" in exc.value.line_errors[0].message


def test_command_line_reports_bad_lines_without_a_traceback(k2, tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(lines(GOOD, '{"prompt": "q", "completions": ' + DEEP + "}") + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(CommandError) as exc:
        call_command("import_data", str(path), project="Pairs", kind="completions")
    assert "line 2, field (json): nested too deeply" in str(exc.value)
    assert "line 3, field (encoding)" in str(exc.value)
    assert not Completion.objects.exists()


def test_a_csv_text_longer_than_the_csv_modules_default_limit_reaches_the_text_check(rc, k2, settings):
    settings.MAX_TEXT_CHARS = 200_000
    job = upload(rc, k2, "prompts", b"prompt\n" + b"x" * 150_000 + b"\nshort\n", name="long.csv")
    assert job.status == "succeeded", job.errors
    job = upload(rc, k2, "prompts", b"prompt\n" + b"y" * 200_001 + b"\n", name="longer.csv")
    assert [(e["line"], e["field"]) for e in job.errors] == [(2, "prompt")] and "MAX_TEXT_CHARS" in job.errors[0][
        "message"
    ]
