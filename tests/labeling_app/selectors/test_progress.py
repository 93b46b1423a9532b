"""labeler_progress: today's submissions and the tasks left for a labeler, in one bounded query."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from labeling_app.models import Annotation, Completion, Prompt, RankingTask
from labeling_app.roles import LABELER, has_role
from labeling_app.selectors import progress
from labeling_app.selectors.progress import labeler_progress
from labeling_app.services.annotations import annotation_submit, annotation_skip
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, task_create
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = pytest.mark.django_db


def project_with_tasks(name: str, researcher, n: int, overlap: int = 1):
    project = project_create(name=name, user=researcher, completions_per_task=2, overlap=overlap)
    for i in range(n):
        prompt = Prompt.objects.create(project=project, text=f"{name} prompt {i}")
        task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"answer {j}", source=Completion.Source.IMPORTED)
                for j in range(2)
            ],
        )
    return project


def submit_next(project, labeler):
    lease = task_assign_next(project=project, labeler=labeler)
    annotation_submit(task=lease.task, labeler=labeler, ratings=valid_ratings(lease.task, labeler))
    return lease.task


def test_left_counts_open_tasks_this_labeler_has_not_taken(researcher, labeler, labeler2):
    project = project_with_tasks("P", researcher, 6, overlap=2)
    assert labeler_progress(labeler, project) == progress.LabelerProgress(today=0, left=6, left_more=False)
    submit_next(project, labeler)  # submitted, skipped or opened: no longer theirs to take
    skipped = task_assign_next(project=project, labeler=labeler)
    annotation_skip(task=skipped.task, labeler=labeler, reason="unclear")
    lease = task_assign_next(project=project, labeler=labeler)  # the task on screen
    assert labeler_progress(labeler, project).left == 3
    # Another labeler's leases and labels leave a task open while it wants more labels (overlap 2) ...
    submit_next(project, labeler2)
    assert labeler_progress(labeler, project).left == 3
    # ... and a task that has all its labels is gone for everyone.
    full = RankingTask.objects.filter(project=project).exclude(annotations__labeler=labeler).first()
    RankingTask.objects.filter(pk=full.pk).update(overlap=1)
    Annotation.objects.create(
        task=full, labeler=labeler2, status=Annotation.Status.SUBMITTED, submitted_at=timezone.now()
    )
    assert labeler_progress(labeler, project).left == 2
    assert labeler_progress(labeler2, project).left == 4
    assert lease.task_id != full.pk


def test_today_counts_this_labelers_submissions_since_midnight_in_any_project(researcher, labeler, labeler2):
    first = project_with_tasks("First", researcher, 3)
    second = project_with_tasks("Second", researcher, 3)
    submit_next(first, labeler)
    old = submit_next(first, labeler)
    Annotation.objects.filter(task=old, labeler=labeler).update(submitted_at=timezone.now() - timedelta(days=2))
    submit_next(second, labeler)
    task_assign_next(project=second, labeler=labeler)  # a draft is not a submission
    submit_next(second, labeler2)
    assert labeler_progress(labeler, second) == progress.LabelerProgress(today=2, left=0, left_more=False)
    assert labeler_progress(labeler, first).today == 2


def test_left_stops_counting_past_the_cap_in_one_query(researcher, labeler, monkeypatch, django_assert_num_queries):
    project = project_with_tasks("Big", researcher, 5)
    monkeypatch.setattr(progress, "LEFT_CAP", 3)
    assert has_role(labeler, LABELER)  # the page's role check has run before (and cached the roles)
    with django_assert_num_queries(1):
        assert labeler_progress(labeler, project) == progress.LabelerProgress(today=0, left=3, left_more=True)
    monkeypatch.setattr(progress, "LEFT_CAP", 5)
    assert labeler_progress(labeler, project) == progress.LabelerProgress(today=0, left=5, left_more=False)


def test_only_labelers_have_progress(researcher):
    project = project_with_tasks("P", researcher, 1)
    with pytest.raises(PermissionDenied):
        labeler_progress(researcher, project)
