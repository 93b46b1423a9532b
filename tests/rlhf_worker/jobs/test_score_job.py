"""Score job through a real Celery worker: every completion of a project scored once per reward model version."""

from __future__ import annotations

import pytest

from config.errors import ServiceError
from labeling_app.models import Completion, RankingTask
from rlhf_worker.models import CompletionScore, ModelVersion
from rlhf_worker.services.jobs import job_config_validate, job_start
from rlhf_worker.training.reward_model import RewardModel, RewardScorer, tiny_backbone
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
    # Each task's uncertainty margin (for the queue order "uncertainty") is the gap between its two best scores.
    by_completion = dict(zip((c.pk for c in completions), expected.tolist()))
    tasks = RankingTask.objects.filter(project=labeled_project).prefetch_related("task_completions")
    assert len(tasks) == 12
    for task in tasks:
        top, second = sorted((by_completion[tc.completion_id] for tc in task.task_completions.all()), reverse=True)[:2]
        assert task.uncertainty_margin == pytest.approx(top - second, abs=1e-5)


def test_score_job_config_errors(plain_project):
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="score", config={"project_ids": [plain_project.pk]})
    assert err.value.field == "reward_version_id"  # no reward model exists yet
    with pytest.raises(ServiceError) as err:  # none chosen means every project; still no reward model
        job_config_validate(kind="score", config={"project_ids": []})
    assert err.value.field == "reward_version_id" and "train one with a reward job" in err.value.message


def test_score_job_without_completions_is_refused_at_start(plain_project):
    ModelVersion.objects.create(kind="reward", name="rm", path="/nowhere")
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="score", config={"project_ids": [plain_project.pk]})
    assert err.value.field == "project_ids" and "no completions" in err.value.message
