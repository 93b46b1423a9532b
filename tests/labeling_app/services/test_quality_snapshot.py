"""The quality page reads a stored snapshot of the project's aggregates: equal to computing them, stale (and
refreshed in the background) after every change of a label, one refresh at a time, computed per request while
Redis is down, and recomputed on the researcher's "Refresh now"."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client

from labeling_app.models import Annotation
from labeling_app.selectors.quality import quality_aggregates
from labeling_app.services.annotations import annotation_revise, annotation_submit
from labeling_app.services.import_undo import import_job_undo
from labeling_app.services.imports import import_job_create
from labeling_app.services.leases import task_assign_next
from labeling_app.services.quality_snapshot import (
    _lock_key,
    quality_snapshot_for_page,
    quality_snapshot_refresh_enqueue,
    quality_watermark,
)
from labeling_app.services.review import annotation_review
from labeling_app.services.task_archive import tasks_archive
from labeling_app.tasks import quality_snapshot_refresh_task
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings
from tests.labeling_app.researcher_fixtures import label

pytestmark = pytest.mark.django_db


@pytest.fixture
def labeled(demo_project, labeler, labeler2):
    t0, t1, _ = demo_project.tasks.order_by("id")
    label(t0, labeler, [1, 2, 3, 4], [7, 5, 3, 1], {"toxic": [False, False, True, True]})
    label(t0, labeler2, [1, 3, 2, 4], [6, 4, 5, 1], {"toxic": [False, False, False, True]})
    label(t1, labeler, [2, 1, 4, 3], [5, 6, 2, 3], {"toxic": [False, False, False, False]})
    return demo_project


@pytest.fixture
def researcher_client(researcher):
    client = Client()
    client.force_login(researcher)
    return client


def submit_next(project, person) -> Annotation:
    task = task_assign_next(project=project, labeler=person).task
    annotation_submit(task=task, labeler=person, ratings=valid_ratings(task, person))
    return Annotation.objects.get(task=task, labeler=person)


@pytest.fixture(autouse=True)
def idle_queue():
    """Refreshes go to a default queue of this test's own, which no worker consumes (a session's test worker
    would otherwise take them: tests/conftest.py's celery_worker), so a test sees what was queued and runs it."""
    from config.celery import app

    old, app.conf.task_default_queue = app.conf.task_default_queue, f"test-idle-{uuid.uuid4().hex[:10]}"
    yield app.conf.task_default_queue
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(app.conf.task_default_queue)
    app.conf.task_default_queue = old


def broker_messages(queue: str) -> int:
    """Messages waiting in the broker's queue (Celery's Redis transport keeps a queue as a list of its name)."""
    return redis.Redis.from_url(django_settings.CELERY_BROKER_URL).llen(queue)


def test_the_snapshot_equals_a_direct_computation_and_is_read_back_fresh(labeled):
    first = quality_snapshot_for_page(project=labeled)  # none yet: computed and stored
    assert first.aggregates == quality_aggregates(labeled) and first.labels == 3
    again = quality_snapshot_for_page(project=labeled)
    assert again.computed_at == first.computed_at, "read from the cache, not computed again"
    assert again.aggregates == quality_aggregates(labeled) and not again.stale and not again.refreshing


@pytest.mark.parametrize("change", ["new label", "revision", "review", "import", "import undone", "check polarity"])
def test_a_change_of_the_labels_makes_it_stale_and_the_refresh_picks_it_up(
    change, labeled, labeler, labeler2, researcher, settings, tmp_path
):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    if change == "import undone":  # imported labels in the snapshot, then the import undone
        job = _import(labeled, researcher)
    before = quality_snapshot_for_page(project=labeled)
    assert not before.stale

    if change == "new label":
        submit_next(labeled, labeler2)  # the second label of task 1: a new pair to compare
    elif change == "revision":
        task = labeled.tasks.order_by("id")[1]
        annotation_revise(task=task, labeler=labeler, ratings=valid_ratings(task, labeler))
    elif change == "review":
        annotation_review(
            annotation=Annotation.objects.filter(labeler=labeler2).get(), reviewer=researcher, decision="accept"
        )
    elif change == "import":
        _import(labeled, researcher)
    elif change == "import undone":
        import_job_undo(job=job, user=researcher)
    else:
        check = labeled.checks.get(key="toxic")
        check.problem_answer = not check.problem_answer
        check.save(update_fields=["problem_answer"])

    stale = quality_snapshot_for_page(project=labeled)
    assert stale.stale and stale.refreshing and stale.aggregates == before.aggregates
    assert stale.new_labels == {"new label": 1, "import": 1}.get(change, 0)
    quality_snapshot_refresh_task(labeled.pk)  # what the worker runs
    fresh = quality_snapshot_for_page(project=labeled)
    assert not fresh.stale and fresh.computed_at > before.computed_at
    assert fresh.aggregates == quality_aggregates(labeled)
    if change in ("new label", "revision", "check polarity"):
        assert fresh.aggregates != before.aggregates, "the change moves a figure, and the refresh shows it"


def _import(project, researcher):
    # One label from an outside source: K=4, so a grouped ranking of four completions.
    row = {"prompt": "Imported prompt?", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 3, 4]}
    job = import_job_create(
        project=project,
        kind="preferences",
        upload=io.BytesIO((json.dumps(row) + "\n").encode()),
        original_name="rankings.jsonl",
        user=researcher,
        source_name="outside",
    )
    assert job.status == "succeeded", job.errors
    return job


def test_archiving_a_task_keeps_the_snapshot_fresh(labeled):
    """The aggregates read an archived task's labels too (its archive counts are read live on the page)."""
    quality_snapshot_for_page(project=labeled)
    tasks_archive(project=labeled, tasks=labeled.tasks.filter(pk=labeled.tasks.order_by("id")[0].pk))
    assert not quality_snapshot_for_page(project=labeled).stale


def test_drafts_do_not_make_it_stale(labeled, labeler2):
    from labeling_app.services.annotations import annotation_save_draft

    quality_snapshot_for_page(project=labeled)
    task = task_assign_next(project=labeled, labeler=labeler2).task
    annotation_save_draft(task=task, labeler=labeler2, draft={"comment": "thinking"})
    assert not quality_snapshot_for_page(project=labeled).stale


def test_one_refresh_at_a_time(labeled, labeler2, idle_queue):
    quality_snapshot_for_page(project=labeled)
    submit_next(labeled, labeler2)
    assert broker_messages(idle_queue) == 0
    assert quality_snapshot_for_page(project=labeled).refreshing
    assert quality_snapshot_for_page(project=labeled).refreshing  # the second view finds the first one's lock
    assert quality_snapshot_refresh_enqueue(project=labeled) is True
    assert broker_messages(idle_queue) == 1, "one message for three stale views"
    assert cache.get(_lock_key(labeled)) is not None
    quality_snapshot_refresh_task(labeled.pk)
    assert cache.get(_lock_key(labeled)) is None, "the refresh frees the lock when it ends"
    assert not quality_snapshot_for_page(project=labeled).stale


def test_the_watermark_is_one_query(labeled, django_assert_num_queries):
    with django_assert_num_queries(1):
        count, newest, changed, checks = quality_watermark(labeled)
    assert count == 3 and newest == Annotation.objects.latest("id").pk and changed and checks


def test_the_page_says_as_of_when_and_how_many_labels_came_since(labeled, labeler2, researcher_client):
    page = researcher_client.get(f"/projects/{labeled.pk}/quality/").content.decode()
    assert "figures as of" in page and "Refresh now" in page and "refreshing" not in page
    submit_next(labeled, labeler2)
    page = researcher_client.get(f"/projects/{labeled.pk}/quality/").content.decode()
    assert "(1 new label since; refreshing…)" in page


def test_refresh_now_recomputes_for_researchers_only(labeled, labeler, labeler2, researcher_client):
    researcher_client.get(f"/projects/{labeled.pk}/quality/")
    submit_next(labeled, labeler2)
    url = f"/projects/{labeled.pk}/quality/refresh/"

    as_labeler = Client()
    as_labeler.force_login(labeler)
    assert as_labeler.post(url).status_code == 403
    assert quality_snapshot_for_page(project=labeled).stale, "a labeler's POST recomputed nothing"

    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(make_user("res2", "researcher"))
    assert csrf.post(url).status_code == 403, "no CSRF token, no refresh"

    response = researcher_client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == f"/projects/{labeled.pk}/quality/"
    assert "Statistics recomputed from 4 labels." in response.content.decode()
    snapshot = quality_snapshot_for_page(project=labeled)
    assert not snapshot.stale and snapshot.aggregates == quality_aggregates(labeled)
    assert researcher_client.get(url).status_code == 405
