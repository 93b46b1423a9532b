"""Queue orders on real PostgreSQL: each order hands real tasks out in its order, after the tasks others started."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Annotation, Assignment, Completion, Prompt, QueueOrder, RankingTask
from labeling_app.selectors.queue import queue_sources
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, project_update, task_create
from labeling_app.services.uncertainty import task_margins_write
from rlhf_worker.models import CompletionScore, ModelVersion
from tests.conftest import make_user
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = pytest.mark.django_db


def add_task(project, name: str, *, model: str = "old-model", version: ModelVersion | None = None) -> RankingTask:
    prompt = Prompt.objects.create(project=project, text=f"{name}?")
    completions = [
        Completion.objects.create(
            prompt=prompt,
            text=f"{name}-{j}",
            source="model" if version else "imported",
            model_name="" if version else model,
            model_version=version,
        )
        for j in range(2)
    ]
    return task_create(project=project, prompt=prompt, completions=completions)


def set_order(project, order: str, source: str = ""):
    return project_update(
        project=project,
        name=project.name,
        instructions=project.instructions,
        completions_per_task=project.completions_per_task,
        overlap=project.overlap,
        lease_minutes=project.lease_minutes,
        queue_order=order,
        queue_source=source,
    )


def score(task: RankingTask, version: ModelVersion, scores: list[float], margin: float | None = None) -> None:
    """Store `version`'s scores of the task's completions, then its margin (default: the gap of its two scores;
    the score job computes it with the Laplace posterior, the queue only reads the number)."""
    ids = list(task.task_completions.order_by("position").values_list("completion_id", flat=True))
    CompletionScore.objects.bulk_create(
        CompletionScore(completion_id=c, model_version=version, score=s, scored_at=timezone.now())
        for c, s in zip(ids, scores)
    )
    task_margins_write(
        model_version=version, margins={task.pk: abs(scores[1] - scores[0]) if margin is None else margin}
    )


def label(project, labeler) -> RankingTask | None:
    """Lease the next task and submit a label for it; the task, or None when the queue is empty."""
    a = task_assign_next(project=project, labeler=labeler)
    if a is None:
        return None
    annotation_submit(task=a.task, labeler=labeler, ratings=valid_ratings(a.task, labeler))
    return a.task


def queue(project, labeler) -> list[str]:
    """The prompts of the tasks one labeler is handed, in order, until nothing is left for them."""
    out = []
    while (task := label(project, labeler)) is not None:
        out.append(Prompt.objects.get(pk=task.prompt_id).text.rstrip("?"))
    return out


@pytest.fixture
def project(researcher):
    project = project_create(
        name="queue", user=researcher, completions_per_task=2, overlap=1, checks=[("toxic", "Toxic?")]
    )
    for i, model in enumerate(["old-model", "new-policy", "old-model", "new-policy"]):
        add_task(project, f"t{i}", model=model)
    return project


def test_oldest_first_is_the_default(project, labeler):
    assert project.queue_order == QueueOrder.OLDEST
    assert queue(project, labeler) == ["t0", "t1", "t2", "t3"]


def test_newest_first(project, labeler):
    set_order(project, "newest")
    assert queue(project, labeler) == ["t3", "t2", "t1", "t0"]


def test_source_first_then_oldest(project, labeler):
    set_order(project, "source_first", "imported:new-policy")
    assert queue(project, labeler) == ["t1", "t3", "t0", "t2"]


def test_a_policy_version_first(project, labeler):
    version = ModelVersion.objects.create(kind="policy", name="ppo-3", path="/nowhere")
    add_task(project, "t4", version=version)
    add_task(project, "t5", model="old-model")
    sources = {s.key: s for s in queue_sources(project.pk)}
    assert sources[f"model:{version.pk}"].label == f"policy ppo-3 (version {version.pk})"
    assert sources["imported:old-model"].label == "imported from old-model"
    assert list(sources) == [f"model:{version.pk}", "imported:new-policy", "imported:old-model"]
    set_order(project, "source_first", f"model:{version.pk}")
    assert queue(project, labeler) == ["t4", "t0", "t1", "t2", "t3", "t5"]
    # Every task is done: no source is left to list, except the one the project keeps.
    assert queue_sources(project.pk) == []
    assert [s.key for s in queue_sources(project.pk, keep=f"model:{version.pk}")] == [f"model:{version.pk}"]


def test_uncertainty_smallest_margin_first_unscored_last(project, labeler):
    rm_old = ModelVersion.objects.create(kind="reward", name="rm-1", path="/nowhere")
    rm_new = ModelVersion.objects.create(kind="reward", name="rm-2", path="/nowhere")
    t0, t1, t2, t3 = RankingTask.objects.filter(project=project).order_by("id")
    score(t0, rm_old, [0.0, 0.01])  # the old model was unsure of t0 ...
    score(t0, rm_new, [0.0, 0.9])  # ... the newest is sure: its margin wins
    # ... even when the old model's score job runs again afterwards
    assert task_margins_write(model_version=rm_old, margins={t0.pk: 0.01}) == 0
    score(t2, rm_new, [0.5, 0.4])
    score(t3, rm_new, [-1.0, 1.0])
    assert [t.uncertainty_margin for t in RankingTask.objects.filter(project=project).order_by("id")] == pytest.approx(
        [0.9, None, 0.1, 2.0]
    )
    set_order(project, "uncertainty")
    assert queue(project, labeler) == ["t2", "t0", "t3", "t1"]


def test_fewest_labels_orders_the_started_tasks_by_their_labels(researcher, labeler):
    project = project_create(
        name="fewest", user=researcher, completions_per_task=2, overlap=3, checks=[("toxic", "Toxic?")]
    )
    for i in range(4):
        add_task(project, f"t{i}")
    first, second = make_user("first", "labeler"), make_user("second", "labeler")
    # first labels t0, t1, t2; second labels t0: t0 has 2 labels, t1 and t2 one each, t3 none.
    for _ in range(3):
        label(project, first)
    label(project, second)
    set_order(project, "fewest_labels")
    # Started tasks first, fewest labels first among them: t1 (1 label), t2 (1), t0 (2); then the unstarted t3.
    # (Oldest first would give t0, t1, t2, t3.)
    assert queue(project, labeler) == ["t1", "t2", "t0", "t3"]


@pytest.mark.parametrize("order", QueueOrder.values)
def test_tasks_others_started_come_first_in_every_order(researcher, labeler, labeler2, order):
    """t1 leased by labeler2, t2 labeled by labeler2: neither is any order's first, both come before the rest."""
    project = project_create(
        name=f"started-{order}", user=researcher, completions_per_task=2, overlap=2, checks=[("toxic", "Toxic?")]
    )
    tasks = [add_task(project, f"t{i}", model="new-policy" if i == 3 else "old-model") for i in range(5)]
    rm = ModelVersion.objects.create(kind="reward", name="rm", path="/x")
    for i, task in enumerate(tasks):
        score(task, rm, [0.0, 1.0 - 0.1 * i])  # margins 1.0, 0.9, ... 0.6: t4 is the least sure
    set_order(project, order, "imported:new-policy" if order == "source_first" else "")
    Assignment.objects.create(task=tasks[1], labeler=labeler2, expires_at=timezone.now() + timedelta(minutes=30))
    Annotation.objects.create(task=tasks[2], labeler=labeler2, status="submitted", submitted_at=timezone.now())
    # Among the started tasks the project's order still applies (t2 has a label and the smaller margin).
    started = {
        "oldest": ["t1", "t2"],
        "newest": ["t2", "t1"],
        "fewest_labels": ["t1", "t2"],
        "source_first": ["t1", "t2"],
        "uncertainty": ["t2", "t1"],
    }[order]
    rest = {
        "oldest": ["t0", "t3", "t4"],
        "newest": ["t4", "t3", "t0"],
        "fewest_labels": ["t0", "t3", "t4"],
        "source_first": ["t3", "t0", "t4"],
        "uncertainty": ["t4", "t3", "t0"],
    }[order]
    assert queue(project, labeler) == started + rest


def test_source_first_needs_a_source_of_the_project(project):
    with pytest.raises(ServiceError) as err:
        set_order(project, "source_first")
    assert err.value.field == "queue_source" and "needs a source" in err.value.message
    with pytest.raises(ServiceError) as err:
        set_order(project, "source_first", "imported:nobody")
    assert err.value.field == "queue_source" and "no task of this project" in err.value.message
    with pytest.raises(ServiceError) as err:
        set_order(project, "random")
    assert err.value.field == "queue_order"
    project.refresh_from_db()
    assert project.queue_order == "oldest"


def test_another_order_clears_the_source(project):
    saved = set_order(project, "source_first", "imported:new-policy")
    assert (saved.queue_order, saved.queue_source) == ("source_first", "imported:new-policy")
    saved = set_order(saved, "newest", "imported:new-policy")
    assert (saved.queue_order, saved.queue_source) == ("newest", "")


def test_margin_waits_for_every_completion_of_the_task(project):
    version = ModelVersion.objects.create(kind="reward", name="rm", path="/nowhere")
    task = RankingTask.objects.filter(project=project).order_by("id").first()
    first, second = task.task_completions.order_by("position").values_list("completion_id", flat=True)
    CompletionScore.objects.create(completion_id=first, model_version=version, score=0.3, scored_at=timezone.now())
    assert task_margins_write(model_version=version, margins={task.pk: 0.5}) == 0
    task.refresh_from_db()
    assert task.uncertainty_margin is None
    CompletionScore.objects.create(completion_id=second, model_version=version, score=1.0, scored_at=timezone.now())
    assert task_margins_write(model_version=version, margins={task.pk: 0.5}) == 1
    assert task_margins_write(model_version=version, margins={task.pk: 0.5}) == 0  # unchanged: no write
    task.refresh_from_db()
    assert task.uncertainty_margin == pytest.approx(0.5)


def test_source_key_is_kept_for_imported_and_mixed_tasks(project):
    version = ModelVersion.objects.create(kind="policy", name="sft", path="/nowhere")
    prompt = Prompt.objects.create(project=project, text="mixed?")
    mixed = task_create(
        project=project,
        prompt=prompt,
        completions=[
            Completion.objects.create(prompt=prompt, text="a", source="model", model_version=version),
            Completion.objects.create(prompt=prompt, text="b", source="demonstration"),
        ],
    )
    mixed.refresh_from_db()
    assert mixed.source_key == f"demonstration + model:{version.pk}"
    assert set(RankingTask.objects.filter(project=project).values_list("source_key", flat=True)) == {
        "imported:old-model",
        "imported:new-policy",
        f"demonstration + model:{version.pk}",
    }
