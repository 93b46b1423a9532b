"""Exports: each format through datasets.Dataset.from_json, the filters, the streamed download, the round trip."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from datasets import Dataset
from django.core.management import call_command
from django.utils import timezone

from labeling_app.models import Completion, Demonstration, Prompt
from labeling_app.selectors.exports import export_lines
from labeling_app.selectors.labels import LabelFilters
from labeling_app.selectors.training_data import demonstrations_for_training, rankings_for_training
from labeling_app.services.imports import import_file
from labeling_app.services.projects import check_add, project_create, task_create
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label, write_jsonl


def tasks_of(project):
    return list(project.tasks.order_by("id"))


def export(fmt, tmp_path, **filters) -> tuple[list[dict], Dataset]:
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(export_lines(fmt, LabelFilters(**filters))), encoding="utf-8")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return rows, (Dataset.from_json(str(path), cache_dir=str(tmp_path / "hf")) if rows else None)


@pytest.fixture
def labeled(demo_project, labeler, labeler2):
    """demo_project (K=4, overlap 2): task 0 labeled by both (agreeing but one swap), task 1 by lab1 only."""
    t0, t1, _ = tasks_of(demo_project)
    label(
        t0,
        labeler,
        [1, 2, 2, 3],
        [7, 5, 5, 2],
        {"toxic": [False, False, False, True], "satisfies_constraints": [True, True, False, True]},
    )
    label(t0, labeler2, [2, 1, 3, 4], [6, 7, 4, 1], {"toxic": [False, False, False, True]})
    label(t1, labeler, [4, 3, 2, 1], [1, 2, 3, 4], submitted_at=timezone.now() - timedelta(days=10))
    return demo_project


def test_pairwise_export_reads_as_a_trl_dataset(labeled, tmp_path):
    rows, ds = export("pairwise", tmp_path, project_ids=[labeled.pk])
    # lab1 on t0 ranks [1,2,2,3]: 6 pairs, 1 tie -> 5; lab2 on t0: 6; lab1 on t1: 6
    assert len(rows) == 17 and ds.num_rows == 17
    assert {"prompt", "chosen", "rejected", "annotation_id", "labeler_id", "chosen_rating", "rejected_rating"} <= set(
        ds.column_names
    )
    first = rows[0]
    assert first["prompt"] == "Prompt number 0?" and first["chosen"] == "Answer 0 to prompt 0"
    assert (first["chosen_rating"], first["rejected_rating"]) == (7, 5)
    assert all(r["chosen"] != r["rejected"] for r in rows)
    tied = {"Answer 1 to prompt 0", "Answer 2 to prompt 0"}
    assert not any({r["chosen"], r["rejected"]} == tied and r["labeler"] == "lab1" for r in rows)  # the tie is left out


def test_pairwise_chat_prompts_are_message_lists(researcher, labeler, tmp_path):
    project = project_create(name="Chat", user=researcher, completions_per_task=2)
    messages = [{"role": "user", "content": "Hi"}]
    prompt = Prompt.objects.create(project=project, text="Hi", messages=messages)
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in ("Hello!", "What.")],
    )
    label(task, labeler, [1, 2])
    rows, ds = export("pairwise", tmp_path, project_ids=[project.pk])
    assert rows[0]["prompt"] == messages
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Hello!"}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": "What."}]


def test_grouped_export(labeled, tmp_path):
    rows, ds = export("grouped", tmp_path, project_ids=[labeled.pk])
    assert ds.num_rows == 3
    first = rows[0]
    assert first["ranks"] == [1, 2, 2, 3] and first["ratings"] == [7, 5, 5, 2]
    assert first["completions"] == [f"Answer {j} to prompt 0" for j in range(4)]
    assert first["checks"] == {"toxic": [False, False, False, True], "satisfies_constraints": [True, True, False, True]}
    assert ds[0]["checks"] == first["checks"] and ds[2]["checks"] == {}  # a label without check answers


def test_kto_label_is_no_serious_check_failed(labeled, tmp_path):
    rows, ds = export("kto", tmp_path, project_ids=[labeled.pk], labeler="lab1")
    # lab1 on t0: toxic yes on completion 3; "satisfies constraints" no on completion 2 -> both undesirable
    assert [r["label"] for r in rows] == [True, True, False, False]
    assert rows[2]["failed_checks"] == ["satisfies_constraints"] and rows[3]["failed_checks"] == ["toxic"]
    assert ds.num_rows == 4 and set(ds.column_names) >= {"prompt", "completion", "label"}


def test_sft_export_from_demonstrations(demo_project, researcher, tmp_path):
    prompt = demo_project.prompts.first()
    Demonstration.objects.create(prompt=prompt, text="The ideal answer.", author=researcher)
    chat = Prompt.objects.create(project=demo_project, text="Hey", messages=[{"role": "user", "content": "Hey"}])
    Demonstration.objects.create(prompt=chat, text="Hello there.", author=researcher)
    rows, ds = export("sft", tmp_path, project_ids=[demo_project.pk])
    # one chat prompt makes the whole selection chat: the plain one is written as one user turn
    assert [r["prompt"] for r in rows] == [
        [{"role": "user", "content": prompt.text}],
        [{"role": "user", "content": "Hey"}],
    ]
    assert [r["completion"] for r in rows] == [
        [{"role": "assistant", "content": "The ideal answer."}],
        [{"role": "assistant", "content": "Hello there."}],
    ]
    rows, _ = export("sft", tmp_path, project_ids=[demo_project.pk], date_to="2000-01-01")
    assert rows == []
    assert ds.num_rows == 2 and {"prompt", "completion"} <= set(ds.column_names)
    assert list(demonstrations_for_training(project_ids=[demo_project.pk]))[1] == {
        "prompt": [{"role": "user", "content": "Hey"}],
        "completion": "Hello there.",
        "demonstration_id": Demonstration.objects.get(prompt=chat).pk,
        "prompt_id": chat.pk,
    }
    Demonstration.objects.filter(prompt=chat).delete()
    rows, _ = export("sft", tmp_path, project_ids=[demo_project.pk])
    assert [r["completion"] for r in rows] == ["The ideal answer."]  # all plain: strings


def test_filters_date_labeler_full_overlap_and_agreeing(labeled, labeler, labeler2, tmp_path):
    t0, t1, t2 = tasks_of(labeled)
    ids = lambda **f: [r["task_id"] for r in export("grouped", tmp_path, project_ids=[labeled.pk], **f)[0]]  # noqa: E731
    assert ids(date_from=(timezone.now() - timedelta(days=1)).date()) == [t0.pk, t0.pk]
    assert ids(date_to=(timezone.now() - timedelta(days=5)).date()) == [t1.pk]
    assert ids(labeler="lab2") == [t0.pk]
    assert ids(full_overlap=True) == [t0.pk, t0.pk]  # overlap 2: only t0 has both labels
    # t0: lab1 [1,2,2,3] vs lab2 [2,1,3,4]: comparable pairs 5 (the lab1 tie drops one), agreeing 4 -> 0.8
    assert ids(only_agreeing=True, min_agreement=0.8) == [t0.pk, t0.pk]
    assert ids(only_agreeing=True, min_agreement=0.81) == []
    lab3 = make_user("lab3", "labeler")
    label(t0.__class__.objects.get(pk=t2.pk), lab3, [1, 2, 3, 4])
    assert ids(only_agreeing=True, labeler="lab3") == []  # alone on its task: nothing to agree with


def test_rankings_for_training_includes_imports_by_source(labeled, tmp_path):
    k4 = project_create(name="Imported", completions_per_task=4)
    write_jsonl(tmp_path / "g.jsonl", [{"prompt": "q", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 3, 3]}])
    import_file(project=k4, kind="preferences", path=tmp_path / "g.jsonl", source_name="public-set")
    rows = list(rankings_for_training(project_ids=[labeled.pk, k4.pk]))
    assert [r["labeler"] for r in rows] == ["lab1", "lab2", "lab1", "import:public-set"]
    assert rows[-1] == {
        "annotation_id": rows[-1]["annotation_id"],
        "prompt": "q",
        "completions": ["a", "b", "c", "d"],
        "ranks": [1, 2, 3, 3],
        "labeler": "import:public-set",
        "prompt_id": Prompt.objects.get(text="q").pk,
    }
    assert len(list(rankings_for_training(project_ids=[labeled.pk, k4.pk], include_imported=False))) == 3
    assert len(list(rankings_for_training(project_ids=[k4.pk], date_to=timezone.now() - timedelta(days=1)))) == 0


def test_pairwise_round_trip_export_import_export(researcher, labeler, labeler2, tmp_path):
    source = project_create(name="Source pairs", user=researcher, completions_per_task=2)
    for i in range(3):
        prompt = Prompt.objects.create(project=source, text=f"Question {i}")
        task = task_create(
            project=source,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"{w} {i}", source="imported") for w in ("good", "bad")
            ],
        )
        label(task, labeler, [1, 2], [6, 3])
    chat = Prompt.objects.create(
        project=source,
        text="Hi",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
    )
    task = task_create(
        project=source,
        prompt=chat,
        completions=[Completion.objects.create(prompt=chat, text=t, source="imported") for t in ("Hello!", "Meh.")],
    )
    label(task, labeler2, [2, 1], [2, 5])

    (tmp_path / "a").mkdir()
    first, _ = export("pairwise", tmp_path / "a", project_ids=[source.pk])
    path = tmp_path / "a" / "pairwise.jsonl"
    target = project_create(name="Target pairs", completions_per_task=2)
    result = import_file(project=target, kind="preferences", path=path, source_name="round-trip")
    assert result.annotations_created == 4
    (tmp_path / "b").mkdir()
    second, _ = export("pairwise", tmp_path / "b", project_ids=[target.pk])

    def key(r):
        return (
            json.dumps(r["prompt"]),
            json.dumps(r["chosen"]),
            json.dumps(r["rejected"]),
            r["chosen_rating"],
            r["rejected_rating"],
        )

    assert sorted(map(key, first)) == sorted(map(key, second))
    assert {r["labeler"] for r in second} == {"import:round-trip"} and all(r["labeler_id"] is None for r in second)


def test_grouped_round_trip_export_import_export(labeled, tmp_path):
    (tmp_path / "a").mkdir()
    first, _ = export("grouped", tmp_path / "a", project_ids=[labeled.pk])
    target = project_create(name="Target grouped", completions_per_task=4)
    import_file(project=target, kind="preferences", path=tmp_path / "a" / "grouped.jsonl", source_name="grouped-rt")
    (tmp_path / "b").mkdir()
    second, _ = export("grouped", tmp_path / "b", project_ids=[target.pk])
    key = lambda r: json.dumps([r["prompt"], r["completions"], r["ranks"], r["ratings"], r["checks"]])  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, second))


def test_download_streams_and_command_writes_file(labeled, client, researcher, tmp_path):
    client.force_login(researcher)
    response = client.get(
        f"/projects/{labeled.pk}/export/download/", {"format": "grouped", "labeler": "lab2", "submitted": "1"}
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith("attachment;")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [json.loads(line)["labeler"] for line in lines] == ["lab2"]
    out = tmp_path / "out.jsonl"
    call_command("export_data", str(out), project=["Test project"], format="pairwise", labeler="lab1")
    assert len(out.read_text().splitlines()) == 11  # lab1: 5 pairs on t0 + 6 on t1


def test_trl_reads_our_pairwise_rows_and_splits_implicit_prompts_like_we_do(researcher, labeler, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    data_utils = pytest.importorskip("trl.data_utils")  # bench-only dependency: TRL's own format check
    project = project_create(name="TRL check", user=researcher, completions_per_task=2)
    prompt = Prompt.objects.create(project=project, text="Hi", messages=[{"role": "user", "content": "Hi"}])
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in ("Hello!", "What.")],
    )
    label(task, labeler, [1, 2])
    (row,), _ = export("pairwise", tmp_path, project_ids=[project.pk])
    assert data_utils.is_conversational(row)
    full = {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}
    assert data_utils.extract_prompt(full) == {k: row[k] for k in ("prompt", "chosen", "rejected")}
    # our implicit-prompt import of the same full conversations gives the same prompt and answers
    k2 = project_create(name="TRL implicit", completions_per_task=2)
    import_file(
        project=k2, kind="preferences", path=write_jsonl(tmp_path / "implicit.jsonl", [full]), source_name="trl"
    )
    (tmp_path / "b").mkdir()
    (again,), _ = export("pairwise", tmp_path / "b", project_ids=[k2.pk])
    assert {k: again[k] for k in ("prompt", "chosen", "rejected")} == data_utils.extract_prompt(full)


def test_a_project_mixing_plain_and_chat_prompts_exports_one_column_type_with_all_chat(researcher, tmp_path):
    project = project_create(name="Mixed", user=researcher, completions_per_task=2)
    write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        ],
    )
    import_file(project=project, kind="preferences", path=tmp_path / "mixed.jsonl", source_name="mixed")
    Demonstration.objects.create(prompt=Prompt.objects.get(text="2+2?"), text="4.")
    for fmt in ("pairwise", "grouped", "sft"):
        (tmp_path / fmt).mkdir()
        rows, ds = export(fmt, tmp_path / fmt, project_ids=[project.pk], all_chat=True)
        assert all(isinstance(r["prompt"], list) for r in rows) and ds.num_rows == len(rows)
    assert rows[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "4."}]


def test_kto_and_grouped_read_each_checks_stored_polarity(researcher, labeler, tmp_path):
    project = project_create(name="Polarity", user=researcher, completions_per_task=3)
    check_add(project=project, question="Cites its sources", problem_answer=False)
    prompt = Prompt.objects.create(project=project, text="Why is the sky blue?")
    task = task_create(
        project=project,
        prompt=prompt,
        completions=[
            Completion.objects.create(prompt=prompt, text=t, source="imported")
            for t in ("Rayleigh.", "Oceans.", "I think: light.")
        ],
    )
    # What Shift+N gives every check ("no problems"): no, but yes to "satisfies the constraints" and "cites its sources".
    answers = {c.key: [not c.problem_answer] * 3 for c in project.checks.all()}
    assert answers["satisfies_constraints"] == [True] * 3 and answers["toxic"] == [False] * 3
    answers["cites_its_sources"][1] = False  # a serious problem of the project's own
    answers["expresses_opinion"][2] = True  # a mild one
    label(task, labeler, [1, 3, 2], [7, 2, 6], answers)

    rows, _ = export("kto", tmp_path, project_ids=[project.pk])
    assert [(r["rating"], r["label"], r["failed_checks"]) for r in rows] == [
        (7, True, []),
        (2, False, ["cites_its_sources"]),
        (6, True, []),
    ]
    rows, ds = export("grouped", tmp_path, project_ids=[project.pk])
    assert rows[0]["problems"] == [[], ["cites_its_sources"], ["expresses_opinion"]]
    assert ds[0]["problems"] == rows[0]["problems"]

    # The label follows the stored polarity: a researcher who says "yes" is the problem of "satisfies the
    # constraints" (and makes opinions serious) changes how the same answers read.
    project.checks.filter(key="satisfies_constraints").update(problem_answer=True)
    project.checks.filter(key="expresses_opinion").update(serious=True)
    rows, _ = export("kto", tmp_path, project_ids=[project.pk])
    assert [r["failed_checks"] for r in rows] == [
        ["satisfies_constraints"],
        ["cites_its_sources", "satisfies_constraints"],
        ["expresses_opinion", "satisfies_constraints"],
    ]
    assert not any(r["label"] for r in rows)
