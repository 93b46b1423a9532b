"""A label a researcher rejected never reaches an export, an export count, or a training job's data."""

from __future__ import annotations

import pytest

from config.errors import ServiceError
from labeling_app.selectors.export_preview import export_count
from labeling_app.selectors.exports import export_records
from labeling_app.selectors.labels import LabelFilters, rejected_left_out
from labeling_app.selectors.training_data import (
    has_rankings,
    rankings_for_training,
    ranked_completion_ids,
    task_completion_ids,
)
from labeling_app.services.review import annotation_review
from rlhf_worker.jobs import reward
from tests.labeling_app.researcher_fixtures import label

LABEL_FORMATS = ("pairwise", "grouped", "kto")
SERIOUS = {"toxic": [False, False, False, True]}


@pytest.fixture
def reviewed(demo_project, labeler, labeler2, researcher):
    """Task 0 labeled by lab1 and lab2 (lab2's rejected), task 1 by lab1 only."""
    t0, t1, _ = demo_project.tasks.order_by("id")
    kept = label(t0, labeler, [1, 2, 3, 4], [7, 5, 3, 1], SERIOUS)
    rejected = label(t0, labeler2, [1, 2, 4, 3], [7, 5, 1, 3], SERIOUS)
    other = label(t1, labeler, [4, 3, 2, 1], [1, 2, 3, 4], SERIOUS)
    annotation_review(annotation=rejected, reviewer=researcher, decision="reject", note="C and D swapped")
    return demo_project, kept, rejected, other


@pytest.mark.parametrize("fmt", LABEL_FORMATS)
def test_a_rejected_label_is_in_no_export_format_and_no_count(reviewed, fmt):
    project, kept, rejected, other = reviewed
    filters = LabelFilters(project_ids=[project.pk])
    records = list(export_records(fmt, filters))
    ids = {r["annotation_id"] for r in records}
    assert rejected.pk not in ids and ids == {kept.pk, other.pk}
    assert export_count(fmt, filters) == len(records)
    assert rejected_left_out(filters) == 1


def test_a_rejected_label_is_not_trained_on(reviewed):
    project, kept, rejected, other = reviewed
    rows = list(rankings_for_training(project_ids=[project.pk]))
    assert sorted(r["annotation_id"] for r in rows) == sorted([kept.pk, other.pk])
    # A run's data snapshot names its labels: re-reading it leaves out one rejected since.
    assert [
        r["annotation_id"]
        for r in rankings_for_training(project_ids=[project.pk], annotation_ids=[rejected.pk, kept.pk])
    ] == [kept.pk]
    _, used = reward.rankings_from_rows(rankings_for_training(project_ids=[project.pk]))
    assert rejected.pk not in used
    # Nor is it in the labels a score job measures the reward model's uncertainty on.
    t0, t1, _ = project.tasks.order_by("id")
    by_task = task_completion_ids(project_ids=[project.pk])
    assert list(by_task) == [t.pk for t in project.tasks.order_by("id")]
    assert list(ranked_completion_ids(project_ids=[project.pk])) == [
        (by_task[t0.pk], [1, 2, 3, 4]),
        (by_task[t1.pk], [4, 3, 2, 1]),
    ]


def test_a_rejected_label_is_no_one_to_agree_with(reviewed):
    """only_agreeing compares a label with the task's other usable labels: lab1's on task 0 had only lab2's."""
    project, kept, rejected, other = reviewed
    filters = LabelFilters(project_ids=[project.pk], only_agreeing=True, min_agreement=0.5)
    assert list(export_records("grouped", filters)) == []
    assert export_count("grouped", filters) == 0


def test_a_reward_job_with_only_rejected_labels_is_refused_at_start(demo_project, labeler, researcher):
    only = label(demo_project.tasks.first(), labeler, [1, 2, 3, 4])
    cfg = reward.Config(project_ids=[demo_project.pk])
    assert has_rankings(project_ids=[demo_project.pk])
    annotation_review(annotation=only, reviewer=researcher, decision="reject", note="spam")
    assert not has_rankings(project_ids=[demo_project.pk])
    with pytest.raises(ServiceError, match="no submitted rankings"):
        reward.check(cfg)


def test_accepting_it_again_brings_it_back(reviewed, researcher):
    project, kept, rejected, other = reviewed
    annotation_review(annotation=rejected, reviewer=researcher, decision="accept")
    filters = LabelFilters(project_ids=[project.pk])
    assert rejected.pk in {r["annotation_id"] for r in export_records("grouped", filters)}
    assert rejected_left_out(filters) == 0
