"""One whole autopilot cycle through a real Celery worker with tiny random models: N rankings → the scheduler's tick
starts it → reward (trained on the rankings) → score (with that reward model) → generate (new ranking tasks from the
policy), each step started by the runner when the previous job ended; auto-promote promotes the reward model."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from labeling_app.models import Annotation, Completion, RankingTask, Rating
from rlhf_worker.models import CompletionScore, JobPreset, ModelVersion, PipelineRun
from rlhf_worker.services.autopilot import autopilot_configure, autopilots_tick
from rlhf_worker.training.policy_models import save_tiny_policy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def tiny_presets(backbone_dir: str) -> dict[str, str]:
    """Saved presets for a run of seconds on a CPU (what an admin would save on the start forms)."""
    configs = {
        "reward": {
            "backbone": backbone_dir,
            "learning_rate": 1e-3,
            "epochs": 1,
            "batch_size": 4,
            "max_length": 48,
            "eval_fraction": 0.25,
            "eval_every": 2,
            "device": "cpu",
        },
        "score": {"batch_size": 16, "device": "cpu"},
        "generate": {"max_new_tokens": 4, "batch_size": 8, "device": "cpu"},
    }
    for kind, config in configs.items():
        JobPreset.objects.create(kind=kind, name="tiny", config=config)
    return {kind: "tiny" for kind in configs}


def wait_for_run(run: PipelineRun, timeout: float = 240) -> PipelineRun:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.is_active:
            return run
        time.sleep(0.2)
    raise AssertionError(
        f"cycle {run.pk} still {run.status} with steps "
        f"{[(s.kind, s.job and s.job.status) for s in run.steps.select_related('job')]}"
    )


def test_a_whole_cycle_runs_on_a_real_worker(labeled_project, backbone_dir, training_queue, admin_user, settings):
    settings.DEFAULT_POLICY = save_tiny_policy(str(Path(django_settings.MODEL_STORE) / "tiny-policy"), seed=0)
    tasks_before = set(RankingTask.objects.filter(project=labeled_project).values_list("pk", flat=True))
    autopilot = autopilot_configure(
        project=labeled_project,
        every_n_rankings=2,
        include_ppo=False,
        auto_promote=True,
        presets=tiny_presets(backbone_dir),
        user=admin_user,
    )
    assert autopilots_tick()["started"] == 0, "the rankings before the autopilot do not count"

    # two more rankings by people
    task = RankingTask.objects.filter(project=labeled_project).first()
    for name in ("carol", "dave"):
        person = type(admin_user).objects.create_user(username=name, password="pw-for-tests-123")
        RankingTask.objects.filter(pk=task.pk).update(overlap=task.overlap + 2)
        annotation = Annotation.objects.create(
            task=task, labeler=person, status="submitted", submitted_at=timezone.now()
        )
        for rank, tc in enumerate(task.task_completions.order_by("position"), start=1):
            Rating.objects.create(annotation=annotation, completion_id=tc.completion_id, rank=rank)

    assert autopilots_tick()["started"] == 1
    run = wait_for_run(PipelineRun.objects.get(autopilot=autopilot))
    assert run.status == "succeeded", run.reason
    steps = list(run.steps.select_related("job").order_by("position"))
    assert [(s.kind, s.job.status) for s in steps] == [
        ("reward", "succeeded"),
        ("score", "succeeded"),
        ("generate", "succeeded"),
    ]
    assert steps[0].job.finished_at <= steps[1].job.created_at and steps[1].job.finished_at <= steps[2].job.created_at

    version = run.reward_version
    assert version == steps[0].job.result_version and version.is_promoted
    assert run.promotion_note.startswith(f"Promoted reward model #{version.pk}")
    completions = Completion.objects.filter(prompt__project=labeled_project)
    assert (
        CompletionScore.objects.filter(model_version=version).count() == len(tasks_before) * 3
    )  # the completions then
    new_tasks = RankingTask.objects.filter(project=labeled_project).exclude(pk__in=tasks_before)
    assert new_tasks.count() == 12, "one new task per prompt, from the generation step"
    assert completions.filter(source="model").count() == 12 * 3
    assert min(new_tasks.values_list("pk", flat=True)) > max(tasks_before), "the cycle's tasks are the newest"
    assert not ModelVersion.objects.filter(kind="policy", is_promoted=True).exists()
