"""Jobs in 2 training processes through a real Celery worker: progress reaches the row, a cancel stops every rank
(none left running), and a job resumes from the checkpoint a 2-process run wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from labeling_app.models import Demonstration, Prompt
from rlhf_worker.models import JobMetric, ModelVersion
from rlhf_worker.services.jobs import job_cancel, job_start
from rlhf_worker.training.launch import rank_pids
from rlhf_worker.training.policy_models import load_policy
from rlhf_worker.training.checkpoint import find_checkpoint
from rlhf_worker.training.reward_model import load_for_training
from tests.rlhf_worker.helpers import finished, wait_for
from tests.rlhf_worker.jobs.test_policy_jobs import project, tiny_version  # noqa: F401 (fixtures)
from tests.rlhf_worker.jobs.test_reward_job import job_config

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_two_process_reward_job_cancels_every_rank_then_resumes_in_two_processes(
    labeled_project, backbone_dir, training_queue, admin_user
):
    config = job_config(labeled_project, backbone_dir, epochs=600, eval_every=0, num_processes=2)
    job = job_start(kind="reward", config=config, user=admin_user)
    job = wait_for(job, lambda j: j.status == "running" and j.step >= 2 or finished(j), timeout=180)
    assert job.status == "running", job.error
    assert "training in 2 processes" in job.log
    run_dir = job.output_dir / "processes"
    pids = rank_pids(run_dir)
    assert len(pids) == 2 and all(running(pid) for pid in pids)
    assert JobMetric.objects.filter(job=job, key="train/loss").exists()  # rank 0's reports reach the row

    job_cancel(job=job)
    job = wait_for(job, finished, timeout=120)
    assert job.status == "cancelled", job.error
    assert 2 <= job.step < job.total_steps
    assert not any(running(pid) for pid in pids), "a training process outlived the cancel"
    assert find_checkpoint(job.output_dir) is not None  # rank 0 saved at the step every rank stopped at
    assert job.result_version is None and not ModelVersion.objects.exists()
    stopped_at = max(JobMetric.objects.filter(job=job).values_list("step", flat=True))

    # a short run left: resume in 2 processes from the checkpoint the 2-process run wrote
    resumed = job_start(kind="reward", config={**config, "resume_job_id": job.pk}, user=admin_user)
    resumed = wait_for(resumed, lambda j: j.status == "running" and j.step > stopped_at or finished(j), timeout=180)
    assert resumed.status == "running", resumed.error
    steps = sorted(set(JobMetric.objects.filter(job=resumed, key="train/loss").values_list("step", flat=True)))
    assert steps[0] == stopped_at + 1  # it continued from the checkpoint, not from step 1
    job_cancel(job=resumed)
    resumed = wait_for(resumed, finished, timeout=120)
    assert resumed.status == "cancelled", resumed.error
    assert not any(running(pid) for pid in rank_pids(resumed.output_dir / "processes"))


def test_two_process_reward_job_succeeds_and_registers_the_model(
    labeled_project, backbone_dir, training_queue, admin_user
):
    job = job_start(
        kind="reward", config=job_config(labeled_project, backbone_dir, epochs=1, num_processes=2), user=admin_user
    )
    job = wait_for(job, finished, timeout=240)
    assert job.status == "succeeded", job.error
    assert job.step == job.total_steps > 0 and job.progress == 1.0
    version = job.result_version
    assert Path(version.path, "model.safetensors").is_file()
    for key in ("train/loss", "eval/loss", "eval/accuracy"):
        assert key in version.metrics and JobMetric.objects.filter(job=job, key=key).exists(), key


def test_two_process_sft_and_ppo_jobs_register_versions(
    project, tiny_version, backbone_dir, training_queue, admin_user
):
    for prompt in Prompt.objects.filter(project=project):
        Demonstration.objects.create(prompt=prompt, text="aaaa")
    sft = job_start(
        kind="sft",
        config={
            "project_ids": [project.pk],
            "base_version_id": tiny_version.pk,
            "epochs": 2,
            "learning_rate": 5e-3,
            "batch_size": 3,
            "eval_fraction": 0.0,
            "warmup_steps": 0,
            "num_processes": 2,
        },
        user=admin_user,
    )
    sft = wait_for(sft, finished, timeout=240)
    assert sft.status == "succeeded", sft.error
    assert "training in 2 processes" in sft.log
    assert JobMetric.objects.filter(job=sft, key="train/loss").count() == sft.total_steps == 2
    assert load_policy(sft.result_version.path, "cpu")

    model, tokenizer = load_for_training(backbone_dir)  # every rank loads the reward model from its folder
    reward_path = model.save_pretrained(
        Path(settings.MODEL_STORE) / "tiny-reward", tokenizer=tokenizer, extra={"max_length": 64}
    )
    reward = ModelVersion.objects.create(kind="reward", name="tiny reward", path=str(reward_path))
    ppo = job_start(
        kind="ppo",
        config={
            "project_ids": [project.pk],
            "base_version_id": sft.result_version.pk,
            "reward_version_id": reward.pk,
            "total_episodes": 8,
            "batch_size": 4,
            "mini_batch_size": 2,
            "max_new_tokens": 6,
            "learning_rate": 1e-3,
            "num_processes": 2,
        },
        user=admin_user,
    )
    ppo = wait_for(ppo, finished, timeout=240)
    assert ppo.status == "succeeded", ppo.error
    assert "training in 2 processes" in ppo.log
    version = ppo.result_version
    assert version.parent_id == sft.result_version.pk and version.reward_model_id == reward.pk
    assert JobMetric.objects.filter(job=ppo, key="objective/scores").count() == 2
    assert ppo.samples and {"prompt", "response", "score"} <= set(ppo.samples[0])  # rank 0's samples reach the row
    assert load_policy(version.path, "cpu")
