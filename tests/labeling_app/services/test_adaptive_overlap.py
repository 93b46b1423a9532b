"""Adaptive overlap: a task whose labels disagree gets one more label (up to the project's maximum), in the
submission's own transaction; the hand-out then gives it to a labeler who has not labeled it."""

from __future__ import annotations

import random
import threading
from itertools import combinations

import pytest
from django.db import connection
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, Completion, Prompt, RankingTask, Rating
from labeling_app.selectors.agreement import ranking_pair_agreement
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, project_update, task_create
from rlhf_worker.models import CompletionScore, ModelVersion
from tests.conftest import make_user


def build(researcher, *, overlap=2, overlap_max=3, tasks=1, k=3, threshold=0.34, name="adaptive"):
    project = project_create(
        name=name,
        user=researcher,
        completions_per_task=k,
        overlap=overlap,
        overlap_max=overlap_max,
        disagreement_threshold=threshold,
        checks=[("toxic", "Toxic?")],
    )
    for i in range(tasks):
        prompt = Prompt.objects.create(project=project, text=f"adaptive {i}?")
        task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"{i}-{j}", source="imported") for j in range(k)
            ],
        )
    return project


def completion_ids(task) -> list[int]:
    return list(task.task_completions.order_by("position").values_list("completion_id", flat=True))


def label(project, user, best_first: list[int] | None = None, *, rng: random.Random | None = None) -> RankingTask:
    """`user` takes the next task and submits the ranking `best_first` (completion ids, best first; the task's order
    when not given, shuffled by `rng` when given)."""
    assignment = task_assign_next(project=project, labeler=user)
    assert assignment is not None, f"{user.username} got no task"
    task = RankingTask.objects.get(pk=assignment.task_id)
    order = best_first if best_first is not None else completion_ids(task)
    if rng is not None:
        order = rng.sample(order, len(order))
    ratings = [
        {"completion": cid, "likert": 7 - rank, "rank": rank + 1, "checks": {"toxic": False}}
        for rank, cid in enumerate(order)
    ]
    annotation_submit(task=task, labeler=user, ratings=ratings)
    return task


@pytest.fixture
def labelers(db):
    return [make_user(f"adapt{i}", "labeler") for i in range(4)]


@pytest.mark.django_db
def test_a_disagreeing_pair_raises_the_overlap_and_the_task_goes_to_a_third_labeler(researcher, labelers):
    project = build(researcher)
    task = RankingTask.objects.get(project=project)
    a, b, c = completion_ids(task)
    label(project, labelers[0], [a, b, c])
    assert RankingTask.objects.get(pk=task.pk).overlap == 2  # one label: nothing to compare yet
    label(project, labelers[1], [c, b, a])  # every pair the other way round
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count, task.extra_labels) == (3, 2, 1)
    # The two who labeled it never get it again; a third labeler does.
    assert task_assign_next(project=project, labeler=labelers[0]) is None
    assert task_assign_next(project=project, labeler=labelers[1]) is None
    third = task_assign_next(project=project, labeler=labelers[2])
    assert third is not None and third.task_id == task.pk


@pytest.mark.django_db
def test_an_agreeing_pair_does_not(researcher, labelers):
    project = build(researcher)
    task = RankingTask.objects.get(project=project)
    a, b, c = completion_ids(task)
    label(project, labelers[0], [a, b, c])
    label(project, labelers[1], [b, a, c])  # one pair of three differs: 0.33 < 0.34
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count, task.extra_labels) == (2, 2, 0)
    assert task_assign_next(project=project, labeler=labelers[2]) is None


@pytest.mark.django_db
def test_the_threshold_is_inclusive_and_the_overlap_never_goes_above_the_maximum(researcher, labelers):
    project = build(researcher, threshold=1 / 3)
    task = RankingTask.objects.get(project=project)
    a, b, c = completion_ids(task)
    label(project, labelers[0], [a, b, c])
    label(project, labelers[1], [b, a, c])  # exactly a third: extended
    label(project, labelers[2], [c, b, a])  # still disagreeing, but 3 is the maximum
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count, task.extra_labels) == (3, 3, 1)
    assert task_assign_next(project=project, labeler=labelers[3]) is None


@pytest.mark.django_db
def test_with_a_higher_maximum_the_third_label_is_compared_with_both(researcher, labelers):
    project = build(researcher, overlap_max=4, threshold=0.5)
    task = RankingTask.objects.get(project=project)
    a, b, c = completion_ids(task)
    label(project, labelers[0], [a, b, c])
    label(project, labelers[1], [c, b, a])  # 3 of 3 pairs differ
    label(project, labelers[2], [a, c, b])  # pooled over the three label pairs: (3 + 1 + 2) / 9 = 0.67 >= 0.5
    task.refresh_from_db()
    assert (task.overlap, task.extra_labels) == (4, 2)
    label(project, labelers[3], [a, b, c])
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count, task.extra_labels) == (4, 4, 2)


@pytest.mark.django_db
def test_off_by_default_and_imported_projects_keep_their_overlap(researcher, labelers):
    project = build(researcher, overlap_max=None)
    assert project.overlap_max == 2 and not project.adaptive_overlap
    task = RankingTask.objects.get(project=project)
    a, b, c = completion_ids(task)
    label(project, labelers[0], [a, b, c])
    label(project, labelers[1], [c, b, a])
    task.refresh_from_db()
    assert (task.overlap, task.extra_labels) == (2, 0)


def _reward_scores(task, scores: dict[int, float], name="rm"):
    version = ModelVersion.objects.create(kind=ModelVersion.Kind.REWARD, name=name, path="/nowhere")
    CompletionScore.objects.bulk_create(
        CompletionScore(completion_id=cid, model_version=version, score=s, scored_at=timezone.now())
        for cid, s in scores.items()
    )
    return version


@pytest.mark.django_db
def test_with_base_overlap_one_the_label_is_compared_with_the_newest_reward_model(researcher, labelers):
    project = build(researcher, overlap=1, overlap_max=2, tasks=3)
    tasks = list(RankingTask.objects.filter(project=project).order_by("id"))
    # Task 0: no scores, nothing to compare: one label is enough.
    label(project, labelers[0], completion_ids(tasks[0]))
    # Task 1: the newest reward model ranks it the other way round (an older one agreed): one more label.
    a, b, c = completion_ids(tasks[1])
    _reward_scores(tasks[1], {a: 3.0, b: 2.0, c: 1.0}, name="old")
    _reward_scores(tasks[1], {a: -1.0, b: 0.0, c: 1.0}, name="new")
    # Task 2: the reward model agrees.
    x, y, z = completion_ids(tasks[2])
    _reward_scores(tasks[2], {x: 1.0, y: 0.5, z: 0.0})
    label(project, labelers[0], [a, b, c])
    label(project, labelers[0], [x, y, z])
    got = {t.pk: (t.overlap, t.extra_labels) for t in RankingTask.objects.filter(project=project)}
    assert got == {tasks[0].pk: (1, 0), tasks[1].pk: (2, 1), tasks[2].pk: (1, 0)}
    # The second label of task 1 is compared with the first label, not the reward model.
    assert task_assign_next(project=project, labeler=labelers[1]).task_id == tasks[1].pk


@pytest.mark.django_db
def test_project_settings_are_validated_with_messages_naming_the_field(researcher, demo_project):
    settings = dict(name=demo_project.name, instructions="", completions_per_task=4, overlap=2, lease_minutes=30)
    with pytest.raises(ServiceError) as exc:
        project_update(project=demo_project, **settings, overlap_max=1)
    assert "overlap_max" in exc.value.errors and "at least the overlap (2)" in exc.value.errors["overlap_max"][0]
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ServiceError) as exc:
            project_update(project=demo_project, **settings, overlap_max=3, disagreement_threshold=bad)
        assert "above 0 and at most 1" in exc.value.errors["disagreement_threshold"][0]
    with pytest.raises(ServiceError):
        project_create(name="bad", overlap=3, overlap_max=2)
    saved = project_update(project=demo_project, **settings, overlap_max=3, disagreement_threshold=0.5)
    assert (saved.overlap_max, saved.disagreement_threshold) == (3, 0.5)


@pytest.mark.django_db
def test_a_new_base_overlap_keeps_each_task_s_extra_labels_within_the_new_maximum(researcher, labelers):
    project = build(researcher, tasks=2)
    first = RankingTask.objects.filter(project=project).order_by("id")[0]
    a, b, c = completion_ids(first)
    label(project, labelers[0], [a, b, c])
    label(project, labelers[1], [c, b, a])
    settings = dict(name=project.name, instructions="", completions_per_task=3, lease_minutes=30)
    project_update(project=project, **settings, overlap=3, overlap_max=5)
    assert dict(RankingTask.objects.filter(project=project).values_list("extra_labels", "overlap")) == {1: 4, 0: 3}
    project_update(project=project, **settings, overlap=1, overlap_max=None)  # off: no task above the base, none
    assert sorted(RankingTask.objects.filter(project=project).values_list("overlap", flat=True)) == [
        1,
        2,
    ]  # below its labels


@pytest.mark.django_db(transaction=True)
def test_concurrent_labelers_never_exceed_the_maximum_and_every_disagreeing_task_is_extended(researcher):
    """8 labelers label 6 tasks (overlap 2, max 3) at once with random rankings until nothing is left."""
    project = build(researcher, tasks=6, k=3, name="adaptive-race")
    users = [make_user(f"race{i}", "labeler") for i in range(8)]
    barrier, errors = threading.Barrier(len(users)), []

    def work(user):
        rng = random.Random(user.pk)
        try:
            barrier.wait()
            while task_assign_next(project=project, labeler=user) is not None:
                label(project, user, rng=rng)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for task in RankingTask.objects.filter(project=project):
        labels = list(Annotation.objects.filter(task=task, status="submitted").order_by("submitted_at", "id"))
        assert task.submitted_count == len(labels) == task.overlap <= 3
        assert len({a.labeler_id for a in labels}) == len(labels)
        assert task.extra_labels == task.overlap - 2
        # Extended exactly when the first two labels disagreed on at least 0.34 of the pairs.
        ids = completion_ids(task)
        ranks = [
            [dict(Rating.objects.filter(annotation=a).values_list("completion_id", "rank"))[c] for c in ids]
            for a in labels[:2]
        ]
        agreeing, comparable = ranking_pair_agreement(*ranks)
        assert (task.extra_labels == 1) == ((comparable - agreeing) / comparable >= 0.34), (task.pk, ranks)
        assert all(len(set(p)) == 2 for p in combinations([a.labeler_id for a in labels], 2))


@pytest.mark.django_db
def test_statistics_and_exports_say_how_many_tasks_got_extra_labels(researcher, labelers, client):
    from labeling_app.selectors.exports import export_records, export_schema
    from labeling_app.selectors.labels import LabelFilters
    from labeling_app.selectors.quality import agreement_for_project

    project = build(researcher, tasks=3)
    tasks = list(RankingTask.objects.filter(project=project).order_by("id"))
    for task, second in zip(tasks, ("reversed", "same", "reversed")):
        a, b, c = completion_ids(task)
        label(project, labelers[0], [a, b, c])
        label(project, labelers[1], [c, b, a] if second == "reversed" else [a, b, c])
    label(project, labelers[2])  # takes the first extended task ([a, b, c]: two agree now, the maximum is 3 anyway)
    extra = agreement_for_project(project)["extra_labels"]
    assert (extra["tasks"], extra["labels"], extra["waiting"], extra["enabled"]) == (2, 2, 1, True)

    filters = LabelFilters(project_ids=[project.pk])
    pairwise = list(export_records("pairwise", filters))
    assert {(r["task_id"], r["task_extra_labels"]) for r in pairwise} == {
        (tasks[0].pk, 1),
        (tasks[1].pk, 0),
        (tasks[2].pk, 1),
    }
    assert "task_extra_labels" in export_schema("grouped", filters).names
    assert {r["task_extra_labels"] for r in export_records("grouped", filters) if r["task_id"] == tasks[2].pk} == {1}

    client.force_login(researcher)
    page = client.get(f"/projects/{project.pk}/quality/").content.decode()
    row = page[page.index('id="extra-labels"') :]
    assert "2 <small>(2 extra labels asked, 1 task still waiting; up to 3 labels" in row
    preview = client.get(f"/projects/{project.pk}/export/").content.decode()
    assert "2 tasks of this project got extra labels" in preview and "<th>task_extra_labels</th>" in preview
