"""The whole loop on tiny models through Celery on PostgreSQL + Redis:
generate → labels (made here) → reward job → PPO job → generate again from the new policy version."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.utils import timezone

from labeling_app.models import Annotation, Completion, Prompt, RankingTask, Rating
from labeling_app.services.projects import project_create
from rlhf_worker.models import ModelVersion
from rlhf_worker.services.jobs import job_start
from rlhf_worker.training.policy_models import save_tiny_policy
from rlhf_worker.training.reward_model import save_tiny_backbone
from tests.rlhf_worker.helpers import wait_for

torch.set_num_threads(1)
pytestmark = pytest.mark.django_db(transaction=True)


def reward_job_config(project_id: int) -> dict:
    """A tiny, fast reward job config."""
    backbone = save_tiny_backbone(Path(settings.MODEL_STORE) / "tiny-backbone")
    return {
        "project_ids": [project_id],
        "backbone": str(backbone),
        "epochs": 2,
        "batch_size": 2,
        "eval_fraction": 0.0,
        "learning_rate": 1e-3,
        "max_length": 128,
        "device": "cpu",
    }


def preference(text: str) -> tuple[int, str]:
    """More 'a' characters is better, then the text itself decides: the tiny random policy often writes no 'a'
    at all, and a reward job whose rankings are all ties has nothing to learn from."""
    return text.count("a"), text


def label_every_task(project, labeler) -> int:
    """Rank each task's completions by `preference` (identical texts tie)."""
    count = 0
    for task in RankingTask.objects.filter(project=project):
        completions = list(task.completions.all())
        order = sorted({preference(c.text) for c in completions}, reverse=True)
        annotation = Annotation.objects.create(
            task=task,
            labeler=labeler,
            status="submitted",
            submitted_at=timezone.now(),
            shown_order=[c.pk for c in completions],
        )
        for c in completions:
            rank = order.index(preference(c.text)) + 1
            Rating.objects.create(annotation=annotation, completion=c, rank=rank, likert=max(1, 8 - 3 * rank))
        count += 1
    return count


def test_generate_label_reward_ppo_generate(training_queue, admin_user, researcher, labeler):
    project = project_create(name="Loop", user=researcher, completions_per_task=3, overlap=1)
    reward_config = reward_job_config(project.pk)
    for text in ("say a", "write", "hello", "abc", "tell me", "go"):
        Prompt.objects.create(project=project, text=text)
    base = ModelVersion.objects.create(
        kind="policy", name="tiny base", path=save_tiny_policy(str(Path(settings.MODEL_STORE) / "tiny-policy"), seed=0)
    )

    gen = wait_for(
        job_start(
            kind="generate",
            config={
                "project_ids": [project.pk],
                "policy_version_id": base.pk,
                "max_new_tokens": 12,
                "temperature": 1.2,
            },
            user=admin_user,
        ),
        timeout=300,
    )
    assert gen.status == "succeeded", gen.error
    assert RankingTask.objects.filter(project=project).count() == 6
    assert label_every_task(project, labeler) == 6

    reward = wait_for(job_start(kind="reward", config=reward_config, user=admin_user), timeout=300)
    assert reward.status == "succeeded", reward.error
    assert reward.result_version.kind == "reward"

    ppo = wait_for(
        job_start(
            kind="ppo",
            config={
                "project_ids": [project.pk],
                "base_version_id": base.pk,
                "reward_version_id": reward.result_version_id,
                "total_episodes": 12,
                "batch_size": 4,
                "mini_batch_size": 2,
                "max_new_tokens": 8,
                "learning_rate": 1e-3,
                "device": "cpu",
            },
            user=admin_user,
        ),
        timeout=300,
    )
    assert ppo.status == "succeeded", ppo.error
    policy = ppo.result_version
    assert (
        policy.kind == "policy" and policy.parent_id == base.pk and policy.reward_model_id == reward.result_version_id
    )
    assert "objective/scores" in ppo.summary and ppo.samples

    again = wait_for(
        job_start(
            kind="generate",
            config={"project_ids": [project.pk], "policy_version_id": policy.pk, "max_new_tokens": 12},
            user=admin_user,
        ),
        timeout=300,
    )
    assert again.status == "succeeded", again.error
    assert Completion.objects.filter(model_version=policy).count() == 18
    assert RankingTask.objects.filter(project=project).count() == 12
