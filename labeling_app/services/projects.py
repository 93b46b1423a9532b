"""Creating projects, prompts, completions and ranking tasks."""
from __future__ import annotations

import random
from typing import Iterable, Sequence

from django.db import transaction

from labeling_app.models import DEFAULT_CHECKS, CheckQuestion, Completion, Project, Prompt, RankingTask, TaskCompletion


def project_create(*, name: str, user=None, instructions: str = "", completions_per_task: int = 4, overlap: int = 1,
                   lease_minutes: int = 30, checks: Sequence[tuple[str, str]] | None = None) -> Project:
    """A project with its yes/no checks (InstructGPT's defaults unless given)."""
    with transaction.atomic():
        project = Project.objects.create(
            name=name, instructions=instructions, completions_per_task=completions_per_task,
            overlap=overlap, lease_minutes=lease_minutes, created_by=user,
        )
        CheckQuestion.objects.bulk_create(
            CheckQuestion(project=project, key=key, question=question, position=i)
            for i, (key, question) in enumerate(DEFAULT_CHECKS if checks is None else checks)
        )
    return project


def task_create(*, project: Project, prompt: Prompt, completions: Iterable[Completion], shuffle_seed: int | None = None) -> RankingTask:
    """A ranking task over exactly the project's K completions of one prompt."""
    completions = list(completions)
    if len(completions) != project.completions_per_task:
        raise ValueError(
            f"project {project.name!r} ranks {project.completions_per_task} completions per task, got {len(completions)}"
        )
    if any(c.prompt_id != prompt.pk for c in completions):
        raise ValueError("every completion of a task must answer the task's prompt")
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(completions)
    with transaction.atomic():
        task = RankingTask.objects.create(project=project, prompt=prompt, overlap=project.overlap)
        TaskCompletion.objects.bulk_create(
            TaskCompletion(task=task, completion=c, position=i) for i, c in enumerate(completions)
        )
    return task


def model_completions_create(*, prompt_id: int, texts: Sequence[str], model_version_id: int, sampling: dict,
                             create_task: bool, shuffle_seed: int | None = None) -> list[Completion]:
    """A policy version's samples of one prompt as model completions (each stores `sampling` and its sample
    index), plus, with `create_task`, the ranking task over them: one transaction, so a task never appears
    with only some of its completions."""
    prompt = Prompt.objects.select_related("project").get(pk=prompt_id)
    with transaction.atomic():
        completions = Completion.objects.bulk_create(
            Completion(prompt=prompt, text=text, source=Completion.Source.MODEL, model_version_id=model_version_id,
                       sampling={**sampling, "sample_index": i})
            for i, text in enumerate(texts)
        )
        if create_task:
            task_create(project=prompt.project, prompt=prompt, completions=completions, shuffle_seed=shuffle_seed)
    return completions
