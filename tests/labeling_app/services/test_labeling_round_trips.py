"""Round trips of the labeler's hand-out and submission, and what keeps them few correct: the checks cache and the guarded store."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from config.errors import NON_FIELD
from labeling_app.models import Annotation, Assignment, CheckAnswer, CheckQuestion, Rating, TaskCompletion
from labeling_app.roles import user_roles
from labeling_app.selectors import labeling as sel
from labeling_app.services.annotations import AnnotationInvalid, annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import check_add
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings


@contextmanager
def database_round_trips():
    """What the database waits on in the block: each statement Django sends, plus the BEGIN and COMMIT
    that psycopg sends by itself for each transaction the block opens. Needs autocommit (a
    django_db(transaction=True) test), as in production, where requests run outside transactions."""
    assert connection.get_autocommit(), "count round trips in a django_db(transaction=True) test"
    autocommit_per_statement: list[bool] = []

    def record(execute, sql, params, many, context):
        autocommit_per_statement.append(context["connection"].get_autocommit())
        return execute(sql, params, many, context)

    trips = SimpleNamespace(count=0, statements=0, transactions=0)
    with connection.execute_wrapper(record):
        yield trips
    seen = autocommit_per_statement
    trips.statements = len(seen)
    trips.transactions = sum(1 for i, auto in enumerate(seen) if not auto and (i == 0 or seen[i - 1]))
    trips.count = trips.statements + 2 * trips.transactions


def expire(assignment: Assignment) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


# --- Round trips (autocommit, as a request runs) ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_hand_out_is_one_round_trip(demo_project, labeler, django_assert_num_queries):
    with django_assert_num_queries(1), database_round_trips() as fresh:
        first = task_assign_next(project=demo_project, labeler=labeler)
    with django_assert_num_queries(1), database_round_trips() as again:
        second = task_assign_next(project=demo_project, labeler=labeler)  # the open lease comes back
    assert (fresh.count, again.count) == (1, 1)
    assert second.task_id == first.task_id
    # What the labeler needs to start came in the same call.
    ann = Annotation.objects.get(task_id=first.task_id, labeler=labeler)
    assert [cid for cid, _ in first.shown_completions] == ann.shown_order
    assert first.task.prompt.text.startswith("Prompt number")


@pytest.mark.django_db(transaction=True)
def test_nothing_left_is_one_round_trip_too(demo_project, django_assert_num_queries):
    demo_project.tasks.update(overlap=1)
    for i in range(3):
        task_assign_next(project=demo_project, labeler=make_user(f"full{i}", "labeler"))
    late = make_user("late", "labeler")
    with django_assert_num_queries(1), database_round_trips() as trips:
        assert task_assign_next(project=demo_project, labeler=late) is None
    assert trips.count == 1


@pytest.mark.django_db(transaction=True)
def test_a_valid_submission_is_one_round_trip_after_the_task_read(demo_project, labeler, django_assert_num_queries):
    a = task_assign_next(project=demo_project, labeler=labeler)
    sel.active_checks(demo_project, version=a.checks_version)  # the request before (the hand-out) warmed the cache
    user_roles(labeler)  # a request reads the roles with its token
    ratings = valid_ratings(a.task, labeler)
    with django_assert_num_queries(1), database_round_trips() as read:
        task = sel.task_for_labeler(labeler, a.task_id)
    with django_assert_num_queries(1), database_round_trips() as submit:
        result = annotation_submit(task=task, labeler=labeler, ratings=ratings, comment="ok")
    assert (read.count, submit.count) == (1, 1)
    assert result.created and result.today_count == 1
    assert Rating.objects.filter(annotation=result.annotation).count() == 4
    assert CheckAnswer.objects.filter(rating__annotation=result.annotation).count() == 4 * demo_project.checks.count()
    assert not Assignment.objects.filter(labeler=labeler).exists()
    a.task.refresh_from_db()
    assert a.task.submitted_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_submission_reads_the_annotation_itself_when_the_task_does_not_carry_it(
    demo_project, labeler, django_assert_num_queries
):
    a = task_assign_next(project=demo_project, labeler=labeler)
    sel.active_checks(demo_project, version=a.checks_version)
    ratings = valid_ratings(a.task, labeler)
    with django_assert_num_queries(2), database_round_trips() as trips:
        assert annotation_submit(task=a.task, labeler=labeler, ratings=ratings).created
    assert trips.transactions == 0


# --- The checks cache ---------------------------------------------------------------------------


def test_the_hand_out_reads_the_checks_version_the_cache_keeps(demo_project, labeler, django_assert_num_queries):
    version, checks = sel.project_checks(demo_project.pk, fresh=True)
    a = task_assign_next(project=demo_project, labeler=labeler)
    assert a.checks_version == version  # SQL and Python write the version alike
    with django_assert_num_queries(0):
        cached = sel.active_checks(demo_project, version=a.checks_version)
    assert (
        [c.key for c in cached]
        == [c.key for c in checks]
        == list(demo_project.checks.filter(active=True).values_list("key", flat=True))
    )


@pytest.mark.parametrize("edit", ["reword", "deactivate", "add", "delete"])
def test_any_write_to_a_projects_checks_changes_the_version(demo_project, labeler, labeler2, edit):
    """Whoever writes (a service, the admin site, a bare QuerySet.update), the next hand-out's version says so."""
    before = task_assign_next(project=demo_project, labeler=labeler)
    sel.active_checks(demo_project, version=before.checks_version)
    toxic = demo_project.checks.filter(key="toxic")
    if edit == "reword":
        toxic.update(question="Rude or hateful?")
    elif edit == "deactivate":
        toxic.update(active=False)
    elif edit == "add":
        check_add(project=demo_project, question="Too long?")
    else:
        toxic.delete()
    after = task_assign_next(project=demo_project, labeler=labeler2)
    assert after.checks_version != before.checks_version
    checks = {c.key: c.question for c in sel.active_checks(demo_project, version=after.checks_version)}
    assert checks == dict(demo_project.checks.filter(active=True).values_list("key", "question"))


def test_a_check_deactivated_after_the_cache_was_filled_is_not_required(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    sel.active_checks(demo_project, version=a.checks_version)
    demo_project.checks.filter(key="toxic").update(active=False)  # no signal, no service: only the data changed
    ratings = valid_ratings(a.task, labeler)
    assert all("toxic" not in r["checks"] for r in ratings)
    result = annotation_submit(task=sel.task_for_labeler(labeler, a.task_id), labeler=labeler, ratings=ratings)
    assert result.created
    assert CheckAnswer.objects.filter(rating__annotation=result.annotation).count() == 4 * (
        demo_project.checks.count() - 1
    )


def test_a_check_added_after_the_cache_was_filled_is_required(demo_project, labeler):
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    sel.active_checks(demo_project, version=a.checks_version)
    new = CheckQuestion.objects.create(project=demo_project, key="too_long", question="Too long?", position=99)
    with pytest.raises(AnnotationInvalid) as exc:
        annotation_submit(task=sel.task_for_labeler(labeler, a.task_id), labeler=labeler, ratings=ratings, comment="c")
    first = ratings[0]["completion"]
    assert exc.value.errors[f"ratings.{first}.checks.{new.key}"] == ["Response A: answer yes or no to “Too long?”."]
    ann = Annotation.objects.get(task=a.task, labeler=labeler)
    assert ann.status == "draft" and ann.draft["comment"] == "c"
    assert not Rating.objects.filter(annotation=ann).exists()


# --- The store checks what was validated against -----------------------------------------------


def test_a_completion_removed_after_the_hand_out_is_refused_by_name(demo_project, labeler):
    """Validation uses the completions recorded on the annotation; the store verifies they are still the task's."""
    a = task_assign_next(project=demo_project, labeler=labeler)
    ratings = valid_ratings(a.task, labeler)
    removed = ratings[-1]["completion"]
    TaskCompletion.objects.filter(task=a.task, completion_id=removed).delete()
    with pytest.raises(AnnotationInvalid) as exc:
        annotation_submit(task=sel.task_for_labeler(labeler, a.task_id), labeler=labeler, ratings=ratings)
    assert f"{removed} is not one of this task's completions" in exc.value.errors["ratings"][0]
    assert not Rating.objects.filter(annotation__task=a.task).exists()


def test_an_expired_lease_on_a_task_filled_meanwhile_keeps_the_work_as_a_draft(demo_project, labeler, labeler2):
    demo_project.tasks.update(overlap=1)
    mine = task_assign_next(project=demo_project, labeler=labeler)
    expire(mine)
    theirs = task_assign_next(project=demo_project, labeler=labeler2)
    assert theirs.task_id == mine.task_id
    annotation_submit(task=theirs.task, labeler=labeler2, ratings=valid_ratings(theirs.task, labeler2))
    with pytest.raises(AnnotationInvalid) as exc:
        annotation_submit(
            task=sel.task_for_labeler(labeler, mine.task_id),
            labeler=labeler,
            ratings=valid_ratings(mine.task, labeler),
            comment="late",
        )
    assert "already has all the labels it needs" in exc.value.errors[NON_FIELD][0]
    ann = Annotation.objects.get(task=mine.task, labeler=labeler)
    assert ann.status == "draft" and ann.draft["comment"] == "late"
    mine.task.refresh_from_db()
    assert mine.task.submitted_count == 1
