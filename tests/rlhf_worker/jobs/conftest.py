"""Fixtures for the reward and score job tests: a tiny backbone folder and a project with submitted rankings."""

from __future__ import annotations

import pytest
import torch
from django.utils import timezone

from labeling_app.models import Annotation, Completion, Demonstration, Prompt, Rating
from labeling_app.services.projects import project_create, task_create
from rlhf_worker.training.reward_model import save_tiny_backbone
from rlhf_worker.training.synthetic import synthetic_rankings


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-bert", "bert", seed=0)


@pytest.fixture
def plain_project(researcher):
    return project_create(name="Plain project", user=researcher, completions_per_task=2, checks=[])


@pytest.fixture
def labeled_project(researcher, django_user_model):
    """12 prompts x K=3, two labelers (slightly noisy) per prompt, all submitted, plus demonstrations."""
    project = project_create(name="Reward project", user=researcher, completions_per_task=3, overlap=2, checks=[])
    labelers = [django_user_model.objects.create_user(username=f"rank-{x}", password="pw-for-tests-123") for x in "ab"]
    synthetic = synthetic_rankings(12, 3, seed=11, labelers_per_prompt=2, noise=0.4, max_words=10)
    prompts: dict[str, tuple] = {}
    for ranking in synthetic:
        if ranking.group not in prompts:
            prompt = Prompt.objects.create(project=project, text=ranking.prompt)
            completions = [
                Completion.objects.create(prompt=prompt, text=t, source=Completion.Source.IMPORTED)
                for t in ranking.completions
            ]
            Demonstration.objects.create(prompt=prompt, text="excellent clear helpful answer")
            prompts[ranking.group] = (
                prompt,
                completions,
                task_create(project=project, prompt=prompt, completions=completions),
            )
        prompt, completions, task = prompts[ranking.group]
        labeler = labelers[int(ranking.labeler[-1])]
        annotation = Annotation.objects.create(
            task=task, labeler=labeler, status=Annotation.Status.SUBMITTED, submitted_at=timezone.now()
        )
        levels = sorted(set(ranking.ranks))
        Rating.objects.bulk_create(
            Rating(annotation=annotation, completion=c, rank=levels.index(r) + 1)
            for c, r in zip(completions, ranking.ranks)
        )
    return project
