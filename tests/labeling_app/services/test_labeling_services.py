"""The labeler's queue and submissions: leases, overlap, validation messages, idempotent submit, skip."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckAnswer, Rating
from config.errors import ServiceError
from labeling_app.services.annotations import (
    AnnotationInvalid,
    annotation_save_draft,
    annotation_skip,
    annotation_submit,
)
from labeling_app.services.leases import assignment_renew, task_assign_next
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings


def expire(assignment: Assignment) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_assign_creates_lease_and_draft_with_random_order_recorded(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    assert a.expires_at > timezone.now() + timedelta(minutes=demo_project.lease_minutes - 1)
    annotation = Annotation.objects.get(task=a.task, labeler=labeler)
    assert annotation.status == "draft"
    assert sorted(annotation.shown_order) == sorted(a.task.task_completions.values_list("completion_id", flat=True))


def test_the_same_open_lease_comes_back_first(demo_project, labeler):
    first = task_assign_next(project=demo_project, labeler=labeler)
    again = task_assign_next(project=demo_project, labeler=labeler)
    assert again.pk == first.pk and again.task_id == first.task_id
    assert Assignment.objects.filter(labeler=labeler).count() == 1


def test_submit_stores_ratings_checks_ranks_and_releases_lease(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler, likert_by_position=[6, 6, 3, 1])
    result = annotation_submit(task=a.task, labeler=labeler, ratings=ratings, comment="fine")
    assert result.created
    ann = Annotation.objects.get(pk=result.annotation.pk)
    assert ann.status == "submitted" and ann.comment == "fine" and ann.submitted_at is not None
    stored = {r.completion_id: (r.likert, r.rank) for r in Rating.objects.filter(annotation=ann)}
    assert stored == {r["completion"]: (r["likert"], r["rank"]) for r in ratings}
    assert sorted(r for _, r in stored.values()) == [1, 1, 2, 3]  # a tie at the top
    assert CheckAnswer.objects.filter(rating__annotation=ann).count() == 4 * demo_project.checks.count()
    assert not Assignment.objects.filter(labeler=labeler).exists()
    a.task.refresh_from_db()
    assert a.task.submitted_count == 1


def test_submitting_twice_stores_one_annotation_and_answers_the_same(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    first = annotation_submit(task=a.task, labeler=labeler, ratings=ratings)
    second = annotation_submit(task=a.task, labeler=labeler, ratings=ratings)
    assert first.created and not second.created
    assert second.annotation.pk == first.annotation.pk
    assert Annotation.objects.filter(task=a.task, labeler=labeler).count() == 1
    assert Rating.objects.filter(annotation=first.annotation).count() == 4
    a.task.refresh_from_db()
    assert a.task.submitted_count == 1


def test_validation_errors_name_the_field_and_say_what_to_fix_and_the_draft_survives(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    first, second, third = ratings[0]["completion"], ratings[1]["completion"], ratings[2]["completion"]
    ratings[0]["likert"] = None
    ratings[1]["likert"] = 9
    del ratings[2]["checks"]["toxic"]
    ratings[2]["rank"] = 2  # ranks 1, 2, 2, 4: nothing ranked 3
    with pytest.raises(AnnotationInvalid) as exc:
        annotation_submit(task=a.task, labeler=labeler, ratings=ratings, comment="keep me")
    errors = exc.value.errors
    assert errors[f"ratings.{first}.likert"] == ["Rate Response A from 1 (terrible) to 7 (excellent)."]
    assert "whole number from 1 to 7" in errors[f"ratings.{second}.likert"][0]
    assert "Response C: answer yes or no to" in errors[f"ratings.{third}.checks.toxic"][0]
    assert "without gaps" in errors["ranking"][0] and "nothing is ranked 3" in errors["ranking"][0]
    ann = Annotation.objects.get(task=a.task, labeler=labeler)
    assert ann.status == "draft" and not Rating.objects.filter(annotation=ann).exists()
    assert ann.draft["comment"] == "keep me" and len(ann.draft["ratings"]) == 4
    a.task.refresh_from_db()
    assert a.task.submitted_count == 0


def test_ranking_must_cover_exactly_this_tasks_completions(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    missing = ratings.pop()
    other_task = demo_project.tasks.exclude(pk=a.task_id).first()
    foreign = other_task.task_completions.first().completion_id
    ratings.append({**missing, "completion": foreign})
    with pytest.raises(AnnotationInvalid) as exc:
        annotation_submit(task=a.task, labeler=labeler, ratings=ratings)
    assert "not one of this task's completions" in exc.value.errors["ratings"][0]
    assert f"ratings.{missing['completion']}.rank" in exc.value.errors


def test_inactive_checks_are_not_required(demo_project, labeler):
    demo_project.checks.exclude(key="toxic").update(active=False)
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    assert all(list(r["checks"]) == ["toxic"] for r in ratings)
    annotation_submit(task=a.task, labeler=labeler, ratings=ratings)
    assert CheckAnswer.objects.filter(rating__annotation__labeler=labeler).count() == 4


def test_never_more_leases_plus_labels_than_the_overlap(demo_project):
    """Three tasks with overlap 2: six labelers fill them; the seventh gets nothing."""
    users = [make_user(f"ov{i}", "labeler") for i in range(7)]
    got = [task_assign_next(project=demo_project, labeler=u) for u in users]
    assert all(g is not None for g in got[:6]) and got[6] is None
    per_task = {}
    for g in got[:6]:
        per_task[g.task_id] = per_task.get(g.task_id, 0) + 1
    assert sorted(per_task.values()) == [2, 2, 2]


def test_tasks_started_by_others_come_first(demo_project, labeler, labeler2):
    third = make_user("lab3", "labeler")
    newest = demo_project.tasks.order_by("-id").first()
    # Someone labeled the newest task; the next labelers are sent there before the older ones.
    Annotation.objects.create(task=newest, labeler=third, status="submitted", submitted_at=timezone.now())
    assert task_assign_next(project=demo_project, labeler=labeler).task_id == newest.pk
    # A live lease also counts as started: lab2 gets the oldest, lab4 joins lab2 rather than a fresh one.
    got2 = task_assign_next(project=demo_project, labeler=labeler2)
    oldest = demo_project.tasks.order_by("id").first()
    assert got2.task_id == oldest.pk
    assert task_assign_next(project=demo_project, labeler=make_user("lab4", "labeler")).task_id == oldest.pk


def test_expired_lease_returns_the_task_to_the_pool(demo_project):
    demo_project.tasks.update(overlap=1)
    users = [make_user(f"ex{i}", "labeler") for i in range(4)]
    leases = [task_assign_next(project=demo_project, labeler=u) for u in users[:3]]
    assert task_assign_next(project=demo_project, labeler=users[3]) is None
    expire(leases[0])
    again = task_assign_next(project=demo_project, labeler=users[3])
    assert again is not None and again.task_id == leases[0].task_id
    # The labeler who let the lease expire cannot take it back now that it is full...
    with pytest.raises(ServiceError, match="other labelers have finished"):
        assignment_renew(task=leases[0].task, labeler=users[0])
    # ...and asking for work does not hand them the same task again.
    assert task_assign_next(project=demo_project, labeler=users[0]) is None


def test_an_expired_lease_with_room_left_is_renewed_for_its_labeler(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    expire(a)
    renewed = assignment_renew(task=a.task, labeler=labeler)
    assert renewed.expires_at > timezone.now()
    assert task_assign_next(project=demo_project, labeler=labeler).task_id == a.task_id


def test_never_the_same_task_twice_after_submit_or_skip(demo_project, labeler):
    seen = []
    while (a := task_assign_next(project=demo_project, labeler=labeler)) is not None:
        seen.append(a.task_id)
        if len(seen) % 2:
            annotation_submit(task=a.task, labeler=labeler, ratings=valid_ratings(a.task, labeler))
        else:
            annotation_skip(task=a.task, labeler=labeler, reason="not my topic")
    assert sorted(seen) == sorted(demo_project.tasks.values_list("id", flat=True))


def test_skip_needs_a_reason_and_returns_the_task_to_others(demo_project, labeler, labeler2):
    demo_project.tasks.update(overlap=1)
    a = task_assign_next(project=demo_project, labeler=labeler)
    with pytest.raises(ServiceError) as exc:
        annotation_skip(task=a.task, labeler=labeler, reason="  ")
    assert "Say why you skip" in exc.value.errors["reason"][0]
    ann = annotation_skip(task=a.task, labeler=labeler, reason="I don't know this topic")
    assert ann.status == "skipped" and ann.skip_reason == "I don't know this topic"
    assert annotation_skip(task=a.task, labeler=labeler, reason="again").skip_reason == "I don't know this topic"
    assert task_assign_next(project=demo_project, labeler=labeler2).task_id == a.task_id
    with pytest.raises(ServiceError, match="skipped this task"):
        annotation_submit(task=a.task, labeler=labeler, ratings=[])


def test_draft_save_and_guards(demo_project, labeler, labeler2):
    a = task_assign_next(project=demo_project, labeler=labeler)
    annotation_save_draft(task=a.task, labeler=labeler, draft={"comment": "half way", "ratings": []})
    assert Annotation.objects.get(task=a.task, labeler=labeler).draft["comment"] == "half way"
    with pytest.raises(ServiceError, match="have not been given this task"):
        annotation_save_draft(task=a.task, labeler=labeler2, draft={})
    with pytest.raises(ServiceError):
        annotation_save_draft(task=a.task, labeler=labeler, draft={"comment": "x" * 70_000})
    annotation_submit(task=a.task, labeler=labeler, ratings=valid_ratings(a.task, labeler))
    with pytest.raises(ServiceError, match="already submitted"):
        annotation_save_draft(task=a.task, labeler=labeler, draft={})


def test_assignment_query_count_does_not_grow_with_the_project(demo_project, labeler):
    """A fixed number of statements per hand-out (the plans at 100,000 tasks are checked in the benchmark)."""
    with CaptureQueriesContext(connection) as ctx:
        task_assign_next(project=demo_project, labeler=labeler)
    assert len(ctx.captured_queries) <= 12
