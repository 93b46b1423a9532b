"""Resuming SFT and PPO jobs through a real Celery worker: a cancelled job leaves a checkpoint, its page offers
Resume (a running one does not, and is refused), the API resumes with the same settings and refuses other ones,
and the new job goes on from the checkpoint's step to a registered version."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from labeling_app.models import Demonstration, Prompt
from rlhf_worker.models import JobMetric, ModelVersion, TrainingJob
from rlhf_worker.services.jobs import job_cancel, job_start
from rlhf_worker.training.checkpoint import find_checkpoint
from rlhf_worker.training.launch import rank_pids
from rlhf_worker.training.policy_models import load_policy
from rlhf_worker.training.reward_model import load_for_training
from tests.rlhf_worker.helpers import finished, wait_for
from tests.rlhf_worker.jobs.test_multiprocess_jobs import running
from tests.rlhf_worker.jobs.test_policy_jobs import project, tiny_version  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_of(client: Client, job: TrainingJob) -> str:
    return client.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()


def loss_steps(job: TrainingJob) -> list[int]:
    return sorted(set(JobMetric.objects.filter(job=job, key="train/loss").values_list("step", flat=True)))


def test_a_cancelled_two_process_sft_job_resumes_from_its_page_in_two_processes(
    project,  # noqa: F811
    tiny_version,  # noqa: F811
    training_queue,
    admin_user,
):
    for prompt in Prompt.objects.filter(project=project):
        for text in ("aaaa", "ab ab", "a b c", "aaa bbb"):
            Demonstration.objects.create(prompt=prompt, text=text)
    config = {
        "project_ids": [project.pk],
        "base_version_id": tiny_version.pk,
        "epochs": 100,  # 600 steps: long enough to cancel mid-run
        "batch_size": 2,
        "learning_rate": 1e-3,
        "eval_fraction": 0.0,
        "warmup_steps": 0,
        "device": "cpu",
        "num_processes": 2,
    }
    job = job_start(kind="sft", config=config, user=admin_user)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 2 or finished(j), timeout=180)
    assert job.status == "running", job.error
    client = admin_client(admin_user)
    assert 'id="resume-job"' not in page_of(client, job)  # nothing to resume while it runs
    refused = client.post(reverse("jobs:resume", kwargs={"pk": job.pk}), follow=True).content.decode()
    assert f"Could not resume job #{job.pk}: SFT job {job.pk} is still running" in refused
    assert TrainingJob.objects.count() == 1
    pids = rank_pids(job.output_dir / "processes")

    job_cancel(job=job)
    job = wait_for(job, finished, timeout=120)
    assert job.status == "cancelled", job.error
    assert 2 <= job.step < job.total_steps == 600
    assert not any(running(pid) for pid in pids), "a training process outlived the cancel"
    assert find_checkpoint(job.output_dir) is not None and job.result_version is None
    stopped_at = loss_steps(job)[-1]

    assert 'id="resume-job"' in page_of(client, job)
    response = client.post(reverse("jobs:resume", kwargs={"pk": job.pk}))
    resumed = TrainingJob.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse("jobs:detail", kwargs={"pk": resumed.pk})
    assert resumed.config == {**job.config, "resume_job_id": job.pk}
    resumed = wait_for(resumed, finished, timeout=300)
    assert resumed.status == "succeeded", resumed.error
    assert "training in 2 processes" in resumed.log and f"resuming job {job.pk}" in resumed.log
    steps = loss_steps(resumed)
    assert steps[0] == stopped_at + 1 and steps[-1] == resumed.total_steps == 600  # from the checkpoint, not step 1
    version = resumed.result_version
    assert version.parent_id == tiny_version.pk and version.data_snapshot["resumed_from_job"] == job.pk
    assert sorted(version.data_snapshot["demonstration_ids"]) == sorted(
        Demonstration.objects.values_list("pk", flat=True)
    )
    assert load_policy(version.path, "cpu")
    assert find_checkpoint(resumed.output_dir) is None  # the finished run deleted its own checkpoint
    assert 'id="resume-job"' not in page_of(client, resumed)


def test_a_cancelled_ppo_job_resumes_through_the_api_with_its_settings_only(
    project,  # noqa: F811
    tiny_version,  # noqa: F811
    backbone_dir,
    training_queue,
    admin_user,
):
    model, tokenizer = load_for_training(backbone_dir)
    reward_path = model.save_pretrained(
        Path(settings.MODEL_STORE) / "tiny-reward", tokenizer=tokenizer, extra={"max_length": 64}
    )
    reward = ModelVersion.objects.create(kind="reward", name="tiny reward", path=str(reward_path))
    config = {
        "project_ids": [project.pk],
        "base_version_id": tiny_version.pk,
        "reward_version_id": reward.pk,
        # 600 steps of 8 tokens: long enough to cancel mid-run on a quiet machine (200 steps of 4 tokens once
        # finished before the cancel was seen).
        "total_episodes": 2 * 600,
        "batch_size": 2,
        "samples_per_prompt": 2,  # one prompt's two answers per step, against each other
        "mini_batch_size": 2,
        "ppo_epochs": 1,
        "max_new_tokens": 8,
        "learning_rate": 1e-3,
        "trainable_layers": 1,
        "eval_prompts": 2,
        "device": "cpu",
        "num_processes": 1,
    }
    job = job_start(kind="ppo", config=config, user=admin_user)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 2 or finished(j), timeout=180)
    assert job.status == "running", job.error
    job_cancel(job=job)
    job = wait_for(job, finished, timeout=120)
    assert job.status == "cancelled", job.error
    assert 2 <= job.step < job.total_steps == 600
    assert find_checkpoint(job.output_dir) is not None
    stopped_at = max(JobMetric.objects.filter(job=job, key="objective/scores").values_list("step", flat=True))

    api = admin_client(admin_user)
    start = reverse("api:jobs-start")
    refused = api.post(
        start,
        {"kind": "ppo", "config": {**config, "resume_job_id": job.pk, "learning_rate": 2e-3}},
        content_type="application/json",
    )
    assert refused.status_code == 400
    body = refused.json()
    assert list(body["errors"]) == ["resume_job_id"] and "learning_rate 0.001 -> 0.002" in body["detail"]
    assert TrainingJob.objects.count() == 1

    response = api.post(
        start, {"kind": "ppo", "config": {**config, "resume_job_id": job.pk}}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    resumed = wait_for(TrainingJob.objects.get(pk=response.json()["id"]), finished, timeout=300)
    assert resumed.status == "succeeded", resumed.error
    steps = sorted(set(JobMetric.objects.filter(job=resumed, key="objective/scores").values_list("step", flat=True)))
    assert steps[0] == stopped_at + 1 and steps[-1] == resumed.total_steps == 600
    version = resumed.result_version
    assert version.parent_id == tiny_version.pk and version.reward_model_id == reward.pk
    assert version.data_snapshot["resumed_from_job"] == job.pk and version.metrics["train/steps"] == 600
    # the starting policy's evaluation came through the checkpoint: before and after are both there
    assert "eval/reward_mean" in version.metrics and "eval/base_reward_mean" in version.metrics
    assert load_policy(version.path, "cpu")

    # a job that finished deleted its checkpoint: nothing to resume from
    refused = api.post(
        start, {"kind": "ppo", "config": {**config, "resume_job_id": resumed.pk}}, content_type="application/json"
    )
    assert refused.status_code == 400 and f"PPO job {resumed.pk} left no checkpoint" in refused.json()["detail"]
