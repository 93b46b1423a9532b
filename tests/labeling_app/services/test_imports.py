"""Bulk import: every accepted shape, every kind of bad line, all-or-nothing, duplicates, the Celery path."""

from __future__ import annotations

import json
import time

import pytest
from django.core.management import CommandError, call_command

from labeling_app.models import Annotation, Completion, Demonstration, ImportSource, Prompt, RankingTask
from config.errors import ServiceError
from labeling_app.services.imports import ImportRejected, import_file, import_job_create
from labeling_app.services.projects import project_create
from tests.labeling_app.researcher_fixtures import write_jsonl

HH_CHOSEN = "\n\nHuman: What is 2+2?\n\nAssistant: It is 4.\n\nHuman: And 3+3?\n\nAssistant: 6."
HH_REJECTED = "\n\nHuman: What is 2+2?\n\nAssistant: It is 4.\n\nHuman: And 3+3?\n\nAssistant: Probably 7."


def run(project, kind, path, **kw):
    return import_file(project=project, kind=kind, path=path, **kw)


def test_prompts_jsonl_accepts_text_chat_prompt_and_messages(k4, tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "Plain one"}, {"prompt": chat}, {"messages": chat[1:]}, {"text": "Third"}]
    )
    result = run(k4, "prompts", path)
    assert result.prompts_created == 4 and result.prompts_existing == 0
    by_text = {p.text: p for p in k4.prompts.all()}
    assert by_text["Plain one"].messages is None
    assert k4.prompts.filter(messages=chat).get().text == "Name a colour."
    assert k4.prompts.filter(messages=chat[1:]).exists()


def test_prompts_csv(k4, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,source\n"Hello, world",web\n"Multi\nline prompt",\n\n', encoding="utf-8")
    result = run(k4, "prompts", path)
    assert result.prompts_created == 2
    assert set(k4.prompts.values_list("text", flat=True)) == {"Hello, world", "Multi\nline prompt"}


def test_completions_make_ranking_tasks_at_once(k4, tmp_path):
    rows = [
        {"prompt": "Q1", "completions": ["a", "b", "c", "d"], "model": "m-default"},
        {
            "prompt": [{"role": "user", "content": "Q2"}],
            "completions": [
                {"text": "w", "model": "m1"},
                {"text": "x", "model": "m2"},
                "y",
                [{"role": "assistant", "content": "z"}],
            ],
        },
    ]
    result = run(k4, "completions", write_jsonl(tmp_path / "c.jsonl", rows))
    assert (result.tasks_created, result.completions_created) == (2, 8)
    task = RankingTask.objects.get(prompt__text="Q1")
    assert task.overlap == 2 and task.submitted_count == 0
    assert [tc.completion.text for tc in task.task_completions.order_by("position")] == ["a", "b", "c", "d"]
    assert set(Completion.objects.filter(prompt__text="Q1").values_list("model_name", flat=True)) == {"m-default"}
    q2 = RankingTask.objects.get(prompt__text="Q2")
    assert [tc.completion.model_name for tc in q2.task_completions.order_by("position")] == ["m1", "m2", "", ""]
    assert Completion.objects.filter(source="imported").count() == 8
    # The trigger on the bulk TaskCompletion insert names each task's sources (for the queue order "source first").
    assert (task.source_key, q2.source_key) == ("imported:m-default", "imported: + imported:m1 + imported:m2")


def test_completions_from_chosen_rejected_shape(k2, tmp_path):
    run(k2, "completions", write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q", "chosen": "good", "rejected": "bad"}]))
    task = RankingTask.objects.get()
    assert [tc.completion.text for tc in task.task_completions.order_by("position")] == ["good", "bad"]
    assert not task.annotations.exists()  # completions only: no label


def test_k_mismatch_says_what_to_fix(k4, tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"prompt": "Q", "completions": ["a", "b", "c", "d"]}, {"prompt": "R", "completions": ["a", "b", "c"]}],
    )
    with pytest.raises(ImportRejected) as exc:
        run(k4, "completions", path)
    (error,) = exc.value.line_errors
    assert (error.line, error.field) == (2, "completions")
    assert "K=4" in error.message and "give exactly 4" in error.message
    assert not Prompt.objects.exists()


def test_demonstrations_prompt_completion_and_messages(k4, tmp_path):
    Prompt.objects.create(project=k4, text="Already here")
    rows = [
        {"prompt": "Already here", "completion": "Ideal A"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]},
        {"prompt": [{"role": "user", "content": "Yo"}], "completion": [{"role": "assistant", "content": "Hey."}]},
    ]
    result = run(k4, "demonstrations", write_jsonl(tmp_path / "d.jsonl", rows), user=None)
    assert result.demonstrations_created == 3 and result.prompts_existing == 1 and result.prompts_created == 2
    assert Demonstration.objects.get(prompt__text="Already here").text == "Ideal A"
    demo = Demonstration.objects.get(prompt__text="Hi")
    assert demo.text == "Hello! How can I help?" and demo.prompt.messages == [{"role": "user", "content": "Hi"}]


def test_preferences_trl_pairwise_plain_and_chat(k2, tmp_path):
    rows = [
        {
            "prompt": "Capital of France?",
            "chosen": "Paris.",
            "rejected": "Lyon.",
            "chosen_rating": 7,
            "rejected_rating": 2,
        },
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
        # TRL also writes chosen/rejected as the whole conversation including the prompt
        {
            "prompt": [{"role": "user", "content": "Sky?"}],
            "chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}],
        },
    ]
    result = run(k2, "preferences", write_jsonl(tmp_path / "p.jsonl", rows), source_name="trl-sample")
    assert result.annotations_created == 3
    source = ImportSource.objects.get(name="trl-sample")
    for annotation in Annotation.objects.all():
        assert annotation.labeler_id is None and annotation.import_source == source and annotation.status == "submitted"
        assert annotation.task.overlap == 1 and annotation.task.submitted_count == 1  # closed: not in the queue
    first = Annotation.objects.get(task__prompt__text="Capital of France?")
    assert {(r.completion.text, r.rank, r.likert) for r in first.ratings.all()} == {("Paris.", 1, 7), ("Lyon.", 2, 2)}
    assert Prompt.objects.get(text="Sky?").messages == [{"role": "user", "content": "Sky?"}]
    assert Annotation.objects.get(task__prompt__text="Sky?").ratings.get(rank=1).completion.text == "Blue."


def test_preferences_implicit_prompt_hh_text(k2, tmp_path):
    run(
        k2,
        "preferences",
        write_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}]),
        source_name="hh-rlhf",
    )
    prompt = Prompt.objects.get()
    assert prompt.messages == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3+3?"},
    ]
    ranks = {r.completion.text: r.rank for r in Annotation.objects.get().ratings.all()}
    assert ranks == {"6.": 1, "Probably 7.": 2}


def test_preferences_implicit_prompt_chat_lists(k2, tmp_path):
    base = [{"role": "user", "content": "Tell a joke"}]
    row = {
        "chosen": base + [{"role": "assistant", "content": "A pun."}],
        "rejected": base + [{"role": "assistant", "content": "No."}],
    }
    run(k2, "preferences", write_jsonl(tmp_path / "c.jsonl", [row]), source_name="chat-pairs")
    assert Prompt.objects.get().messages == base
    assert Annotation.objects.get().ratings.get(rank=1).completion.text == "A pun."


def test_preferences_grouped_rankings_with_ties_ratings_and_checks(k4, tmp_path):
    row = {
        "prompt": "Rank these",
        "completions": ["w", "x", "y", "z"],
        "ranks": [2, 1, 3, 3],
        "ratings": [5, 6, None, 2],
        "checks": {"toxic": [False, False, True, None], "hallucination": [True, False, False, False]},
    }
    result = run(k4, "preferences", write_jsonl(tmp_path / "g.jsonl", [row]), source_name="grouped-src")
    assert result.annotations_created == 1
    ratings = {r.completion.text: r for r in Annotation.objects.get().ratings.all()}
    assert {t: (r.rank, r.likert) for t, r in ratings.items()} == {
        "w": (2, 5),
        "x": (1, 6),
        "y": (3, None),
        "z": (3, 2),
    }
    assert {a.check_question.key: a.value for a in ratings["y"].check_answers.all()} == {
        "toxic": True,
        "hallucination": False,
    }
    assert {a.check_question.key for a in ratings["z"].check_answers.all()} == {"hallucination"}  # null = not answered


BAD_LINES = [
    # (kind, project fixture, bad line, field in the error, words in the message)
    ("prompts", "k4", '{"prompt": "ok"', "(json)", "not valid JSON"),
    ("prompts", "k4", "[1, 2]", "(line)", "JSON object"),
    ("prompts", "k4", {"question": "?"}, "prompt", "missing"),
    ("prompts", "k4", {"prompt": "   "}, "prompt", "empty"),
    ("prompts", "k4", {"prompt": 42}, "prompt", "must be a string"),
    ("prompts", "k4", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "must be one of"),
    ("prompts", "k4", {"messages": [{"role": "user"}]}, "messages[0]", '"role" and "content"'),
    (
        "prompts",
        "k4",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "messages",
        "end with a user turn",
    ),
    ("completions", "k4", {"prompt": "q", "completions": "abcd"}, "completions", "must be a list"),
    ("completions", "k4", {"prompt": "q", "completions": ["a", "b", "", "d"]}, "completions[2]", "empty"),
    ("completions", "k4", {"prompt": "q", "completions": ["a", "b", {"txt": "c"}, "d"]}, "completions[2]", '"text"'),
    ("demonstrations", "k4", {"prompt": "q"}, "completion", "missing"),
    ("preferences", "k2", {"prompt": "q", "chosen": "a"}, "chosen", "missing"),
    ("preferences", "k2", {"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected", "same text"),
    (
        "preferences",
        "k2",
        {"prompt": "q", "chosen": "a", "rejected": "b", "chosen_rating": 9},
        "chosen_rating",
        "1 to 7",
    ),
    (
        "preferences",
        "k2",
        {"chosen": HH_CHOSEN, "rejected": "\n\nHuman: Other?\n\nAssistant: 6."},
        "rejected",
        "share the prompt",
    ),
    ("preferences", "k2", {"chosen": "no turns here", "rejected": "nor here"}, "chosen", "Human"),
    ("preferences", "k4", {"prompt": "q", "chosen": "a", "rejected": "b"}, "chosen", "project with K=2"),
    (
        "preferences",
        "k4",
        {"prompt": "q", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 0, 3]},
        "ranks[2]",
        ">= 1",
    ),
    (
        "preferences",
        "k4",
        {"prompt": "q", "completions": ["a", "b", "c", "d"], "ranks": [1, 2]},
        "ranks",
        "one rank per completion",
    ),
    (
        "preferences",
        "k4",
        {"prompt": "q", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 3, 4], "ratings": [1, 2, 3, 8]},
        "ratings[3]",
        "1 to 7",
    ),
    (
        "preferences",
        "k4",
        {"prompt": "q", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 3, 4], "checks": {"nope": [True] * 4}},
        "checks.nope",
        "not a check",
    ),
    (
        "preferences",
        "k4",
        {
            "prompt": "q",
            "completions": ["a", "b", "c", "d"],
            "ranks": [1, 2, 3, 4],
            "checks": {"toxic": [True, "no", False, False]},
        },
        "checks.toxic[1]",
        "true, false or null",
    ),
]


@pytest.mark.parametrize(
    "kind,project_name,bad,field,words", BAD_LINES, ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD_LINES)]
)
def test_bad_line_names_line_and_field_and_nothing_is_written(request, tmp_path, kind, project_name, bad, field, words):
    project = request.getfixturevalue(project_name)
    good = {
        "prompts": {"prompt": "good one"},
        "completions": {"prompt": "good", "completions": ["1", "2", "3", "4"]},
        "demonstrations": {"prompt": "good", "completion": "fine"},
        "preferences": {"prompt": "good", "chosen": "1", "rejected": "2"}
        if project.completions_per_task == 2
        else {"prompt": "good", "completions": ["1", "2", "3", "4"], "ranks": [1, 2, 3, 4]},
    }[kind]
    path = write_jsonl(tmp_path / "f.jsonl", [good, "", bad if isinstance(bad, str) else json.dumps(bad), good])
    with pytest.raises(ImportRejected) as exc:
        run(project, kind, path, source_name="src")
    (error,) = exc.value.line_errors
    assert error.line == 3, str(exc.value)
    assert error.field == field, str(exc.value)
    assert words in error.message, str(exc.value)
    assert f"line 3, field {field}" in str(exc.value)
    assert not Prompt.objects.exists() and not ImportSource.objects.exists()


def test_csv_without_prompt_column_is_rejected(k4, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question\nwhat?\n", encoding="utf-8")
    with pytest.raises(ImportRejected, match="line 1, field \\(header\\): a CSV needs a 'prompt'"):
        run(k4, "prompts", path)


def test_all_or_nothing_and_errors_are_counted_beyond_the_shown_hundred(k4, tmp_path):
    rows = [{"prompt": f"good {i}"} for i in range(50)] + [{"prompt": ""} for _ in range(150)]
    with pytest.raises(ImportRejected) as exc:
        run(k4, "prompts", write_jsonl(tmp_path / "f.jsonl", rows), batch_size=10)
    assert exc.value.error_count == 150 and len(exc.value.line_errors) == 100 and exc.value.lines == 200
    assert exc.value.line_errors[0].line == 51
    assert not Prompt.objects.exists()


def test_duplicate_prompts_are_reported_not_doubled(k4, tmp_path):
    Prompt.objects.create(project=k4, text="Old   prompt")  # whitespace-normalised hash: same prompt
    rows = [
        {"prompt": "New A"},
        {"prompt": "Old prompt"},
        {"prompt": "New B"},
        {"prompt": "New A"},
        {"prompt": "New C"},
    ]
    result = run(k4, "prompts", write_jsonl(tmp_path / "f.jsonl", rows), batch_size=2)  # duplicates across batches too
    assert result.prompts_created == 3 and result.prompts_existing == 2
    assert [line for line, _ in result.duplicate_lines] == [2, 4]
    assert k4.prompts.count() == 4


def test_preferences_need_a_source_name(k2, tmp_path):
    with pytest.raises(ServiceError, match="source name"):
        run(k2, "preferences", write_jsonl(tmp_path / "f.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}]))


def test_a_job_without_the_source_its_labels_need_fails_naming_the_field(k2, researcher, tmp_path, settings):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    job = import_job_create(
        project=k2, kind="preferences", upload=open(path, "rb"), original_name="p.jsonl", user=researcher
    )
    assert job.status == "failed" and [(e["field"], "source name" in e["message"]) for e in job.errors] == [
        ("source_name", True)
    ]
    assert not Prompt.objects.exists()


def test_small_upload_runs_inline_and_records_errors(k4, researcher, tmp_path, settings):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    ok = import_job_create(
        project=k4,
        kind="prompts",
        upload=open(write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x"}]), "rb"),
        original_name="a.jsonl",
        user=researcher,
    )
    assert ok.status == "succeeded" and ok.result["prompts_created"] == 1
    bad = import_job_create(
        project=k4,
        kind="prompts",
        upload=open(write_jsonl(tmp_path / "b.jsonl", [{"prompt": 1}]), "rb"),
        original_name="b.jsonl",
        user=researcher,
    )
    assert bad.status == "failed" and bad.errors == [
        {"line": 1, "field": "prompt", "message": "must be a string, got int"}
    ]


def test_import_data_command(k4, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "q", "completions": ["a", "b", "c", "d"]}])
    call_command("import_data", str(path), project="Fours", kind="completions")
    assert RankingTask.objects.filter(project=k4).count() == 1
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "r", "completions": ["a"]}])
    with pytest.raises(CommandError, match="line 1, field completions"):
        call_command("import_data", str(bad), project="Fours", kind="completions")
    with pytest.raises(CommandError, match="no project 'Nope'"):
        call_command("import_data", str(path), project="Nope", kind="prompts")


@pytest.mark.django_db(transaction=True)
def test_big_file_runs_as_a_celery_job_with_progress(celery_worker, researcher, tmp_path, settings):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    settings.IMPORT_ASYNC_LINES = 100
    project = project_create(name="Big", user=researcher, completions_per_task=2)
    rows = [{"prompt": f"prompt {i}", "completions": [f"a{i}", f"b{i}"]} for i in range(450)] + [
        {"prompt": "prompt 3", "completions": ["c", "d"]}
    ]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    with open(path, "rb") as upload:
        job = import_job_create(
            project=project, kind="completions", upload=upload, original_name="big.jsonl", user=researcher
        )
    assert job.total_lines == 451 and job.status == "queued"  # handed to the worker, not run in the request
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert job.status == "succeeded", job.errors
    assert job.result["tasks_created"] == 451 and job.result["prompts_existing"] == 1
    assert RankingTask.objects.filter(project=project).count() == 451
    assert Prompt.objects.filter(project=project).count() == 450


def test_a_non_utf8_file_fails_the_job_with_a_message(k4, researcher, tmp_path, settings):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "caf\u00e9"}\n'.encode("latin-1"))
    job = import_job_create(
        project=k4, kind="prompts", upload=open(path, "rb"), original_name="latin1.jsonl", user=researcher
    )
    assert job.status == "failed" and "utf-8" in job.errors[0]["message"] and not Prompt.objects.exists()
