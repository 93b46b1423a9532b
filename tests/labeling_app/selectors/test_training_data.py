"""The one door from training jobs to labels: one date reading, one labeler name, the rows each job reads."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Completion, Demonstration, Prompt
from labeling_app.selectors.exports import export_lines
from labeling_app.selectors.labels import DateRange, LabelFilters, parse_day
from labeling_app.selectors.training_data import (
    completion_count,
    completions_to_score,
    demonstrations_for_training,
    prompts_for_training,
    rankings_for_training,
)
from labeling_app.services.imports import import_file
from labeling_app.services.projects import project_create
from rlhf_worker.jobs.reward import rankings_from_rows
from tests.labeling_app.researcher_fixtures import label, write_jsonl

UTC = dt.UTC


def at(day: str, clock: dt.time) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), clock, tzinfo=UTC)


@pytest.mark.parametrize("text", ["31/01/2026", "2026-1-5", "20260131", "yesterday", "2026-02-30"])
def test_a_day_that_is_not_yyyy_mm_dd_is_a_field_error(text):
    with pytest.raises(ServiceError) as err:
        parse_day(text, field="date_to")
    assert err.value.field == "date_to" and "YYYY-MM-DD" in err.value.message


def test_days_dates_and_empty_bounds_read_one_way():
    assert parse_day("2026-01-31", field="date_from") == dt.date(2026, 1, 31)
    assert parse_day(" 2026-01-31 ", field="date_from") == dt.date(2026, 1, 31)
    assert parse_day("", field="date_from") is None and parse_day(None, field="date_from") is None
    moment = at("2026-01-31", dt.time(12))
    assert parse_day(moment, field="date_from") is moment
    assert DateRange.parse("2026-01-31", "2026-01-31") == DateRange(dt.date(2026, 1, 31), dt.date(2026, 1, 31))
    with pytest.raises(ServiceError) as err:
        DateRange.parse("2026-02-01", "2026-01-31")
    assert err.value.field == "date_to"
    with pytest.raises(ServiceError) as err:
        DateRange.parse("soon", "")
    assert err.value.field == "date_from"


@pytest.fixture
def edge_labels(demo_project, labeler):
    """Three labels of the demo project: at the first and the last instant of 2026-01-31 (UTC), and just after."""
    t0, t1, t2 = demo_project.tasks.order_by("id")
    return [
        label(t0, labeler, [1, 2, 3, 4], submitted_at=at("2026-01-31", dt.time.min)).pk,
        label(t1, labeler, [1, 2, 3, 4], submitted_at=at("2026-01-31", dt.time.max)).pk,
        label(t2, labeler, [1, 2, 3, 4], submitted_at=at("2026-02-01", dt.time.min)).pk,
    ]


def test_a_day_range_is_inclusive_for_training_and_exports_alike(demo_project, edge_labels):
    first, last, next_day = edge_labels

    def trained(**dates):
        return [r["annotation_id"] for r in rankings_for_training(project_ids=[demo_project.pk], **dates)]

    def exported(**dates):
        lines = export_lines("grouped", LabelFilters(project_ids=[demo_project.pk], **dates))
        return [json.loads(line)["annotation_id"] for line in lines]

    for read in (trained, exported):
        assert read(date_from="2026-01-31", date_to="2026-01-31") == [first, last]
        assert read(date_from="2026-02-01") == [next_day]
        assert read(date_to="2026-01-30") == []
        assert read(date_from=dt.date(2026, 1, 31), date_to="") == [first, last, next_day]
    # a datetime bound is exact, not widened to its day
    assert trained(date_to=at("2026-01-31", dt.time(12))) == [first]


def test_the_export_page_and_command_refuse_a_bad_day_naming_it(
    demo_project, edge_labels, client, researcher, tmp_path
):
    client.force_login(researcher)
    url = f"/projects/{demo_project.pk}/export/download/"
    response = client.get(url, {"format": "grouped", "date_from": "31/01/2026"})
    assert response.status_code == 400 and "YYYY-MM-DD" in response.content.decode()
    response = client.get(url, {"format": "grouped", "date_from": "2026-01-31", "date_to": "2026-01-31"})
    assert response.status_code == 200
    assert [
        json.loads(line)["annotation_id"] for line in b"".join(response.streaming_content).decode().splitlines()
    ] == edge_labels[:2]
    with pytest.raises(CommandError, match="--to must be a day as YYYY-MM-DD"):
        call_command("export_data", str(tmp_path / "out.jsonl"), project=[demo_project.name], date_to="Jan 31")
    call_command(
        "export_data",
        str(tmp_path / "out.jsonl"),
        project=[demo_project.name],
        format="grouped",
        date_from="2026-02-01",
    )
    assert [
        json.loads(line)["annotation_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ] == edge_labels[2:]


def test_reward_training_and_exports_name_labelers_the_same_way(demo_project, labeler, labeler2, tmp_path):
    t0, t1, _ = demo_project.tasks.order_by("id")
    label(t0, labeler, [1, 2, 3, 4])
    label(t0, labeler2, [2, 1, 3, 4])
    label(t1, labeler, [4, 3, 2, 1])
    write_jsonl(tmp_path / "g.jsonl", [{"prompt": "q", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 3, 3]}])
    import_file(project=demo_project, kind="preferences", path=tmp_path / "g.jsonl", source_name="public-set")

    rankings, annotation_ids = rankings_from_rows(rankings_for_training(project_ids=[demo_project.pk]))
    exported = [json.loads(line) for line in export_lines("grouped", LabelFilters(project_ids=[demo_project.pk]))]
    by_id = {row["annotation_id"]: row["labeler"] for row in exported}
    assert [r.labeler for r in rankings] == [by_id[i] for i in annotation_ids]
    assert sorted(by_id.values()) == ["import:public-set", "lab1", "lab1", "lab2"]
    assert annotation_ids == sorted(annotation_ids), "label order: what a resumed reward run replays"
    # the name is also what the labeler filter takes, for an import source as for a person
    only_import = list(
        export_lines("grouped", LabelFilters(project_ids=[demo_project.pk], labeler="import:public-set"))
    )
    assert [json.loads(line)["labeler"] for line in only_import] == ["import:public-set"]
    again = rankings_for_training(project_ids=[demo_project.pk], annotation_ids=annotation_ids[1:3])
    assert [r["annotation_id"] for r in again] == annotation_ids[1:3]


def test_prompts_demonstrations_and_completions_for_the_policy_and_score_jobs(demo_project, researcher):
    other = project_create(name="Other", user=researcher, completions_per_task=2)
    chat = Prompt.objects.create(project=other, text="Hi", messages=[{"role": "user", "content": "Hi"}])
    old = Prompt.objects.create(project=other, text="Old one")
    Prompt.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=30))
    Completion.objects.create(prompt=chat, text="Hello!", source=Completion.Source.IMPORTED)
    Demonstration.objects.create(prompt=chat, text="Hello there.")
    Demonstration.objects.create(prompt=demo_project.prompts.first(), text="An answer.")

    rows = list(prompts_for_training(project_ids=[other.pk]))
    assert rows == [
        {
            "prompt_id": chat.pk,
            "project_id": other.pk,
            "prompt": chat.messages,
            "text": "Hi",
            "completions_per_task": 2,
        },
        {
            "prompt_id": old.pk,
            "project_id": other.pk,
            "prompt": "Old one",
            "text": "Old one",
            "completions_per_task": 2,
        },
    ]
    recent = (timezone.now() - dt.timedelta(days=1)).date().isoformat()
    assert [r["prompt_id"] for r in prompts_for_training(project_ids=[other.pk], date_from=recent)] == [chat.pk]
    assert [r["prompt_id"] for r in prompts_for_training(prompt_ids=[old.pk])] == [old.pk]
    assert list(prompts_for_training()) == [], "no selection selects nothing"

    demos = list(demonstrations_for_training(project_ids=[], prompt_ids=[chat.pk]))
    assert [(d["prompt"], d["completion"]) for d in demos] == [(chat.messages, "Hello there.")]
    assert len(list(demonstrations_for_training(project_ids=[demo_project.pk, other.pk]))) == 2

    scored = list(completions_to_score(project_ids=[other.pk]))
    assert scored == [
        {"completion_id": Completion.objects.get(prompt=chat).pk, "prompt": chat.messages, "text": "Hello!"}
    ]
    assert completion_count(project_ids=[demo_project.pk, other.pk]) == 12 + 1
