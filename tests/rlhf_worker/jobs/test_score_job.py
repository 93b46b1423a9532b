"""Score job through a real Celery worker: every completion of a project scored once per reward model version."""

from __future__ import annotations

import pytest

from config.errors import ServiceError
from labeling_app.models import Completion, RankingTask, Rating
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_update
from rlhf_worker.models import CompletionScore, ModelVersion
from rlhf_worker.services.jobs import job_config_validate, job_start
from rlhf_worker.training.reward_model import RewardModel, RewardScorer, tiny_backbone
from rlhf_worker.training.uncertainty import laplace_precision, task_margins
from tests.conftest import make_user
from tests.rlhf_worker.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_score_job_scores_every_completion_once_per_version(labeled_project, training_queue, admin_user, tmp_path):
    backbone, tokenizer = tiny_backbone("bert", seed=5)
    RewardModel(backbone, bias=0.5, scale=2.0).save_pretrained(
        tmp_path / "rm", tokenizer=tokenizer, extra={"max_length": 48}
    )
    version = ModelVersion.objects.create(kind="reward", name="tiny", path=str(tmp_path / "rm"))

    for _ in range(2):  # scoring again updates the rows instead of adding duplicates
        job = wait_for(
            job_start(
                kind="score",
                config={"project_ids": [labeled_project.pk], "batch_size": 8, "device": "cpu"},
                user=admin_user,
            )
        )
        assert job.status == "succeeded", job.error
        assert job.result_version is None
    completions = list(
        Completion.objects.filter(prompt__project=labeled_project).select_related("prompt").order_by("pk")
    )
    rows = {s.completion_id: s for s in CompletionScore.objects.filter(model_version=version)}
    assert len(rows) == len(completions) == CompletionScore.objects.count()
    expected = RewardScorer.from_pretrained(tmp_path / "rm", device="cpu").score(
        [c.prompt.text for c in completions], [c.text for c in completions]
    )
    assert [rows[c.pk].score for c in completions] == pytest.approx(expected.tolist(), abs=1e-5)
    assert rows[completions[0].pk].job_id == job.pk

    # Each task's uncertainty margin (for the queue order "uncertainty"): the mean over its completion pairs of the
    # raw score difference in posterior standard deviations of the score head, whose Laplace posterior is built
    # from the project's labels (every submitted ranking's untied pairs) at prior precision 1.
    raw, features = RewardScorer.from_pretrained(tmp_path / "rm", device="cpu").raw_scores_and_features(
        [c.prompt.text for c in completions], [c.text for c in completions]
    )
    row = {c.pk: i for i, c in enumerate(completions)}
    ranks: dict[int, dict[int, int]] = {}
    for annotation_id, completion_id, rank in Rating.objects.values_list("annotation_id", "completion_id", "rank"):
        ranks.setdefault(annotation_id, {})[completion_id] = rank
    better, worse = [], []
    for by_completion in ranks.values():
        for a, rank_a in by_completion.items():
            for b, rank_b in by_completion.items():
                if rank_a < rank_b:
                    better.append(row[a])
                    worse.append(row[b])
    assert len(better) > 24  # 24 labels of 3 completions, few ties
    precision = laplace_precision(features, raw, better, worse, prior_precision=1.0)
    tasks = list(
        RankingTask.objects.filter(project=labeled_project).order_by("pk").prefetch_related("task_completions")
    )
    assert len(tasks) == 12
    members = [[row[tc.completion_id] for tc in task.task_completions.all()] for task in tasks]
    margins = task_margins(features, raw, members, precision).tolist()
    assert [t.uncertainty_margin for t in tasks] == pytest.approx(margins, rel=1e-4)
    # Normalised: a ratio of raw score gaps to their standard deviation, neither the stored scores' top-minus-second
    # gap (which the reward model's scale of 2 halves) nor anything that ignores the labels.
    by_completion = dict(zip((c.pk for c in completions), expected.tolist()))
    gaps = []
    for task in tasks:
        top, second = sorted((by_completion[tc.completion_id] for tc in task.task_completions.all()), reverse=True)[:2]
        gaps.append(top - second)
    assert [t.uncertainty_margin for t in tasks] != pytest.approx(gaps, rel=1e-2)
    prior_only = task_margins(features, raw, members, laplace_precision(features, raw, [], [])).tolist()
    assert margins != pytest.approx(prior_only, rel=1e-3)


def test_score_job_margins_follow_the_prior_precision(labeled_project, training_queue, admin_user, tmp_path):
    """A stronger prior (larger λ) leaves the head's weights less uncertain: every margin grows."""
    backbone, tokenizer = tiny_backbone("llama", seed=6)
    RewardModel(backbone, kind="decoder").save_pretrained(
        tmp_path / "rm", tokenizer=tokenizer, extra={"max_length": 48}
    )
    ModelVersion.objects.create(kind="reward", name="tiny-decoder", path=str(tmp_path / "rm"))
    margins = []
    for prior in (1.0, 100.0):
        job = wait_for(
            job_start(
                kind="score",
                config={"project_ids": [labeled_project.pk], "device": "cpu", "prior_precision": prior},
                user=admin_user,
            )
        )
        assert job.status == "succeeded", job.error
        margins.append(
            dict(RankingTask.objects.filter(project=labeled_project).values_list("pk", "uncertainty_margin"))
        )
    assert len(margins[0]) == 12 and None not in margins[0].values()
    assert all(margins[1][t] > margins[0][t] for t in margins[0])
    # The queue order "uncertainty" hands out the task with the smallest margin first (a third label is wanted).
    project = project_update(
        project=labeled_project,
        name=labeled_project.name,
        instructions=labeled_project.instructions,
        completions_per_task=3,
        overlap=3,
        lease_minutes=labeled_project.lease_minutes,
        queue_order="uncertainty",
    )
    assignment = task_assign_next(project=project, labeler=make_user("fresh", "labeler"))
    assert assignment.task_id == min(margins[1], key=margins[1].get)


def test_score_job_config_errors(plain_project):
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="score", config={"project_ids": [plain_project.pk]})
    assert err.value.field == "reward_version_id"  # no reward model exists yet
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="score", config={"project_ids": [plain_project.pk], "prior_precision": 0})
    assert err.value.field == "prior_precision" and "above 0" in err.value.message
    with pytest.raises(ServiceError) as err:  # none chosen means every project; still no reward model
        job_config_validate(kind="score", config={"project_ids": []})
    assert err.value.field == "reward_version_id" and "train one with a reward job" in err.value.message


def test_score_job_without_completions_is_refused_at_start(plain_project):
    ModelVersion.objects.create(kind="reward", name="rm", path="/nowhere")
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="score", config={"project_ids": [plain_project.pk]})
    assert err.value.field == "project_ids" and "no completions" in err.value.message
