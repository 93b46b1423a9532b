"""Shared by the autopilot tests: a project with tasks to label, labelers, rankings on demand, reward versions."""

from __future__ import annotations

import pytest

from labeling_app.models import Completion, Prompt
from labeling_app.services.projects import project_create, task_create
from rlhf_worker.jobs.runner import _finish
from rlhf_worker.models import ModelVersion, PipelineRun, TrainingJob
from tests.conftest import make_user
from tests.labeling_app.researcher_fixtures import label


@pytest.fixture
def project(db, researcher, settings):
    """Six prompts, each with a task over two imported completions; nothing labeled yet."""
    settings.DEFAULT_POLICY = "/models/default-policy"  # trusted as given: the start checks pass, no job runs here
    project = project_create(name="Autopiloted", user=researcher, completions_per_task=2, overlap=2, checks=[])
    for i in range(6):
        prompt = Prompt.objects.create(project=project, text=f"prompt {i}")
        task_create(
            project=project,
            prompt=prompt,
            completions=[
                Completion.objects.create(prompt=prompt, text=f"answer {i}{j}", source="imported") for j in range(2)
            ],
        )
    return project


@pytest.fixture
def labelers(db):
    return [make_user(name, "labeler") for name in ("ana", "ben")]


def rank(project, labelers, count: int) -> None:
    """`count` more submitted human rankings in the project."""
    done = 0
    for task in project.tasks.order_by("pk"):
        for labeler in labelers:
            if done == count:
                return
            if not task.annotations.filter(labeler=labeler).exists():
                label(task, labeler, [1, 2])
                done += 1
    assert done == count, "the fixture project has no more tasks to label"


def current_job(run: PipelineRun) -> TrainingJob:
    return run.steps.order_by("-position").first().job


def reward_version(job: TrainingJob, accuracy: float | None) -> ModelVersion:
    metrics = {} if accuracy is None else {"eval/accuracy": accuracy}
    return ModelVersion.objects.create(
        kind="reward",
        name=f"reward-{job.pk}",
        path=f"/models/reward-{job.pk}",
        training_job=job,
        metrics=metrics,
        data_snapshot={"project_ids": job.config["project_ids"]},
    )


def succeed(job: TrainingJob, version: ModelVersion | None = None) -> None:
    """The job ends as the runner ends a job that succeeded (which tells the autopilot)."""
    job.refresh_from_db()
    _finish(job, TrainingJob.Status.SUCCEEDED, version=version, log="succeeded")
