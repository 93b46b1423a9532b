"""Archiving tasks: they leave the hand-out and the open counts, a labeler holding one cannot submit it (409),
restoring brings them back, and their labels stay in exports and training data."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from config.errors import ServiceError
from labeling_app.models import Annotation, Assignment, RankingTask, Rating
from labeling_app.selectors.exports import pairwise_records
from labeling_app.selectors.labeling import labeler_projects, task_for_labeler
from labeling_app.selectors.labels import LabelFilters
from labeling_app.selectors.progress import _PROGRESS_SQL, labeler_progress
from labeling_app.selectors.quality import project_progress
from labeling_app.selectors.training_data import rankings_for_training
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import assignment_renew, task_assign_next
from labeling_app.services.task_archive import TASK_ARCHIVED, tasks_archive, tasks_restore
from tests.labeling_app.labeling_helpers import valid_ratings
from tests.labeling_app.researcher_fixtures import label

pytestmark = pytest.mark.django_db


def archive(project, *tasks) -> int:
    return tasks_archive(project=project, tasks=RankingTask.objects.filter(pk__in=[t.pk for t in tasks]))


def restore(project, *tasks) -> int:
    return tasks_restore(project=project, tasks=RankingTask.objects.filter(pk__in=[t.pk for t in tasks]))


def test_archived_tasks_are_never_handed_out_and_restore_brings_them_back(demo_project, labeler, labeler2):
    first, second, third = RankingTask.objects.filter(project=demo_project).order_by("id")
    assert archive(demo_project, first, second) == 2
    assert archive(demo_project, first) == 0  # already archived: counted once
    lease = task_assign_next(project=demo_project, labeler=labeler)
    assert lease.task_id == third.pk
    assert archive(demo_project, third) == 1
    assert task_assign_next(project=demo_project, labeler=labeler2) is None  # nothing live left
    assert restore(demo_project, second) == 1 and restore(demo_project, second) == 0
    assert task_assign_next(project=demo_project, labeler=labeler2).task_id == second.pk
    # another project's task is not touched through this project
    other = RankingTask.objects.exclude(project=demo_project).first()
    assert other is None or archive(demo_project, other) == 0


def test_an_own_lease_on_an_archived_task_does_not_come_back(demo_project, labeler):
    held = task_assign_next(project=demo_project, labeler=labeler)
    archive(demo_project, held.task)
    nxt = task_assign_next(project=demo_project, labeler=labeler)
    assert nxt.task_id != held.task_id
    # the old lease and draft stay in their rows: a restore while it lives gives the task back
    assert Assignment.objects.filter(task=held.task, labeler=labeler).exists()
    assert Annotation.objects.get(task=held.task, labeler=labeler).status == "draft"


def test_submit_and_renew_on_an_archived_task_answer_409_and_keep_the_draft(demo_project, labeler):
    lease = task_assign_next(project=demo_project, labeler=labeler)
    task = task_for_labeler(labeler, lease.task_id)
    ratings = valid_ratings(task, labeler)
    archive(demo_project, task)
    # `task` was read before the archive (as a request that raced it would have): the store statement refuses it
    with pytest.raises(ServiceError) as exc:
        annotation_submit(task=task, labeler=labeler, ratings=ratings, comment="mine")
    assert exc.value.status == 409 and exc.value.message == TASK_ARCHIVED
    annotation = Annotation.objects.get(task=task, labeler=labeler)
    assert (
        annotation.status == "draft" and annotation.draft["comment"] == "mine" and len(annotation.draft["ratings"]) == 4
    )
    assert not Rating.objects.filter(annotation=annotation).exists()
    assert RankingTask.objects.get(pk=task.pk).submitted_count == 0
    # read after the archive: refused before any write
    with pytest.raises(ServiceError) as exc:
        annotation_submit(task=task_for_labeler(labeler, task.pk), labeler=labeler, ratings=ratings)
    assert exc.value.status == 409
    with pytest.raises(ServiceError) as exc:
        assignment_renew(task=task, labeler=labeler)
    assert exc.value.status == 409 and "archived" in exc.value.message

    api = APIClient()
    api.force_authenticate(labeler)
    response = api.post(f"/api/label/tasks/{task.pk}/submit/", {"ratings": ratings}, format="json")
    assert response.status_code == 409 and response.json()["detail"] == TASK_ARCHIVED
    assert api.post(f"/api/label/tasks/{task.pk}/renew/").status_code == 409

    # restored while the lease lives: the labeler gets it back and the submission goes through
    restore(demo_project, task)
    assert task_assign_next(project=demo_project, labeler=labeler).task_id == task.pk
    result = annotation_submit(task=task_for_labeler(labeler, task.pk), labeler=labeler, ratings=ratings)
    assert result.created and RankingTask.objects.get(pk=task.pk).submitted_count == 1


def test_the_labelers_task_page_sends_them_home_from_an_archived_task(client, demo_project, labeler):
    lease = task_assign_next(project=demo_project, labeler=labeler)
    client.force_login(labeler)
    assert client.get(f"/label/tasks/{lease.task_id}/").status_code == 200
    archive(demo_project, lease.task)
    response = client.get(f"/label/tasks/{lease.task_id}/", follow=True)
    assert response.redirect_chain[-1][0] == "/label/"
    assert f"Task {lease.task_id} was archived" in response.content.decode()


def test_open_counts_leave_archived_tasks_out(demo_project, labeler):
    first, second, third = RankingTask.objects.filter(project=demo_project).order_by("id")
    assert labeler_progress(labeler, demo_project).left == 3
    archive(demo_project, first, second)
    assert labeler_progress(labeler, demo_project).left == 1
    assert {p.pk: p.open_tasks for p in labeler_projects(labeler)}[demo_project.pk] == 1
    progress = project_progress(demo_project)
    assert (progress["tasks"], progress["archived"], progress["waiting"], progress["done"]) == (3, 2, 1, 0)
    restore(demo_project, first)
    assert labeler_progress(labeler, demo_project).left == 2
    assert project_progress(demo_project)["waiting"] == 2


def test_labels_of_archived_tasks_stay_in_exports_and_training_data(demo_project, labeler, labeler2):
    task = RankingTask.objects.filter(project=demo_project).order_by("id").first()
    labels = {label(task, labeler, [1, 2, 3, 4]).pk, label(task, labeler2, [2, 1, 3, 4]).pk}
    archive(demo_project, task)
    assert {
        r["annotation_id"] for r in rankings_for_training(project_ids=[demo_project.pk], full_overlap=True)
    } == labels
    pairs = list(pairwise_records(LabelFilters(project_ids=[demo_project.pk])))
    assert len(pairs) == 2 * 6  # every strictly ordered pair of both labels


def _plan(sql: str, params) -> str:
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cur.fetchall())


def test_the_queue_reads_still_use_the_open_task_index(demo_project, labeler):
    """task_open_idx now leaves archived tasks out; the hand-out's candidate scan and the open counts can still use it."""
    project = demo_project.pk
    candidate = _plan(
        """SELECT t.id FROM labeling_app_rankingtask t
                         WHERE t.project_id = %s AND t.submitted_count < t.overlap AND t.archived_at IS NULL
                         ORDER BY t.project_id, t.id LIMIT 1""",
        [project],
    )
    assert "task_open_idx" in candidate, candidate
    progress = _plan(
        _PROGRESS_SQL,
        {"labeler": labeler.pk, "submitted": "submitted", "since": timezone.now(), "project": project, "limit": 1001},
    )
    # Counting needs no order: any of the open-task indexes serves (the queue orders' indexes share
    # task_open_idx's condition, archived tasks left out, and lead with the project as well).
    open_task_indexes = ("task_open_idx", "task_open_fewest_idx", "task_open_source_idx", "task_open_margin_idx")
    assert any(name in progress for name in open_task_indexes), progress
