"""Review of labels: accept / reject with a note, the labeler's revision (history kept, counter untouched, same
validation as a submission), and the latest version being what agreement reads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, AnnotationVersion, CheckAnswer, Rating, RankingTask
from labeling_app.selectors.quality import agreement_for_project
from labeling_app.services.annotations import AnnotationInvalid, annotation_revise, annotation_submit, revision_refusal
from labeling_app.services.leases import task_assign_next
from labeling_app.services.review import annotation_review
from tests.labeling_app.labeling_helpers import valid_ratings


def submitted(project, labeler, *, likert_by_position=None, comment="first") -> Annotation:
    task = task_assign_next(project=project, labeler=labeler).task
    annotation_submit(
        task=task,
        labeler=labeler,
        ratings=valid_ratings(task, labeler, likert_by_position=likert_by_position),
        comment=comment,
    )
    return Annotation.objects.get(task=task, labeler=labeler)


# --- accept / reject ---------------------------------------------------------------------------


def test_reject_needs_a_note_and_records_reviewer_time_and_note(demo_project, labeler, researcher):
    annotation = submitted(demo_project, labeler)
    with pytest.raises(ServiceError) as err:
        annotation_review(annotation=annotation, reviewer=researcher, decision="reject", note="   ")
    assert err.value.field == "note" and "note" in err.value.message
    assert Annotation.objects.get(pk=annotation.pk).review_state == "pending"

    before = timezone.now()
    annotation_review(
        annotation=annotation, reviewer=researcher, decision="reject", note=" Ranked B above A by mistake? "
    )
    stored = Annotation.objects.get(pk=annotation.pk)
    assert (stored.review_state, stored.review_note, stored.reviewed_by_id) == (
        "rejected",
        "Ranked B above A by mistake?",
        researcher.pk,
    )
    assert stored.reviewed_at >= before


def test_the_latest_decision_counts(demo_project, labeler, researcher, admin_user):
    annotation = submitted(demo_project, labeler)
    annotation_review(annotation=annotation, reviewer=researcher, decision="reject", note="wrong")
    annotation_review(annotation=annotation, reviewer=admin_user, decision="accept")
    stored = Annotation.objects.get(pk=annotation.pk)
    assert (stored.review_state, stored.review_note, stored.reviewed_by_id) == ("accepted", "", admin_user.pk)


def test_unknown_decision_and_unsubmitted_label_are_refused(demo_project, labeler, researcher):
    draft = Annotation.objects.get(task=task_assign_next(project=demo_project, labeler=labeler).task, labeler=labeler)
    with pytest.raises(ServiceError, match="accept or reject"):
        annotation_review(annotation=draft, reviewer=researcher, decision="maybe")
    with pytest.raises(ServiceError, match="Only a submitted label") as err:
        annotation_review(annotation=draft, reviewer=researcher, decision="accept")
    assert err.value.status == 409


def test_a_decision_on_a_version_the_reviewer_did_not_see_is_refused(demo_project, labeler, researcher):
    annotation = submitted(demo_project, labeler)
    annotation_revise(
        task=annotation.task, labeler=labeler, ratings=valid_ratings(annotation.task, labeler), comment="v2"
    )
    with pytest.raises(ServiceError, match="revised this label after you opened") as err:
        annotation_review(annotation=annotation, reviewer=researcher, decision="accept", seen_revision=0)
    assert err.value.status == 409
    assert (
        annotation_review(annotation=annotation, reviewer=researcher, decision="accept", seen_revision=1).review_state
        == "accepted"
    )


def test_the_database_refuses_a_rejection_without_a_note(demo_project, labeler):
    annotation = submitted(demo_project, labeler)
    with pytest.raises(IntegrityError, match="annotation_rejected_has_note"), transaction.atomic():
        Annotation.objects.filter(pk=annotation.pk).update(
            review_state="rejected", review_note="", reviewed_at=timezone.now()
        )


# --- revision ----------------------------------------------------------------------------------


def test_revision_replaces_the_label_keeps_the_earlier_version_and_leaves_the_counter(
    demo_project, labeler, researcher
):
    annotation = submitted(demo_project, labeler, likert_by_position=[7, 5, 3, 1], comment="first")
    task = annotation.task
    earlier = timezone.now() - timedelta(minutes=10)  # submitted 10 minutes ago after 90 s of work
    Annotation.objects.filter(pk=annotation.pk).update(started_at=earlier - timedelta(seconds=90), submitted_at=earlier)
    annotation_review(annotation=annotation, reviewer=researcher, decision="reject", note="C is better than B")
    old_ratings = {r.completion_id: (r.likert, r.rank) for r in Rating.objects.filter(annotation=annotation)}
    old_checks = CheckAnswer.objects.filter(rating__annotation=annotation).count()
    count_before = RankingTask.objects.get(pk=task.pk).submitted_count

    new = valid_ratings(task, labeler, likert_by_position=[7, 3, 5, 1])
    for row in new:
        row["checks"] = {key: True for key in row["checks"]}
    opened = timezone.now() - timedelta(seconds=30)
    revised = annotation_revise(task=task, labeler=labeler, ratings=new, comment="second", opened_at=opened)

    stored = Annotation.objects.get(pk=annotation.pk)
    assert stored.status == "submitted" and stored.comment == "second" and stored.revision_count == 1
    assert (stored.review_state, stored.review_note, stored.reviewed_by_id, stored.reviewed_at) == (
        "pending",
        "",
        None,
        None,
    )
    assert stored.started_at == opened and stored.submitted_at > opened  # the revision's own time
    assert {r.completion_id: (r.likert, r.rank) for r in Rating.objects.filter(annotation=stored)} == {
        r["completion"]: (r["likert"], r["rank"]) for r in new
    }
    assert set(CheckAnswer.objects.filter(rating__annotation=stored).values_list("value", flat=True)) == {True}
    assert RankingTask.objects.get(pk=task.pk).submitted_count == count_before == 1
    assert revised.pk == annotation.pk

    version = AnnotationVersion.objects.get(annotation=annotation)
    assert version.version == 1 and version.comment == "first"
    assert {r["completion"]: (r["likert"], r["rank"]) for r in version.ratings} == old_ratings
    assert [r["completion"] for r in version.ratings] == annotation.shown_order  # in the labeler's shown order
    assert sum(len(r["checks"]) for r in version.ratings) == old_checks
    assert (version.review_state, version.review_note, version.reviewed_by_id) == (
        "rejected",
        "C is better than B",
        researcher.pk,
    )
    assert version.seconds_spent == pytest.approx(90) and version.submitted_at == earlier


def test_the_revision_start_is_clamped_between_the_earlier_submission_and_now(demo_project, labeler):
    annotation = submitted(demo_project, labeler)
    long_ago = annotation.submitted_at - timedelta(days=3)
    annotation_revise(
        task=annotation.task, labeler=labeler, ratings=valid_ratings(annotation.task, labeler), opened_at=long_ago
    )
    assert Annotation.objects.get(pk=annotation.pk).started_at == annotation.submitted_at


def test_a_revision_is_validated_like_a_submission_and_an_invalid_one_changes_nothing(demo_project, labeler):
    annotation = submitted(demo_project, labeler)
    bad = valid_ratings(annotation.task, labeler)
    bad[0]["likert"] = 9
    del bad[1]["rank"]
    with pytest.raises(AnnotationInvalid) as err:
        annotation_revise(task=annotation.task, labeler=labeler, ratings=bad, comment="x")
    assert "the rating must be a whole number from 1 to 7" in str(err.value)
    assert "in the ranking" in str(err.value)
    stored = Annotation.objects.get(pk=annotation.pk)
    assert stored.comment == "first" and stored.revision_count == 0
    assert not AnnotationVersion.objects.exists()


def test_only_an_open_label_of_ones_own_can_be_revised(demo_project, labeler, labeler2, researcher):
    annotation = submitted(demo_project, labeler)
    task = annotation.task
    with pytest.raises(ServiceError, match="not been given this task"):
        annotation_revise(task=task, labeler=labeler2, ratings=valid_ratings(task, labeler))
    annotation_review(annotation=annotation, reviewer=researcher, decision="accept")
    assert "accepted" in revision_refusal(Annotation.objects.get(pk=annotation.pk))
    with pytest.raises(ServiceError, match="accepted this label") as err:
        annotation_revise(task=task, labeler=labeler, ratings=valid_ratings(task, labeler))
    assert err.value.status == 409
    draft = Annotation.objects.get(task=task_assign_next(project=demo_project, labeler=labeler).task, labeler=labeler)
    with pytest.raises(ServiceError, match="only a submitted label can be revised"):
        annotation_revise(task=draft.task, labeler=labeler, ratings=valid_ratings(draft.task, labeler))


def test_a_revision_changes_the_agreement_figure(demo_project, labeler, labeler2):
    first = submitted(demo_project, labeler, likert_by_position=[7, 5, 3, 1])
    task = first.task
    # The second labeler gets the same task (overlap 2) and ranks the completions as the first did.
    assert task_assign_next(project=demo_project, labeler=labeler2).task_id == task.pk
    ranks_of_first = {r.completion_id: r.rank for r in Rating.objects.filter(annotation=first)}
    same = valid_ratings(task, labeler2)
    for row in same:
        row["rank"] = ranks_of_first[row["completion"]]
        row["likert"] = 8 - row["rank"] * 2 + 1 if row["rank"] < 4 else 1
    annotation_submit(task=task, labeler=labeler2, ratings=same)
    assert agreement_for_project(demo_project)["ranking"]["pair_agreement"] == pytest.approx(1.0)

    reversed_ranking = [
        dict(row, rank=5 - ranks_of_first[row["completion"]], likert=ranks_of_first[row["completion"]])
        for row in valid_ratings(task, labeler)
    ]
    annotation_revise(task=task, labeler=labeler, ratings=reversed_ranking)
    assert agreement_for_project(demo_project)["ranking"]["pair_agreement"] == pytest.approx(0.0)


def test_a_label_of_an_archived_task_cannot_be_revised(demo_project, labeler):
    from labeling_app.services.task_archive import tasks_archive, tasks_restore

    annotation = submitted(demo_project, labeler)
    task = annotation.task
    tasks_archive(project=demo_project, tasks=RankingTask.objects.filter(pk=task.pk))
    assert "archived" in revision_refusal(Annotation.objects.get(pk=annotation.pk))
    with pytest.raises(ServiceError, match="archived") as err:
        annotation_revise(task=task, labeler=labeler, ratings=valid_ratings(task, labeler), comment="late")
    assert err.value.status == 409 and Annotation.objects.get(pk=annotation.pk).comment == "first"
    tasks_restore(project=demo_project, tasks=RankingTask.objects.filter(pk=task.pk))
    assert revision_refusal(Annotation.objects.get(pk=annotation.pk)) is None
