"""Exports with an explicit schema: big files whose first rows have null columns load in datasets (Parquet, and
JSONL with its Features sidecar); mixed plain and chat selections come out as chat; counts match the records."""

from __future__ import annotations

import json
from datetime import timedelta
from itertools import islice

import pyarrow.parquet as pq
import pytest
from datasets import Features, Value, load_dataset
from django.core.management import call_command
from django.utils import timezone

from labeling_app.models import Completion, Demonstration, Prompt
from labeling_app.selectors.export_preview import export_count, export_preview
from labeling_app.selectors.exports import FORMATS, export_features, export_records, resolve_chat
from labeling_app.selectors.labels import LabelFilters
from labeling_app.services.imports import import_file
from labeling_app.services.projects import check_add, project_create, task_create
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label, write_jsonl

TEN_MB = 10 << 20  # datasets' JSON reader infers a block's types from 10 MB at a time


def load(kind: str, path, tmp_path, **kwargs):
    return load_dataset(
        kind, data_files=str(path), split="train", cache_dir=str(tmp_path / f"hf-{kind}-{len(kwargs)}"), **kwargs
    )


def add_task(project, prompt_text, texts, *, messages=None):
    prompt = Prompt.objects.create(project=project, text=prompt_text, messages=messages)
    return task_create(
        project=project,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in texts],
    )


@pytest.mark.slow
def test_an_export_over_10_mb_whose_first_rows_have_null_columns_loads_as_parquet_and_as_jsonl_with_features(
    researcher, labeler, tmp_path
):
    project = project_create(name="Big", user=researcher, completions_per_task=2)
    n_imported = 2600
    filler = "lorem ipsum dolor sit amet " * 55  # ~1.5 kB per answer: every pairwise record is > 4 kB
    write_jsonl(
        tmp_path / "public.jsonl",
        [
            {
                "prompt": f"Question {i}: {filler[:900]}",
                "chosen": f"Good answer {i}. {filler}",
                "rejected": f"Bad answer {i}. {filler}",
            }
            for i in range(n_imported)
        ],
    )
    result = import_file(project=project, kind="preferences", path=tmp_path / "public.jsonl", source_name="public")
    assert result.annotations_created == n_imported
    for i in range(3):  # human labels after the imported ones: ratings and labeler ids
        label(add_task(project, f"Human question {i}", [f"yes {i}", f"no {i}"]), labeler, [1, 2], [6, 2])
    filters = LabelFilters(project_ids=[project.pk])
    total = n_imported + 3
    assert export_count("pairwise", filters) == total

    out = tmp_path / "pairs.jsonl"
    call_command("export_data", str(out), project=["Big"], format="pairwise")
    with out.open("rb") as f:
        head = f.read(TEN_MB + 1)
    assert out.stat().st_size > TEN_MB and len(head) > TEN_MB
    first_10_mb = [json.loads(line) for line in head.splitlines()[:-1]]
    assert all(r["chosen_rating"] is None and r["labeler_id"] is None for r in first_10_mb)
    # The failure of the issue: without a schema, datasets types the first block's columns as null.
    with pytest.raises(Exception, match="(?s)error occurred while generating the dataset|cast"):
        load("json", out, tmp_path)

    features = Features.from_dict(json.loads((tmp_path / "pairs.features.json").read_text()))
    ds = load("json", out, tmp_path, features=features)
    assert ds.num_rows == total
    assert ds.features["chosen_rating"] == Value("int64") and ds.features["labeler_id"] == Value("int64")
    assert ds.features["prompt"] == Value("string") and ds.features["chosen"] == Value("string")
    assert ds[0]["chosen_rating"] is None and ds[0]["labeler"] == "import:public"
    assert ds[-1]["chosen_rating"] == 6 and ds[-1]["rejected_rating"] == 2 and ds[-1]["labeler_id"] == labeler.pk

    parquet = tmp_path / "pairs.parquet"
    call_command("export_data", str(parquet), project=["Big"], format="pairwise")
    assert pq.ParquetFile(parquet).metadata.num_row_groups >= 2  # streamed in row groups, not built whole
    pds = load("parquet", parquet, tmp_path)
    assert pds.num_rows == total and pds.features == ds.features
    assert pds[-1] == ds[-1] and pds[0] == ds[0]


def test_a_selection_mixing_plain_and_chat_prompts_is_written_as_chat_in_every_file_type(researcher, labeler, tmp_path):
    project = project_create(name="Mixed", user=researcher, completions_per_task=2)
    label(add_task(project, "2+2?", ["4", "5"]), labeler, [1, 2], [7, 1])
    label(
        add_task(
            project,
            "Hi",
            ["Hello!", "Go away."],
            messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
        ),
        labeler,
        [1, 2],
    )
    Demonstration.objects.create(prompt=Prompt.objects.get(text="2+2?"), text="4.")
    Demonstration.objects.create(prompt=Prompt.objects.get(text="Hi"), text="Hello, how can I help?")
    filters = LabelFilters(project_ids=[project.pk])
    assert (
        resolve_chat("pairwise", filters).all_chat
        and not resolve_chat("pairwise", LabelFilters(project_ids=[project.pk], labeler="nobody")).all_chat
    )
    for fmt in FORMATS:
        jsonl, parquet = tmp_path / f"{fmt}.jsonl", tmp_path / f"{fmt}.parquet"
        call_command("export_data", str(jsonl), project=["Mixed"], format=fmt)
        call_command("export_data", str(parquet), project=["Mixed"], format=fmt)
        if fmt == "kto":  # no check answered: no KTO rows, and still a schema
            assert jsonl.read_text() == "" and pq.read_table(parquet).num_rows == 0
            continue
        features = Features.from_dict(json.loads((tmp_path / f"{fmt}.features.json").read_text()))
        for ds in (load("json", jsonl, tmp_path / fmt, features=features), load("parquet", parquet, tmp_path / fmt)):
            assert all(isinstance(p, list) for p in ds["prompt"])
            assert ds[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
            if fmt == "pairwise":  # TRL's conversational preference rows: answers are assistant turns
                assert ds[0]["chosen"] == [{"role": "assistant", "content": "4"}]
                assert ds[1]["prompt"][0] == {"role": "system", "content": "Be kind."}
            if fmt == "sft":
                assert ds[0]["completion"] == [{"role": "assistant", "content": "4."}]


@pytest.fixture
def varied(demo_project, labeler, labeler2, tmp_path):
    """Labels of every kind the filters tell apart: ties, check answers, a partial ranking, an imported label,
    a lone label, an old one, and a project check marked mild."""
    t0, t1, t2 = demo_project.tasks.order_by("id")
    label(
        t0, labeler, [1, 2, 2, 3], [7, 5, 5, 2], {"toxic": [False, False, False, True], "expresses_opinion": [True] * 4}
    )
    label(t0, labeler2, [2, 1, 3, 4], [6, 7, 4, 1], {"toxic": [False, False, False, True]})
    label(t1, labeler, [4, 3, 2, 1], [1, 2, 3, 4], submitted_at=timezone.now() - timedelta(days=10))
    label(t1, labeler2, [4, 3, 1, 2], None, {"expresses_opinion": [False] * 4})  # mild checks only: no KTO row
    partial = label(t2, make_user("lab3", "labeler"), [1, 2, 3, 4])
    partial.ratings.filter(completion_id=t2.task_completions.get(position=3).completion_id).delete()
    label(t2, make_user("lab4", "labeler"), [1, 1, 1, 1], [4, 4, 4, 4], {"toxic": [False, True, False, False]})
    write_jsonl(
        tmp_path / "g.jsonl",
        [
            {
                "prompt": "Prompt number 0?",
                "completions": [f"Answer {j} to prompt 0" for j in range(4)],
                "ranks": [1, 2, 3, 4],
            }
        ],
    )
    import_file(project=demo_project, kind="preferences", path=tmp_path / "g.jsonl", source_name="public-set")
    check_add(project=demo_project, question="Cites its sources", problem_answer=False)
    Demonstration.objects.create(prompt=t0.prompt, text="An ideal answer.")
    return demo_project


FILTER_CASES = [
    {},
    {"labeler": "lab1"},
    {"labeler": "import:public-set"},
    {"include_imported": False},
    {"full_overlap": True},
    {"date_to": (timezone.now() - timedelta(days=5)).date()},
    {"date_from": timezone.now().date()},
    {"only_agreeing": True},
    {"only_agreeing": True, "min_agreement": 0.8},
    {"only_agreeing": True, "min_agreement": 0.81},
    {"only_agreeing": True, "min_agreement": 0.0},
    {"only_agreeing": True, "labeler": "lab2", "full_overlap": True},
    {"labeler": "nobody"},
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_sql_count_is_the_number_of_records_the_export_writes(varied, fmt, django_assert_num_queries):
    for case in FILTER_CASES:
        filters = LabelFilters(project_ids=[varied.pk], **case)
        expected = sum(1 for _ in export_records(fmt, resolve_chat(fmt, filters)))
        with django_assert_num_queries(1):
            assert export_count(fmt, filters) == expected, case
    assert export_count(fmt, LabelFilters(project_ids=[varied.pk])) > 0


def test_the_preview_reads_the_first_rows_only(researcher, labeler, django_assert_max_num_queries):
    project = project_create(name="Many", user=researcher, completions_per_task=2)
    for i in range(40):
        label(add_task(project, f"Q{i}", [f"a{i}", f"b{i}"]), labeler, [1, 2], [5, 3])
    filters = LabelFilters(project_ids=[project.pk])
    # chat check + count + check keys + one chunk of tasks (its cursor and four reads); the whole export takes 8 chunks
    with django_assert_max_num_queries(12):
        preview = export_preview("grouped", filters, limit=3)
    assert preview.count == 40 and preview.rows == list(islice(export_records("grouped", filters), 3))
    assert preview.columns[:4] == ["prompt", "completions", "ranks", "ratings"] and not preview.chat
    assert preview.features["ratings"] == [{"dtype": "int64", "_type": "Value"}]
    assert export_features("grouped", filters) == preview.features
