"""Policy jobs (generate, sft, ppo) through the real Celery worker on PostgreSQL + Redis, with tiny models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.test import Client
from django.urls import reverse

from labeling_app.models import Completion, Demonstration, Prompt, RankingTask
from labeling_app.services.projects import project_create
from labeling_app.templatetags.rlhf_format import num
from config.errors import ServiceError
from rlhf_worker.jobs import generate as generate_job
from rlhf_worker.jobs import policy_common
from rlhf_worker.models import JobMetric, ModelVersion, TrainingJob
from rlhf_worker.services.jobs import job_config_validate, job_start
from rlhf_worker.training.policy_models import load_policy, save_tiny_policy
from tests.rlhf_worker.helpers import wait_for

torch.set_num_threads(1)


@pytest.fixture
def tiny_version(db):
    path = save_tiny_policy(str(Path(settings.MODEL_STORE) / "tiny-policy"), seed=0)
    return ModelVersion.objects.create(kind="policy", name="tiny", path=path)


@pytest.fixture
def project(db, researcher):
    project = project_create(name="Policy jobs", user=researcher, completions_per_task=2, overlap=1)
    Prompt.objects.create(project=project, text="say a")
    Prompt.objects.create(project=project, text="hello there")
    Prompt.objects.create(
        project=project,
        text="hi",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    return project


class RecordingCtx:
    """A JobContext stand-in that records how many tasks exist at each progress report."""

    def __init__(self, config, out_dir):
        self.config, self.out_dir, self.reports = config, out_dir, []

    def report(self, step, total, metrics=None, samples=None):
        self.reports.append((step, total, RankingTask.objects.count(), Completion.objects.count()))

    def should_stop(self):
        return False

    def log(self, text):
        pass


@pytest.mark.django_db
def test_generate_writes_tasks_as_each_prompt_finishes(project, tiny_version, tmp_path):
    cfg = generate_job.Config(
        project_ids=[project.pk], policy_version_id=tiny_version.pk, batch_size=2, max_new_tokens=6, temperature=1.0
    )
    ctx = RecordingCtx(cfg, tmp_path)
    generate_job.run(None, ctx)
    # one prompt (K=2 rows) per batch: a task appears after every batch, not at the end
    assert ctx.reports == [(1, 3, 1, 2), (2, 3, 2, 4), (3, 3, 3, 6)]


pytestmark_tx = pytest.mark.django_db(transaction=True)


@pytestmark_tx
def test_generate_job_through_celery(project, tiny_version, training_queue, admin_user):
    job = job_start(
        kind="generate",
        config={
            "project_ids": [project.pk],
            "policy_version_id": tiny_version.pk,
            "max_new_tokens": 8,
            "temperature": 0.9,
            "top_p": 0.95,
            "seed": 3,
        },
        user=admin_user,
    )
    job = wait_for(job)
    assert job.status == "succeeded", job.error
    completions = Completion.objects.filter(prompt__project=project)
    assert completions.count() == 6
    assert all(c.model_version_id == tiny_version.pk and c.source == "model" for c in completions)
    assert {"temperature": 0.9, "top_p": 0.95, "max_new_tokens": 8, "seed": 3}.items() <= completions[
        0
    ].sampling.items()
    tasks = RankingTask.objects.filter(project=project)
    assert tasks.count() == 3 and all(t.completions.count() == 2 for t in tasks)
    assert JobMetric.objects.filter(job=job, key="generate/tasks").order_by("-step").first().value == 3
    assert job.samples and "completion" in job.samples[0]
    assert job.progress == 1.0


@pytestmark_tx
def test_sft_job_registers_a_child_version(project, tiny_version, training_queue, admin_user):
    for prompt in Prompt.objects.filter(project=project):
        Demonstration.objects.create(prompt=prompt, text="aaaa")
    job = job_start(
        kind="sft",
        config={
            "project_ids": [project.pk],
            "base_version_id": tiny_version.pk,
            "epochs": 3,
            "learning_rate": 5e-3,
            "batch_size": 2,
            "eval_fraction": 0.34,
            "warmup_steps": 0,
        },
        user=admin_user,
    )
    job = wait_for(job)
    assert job.status == "succeeded", job.error
    version = job.result_version
    assert version.kind == "policy" and version.parent_id == tiny_version.pk and version.training_job_id == job.pk
    assert version.metrics["eval/loss"] < version.metrics["eval/loss_before"]
    assert len(version.data_snapshot["demonstration_ids"]) == 3
    assert load_policy(version.path, "cpu")
    assert JobMetric.objects.filter(job=job, key="train/loss").count() == job.total_steps


@pytest.mark.django_db
def test_sft_job_without_demonstrations_is_refused_at_start_with_a_clear_error(project, tiny_version, admin_user):
    with pytest.raises(ServiceError) as err:
        job_start(kind="sft", config={"project_ids": [project.pk], "base_version_id": tiny_version.pk}, user=admin_user)
    assert err.value.field == "project_ids" and "no demonstrations" in err.value.message
    assert not TrainingJob.objects.exists()


@pytestmark_tx
def test_ppo_job_records_parent_reward_model_metrics_and_samples(
    project, tiny_version, training_queue, admin_user, monkeypatch
):
    from rlhf_worker.jobs import ppo as ppo_job

    reward_version = ModelVersion.objects.create(kind="reward", name="likes a", path="/nonexistent")
    seen = []

    def fake_loader(version, device):
        seen.append(version.pk)
        return lambda prompts, responses: torch.tensor([r.count("a") / max(len(r), 1) for r in responses])

    monkeypatch.setattr(ppo_job, "load_reward_fn", fake_loader)
    job = job_start(
        kind="ppo",
        config={
            "project_ids": [project.pk],
            "base_version_id": tiny_version.pk,
            "reward_version_id": reward_version.pk,
            "total_episodes": 12,
            "batch_size": 4,
            "mini_batch_size": 2,
            "max_new_tokens": 6,
            "learning_rate": 1e-3,
        },
        user=admin_user,
    )
    job = wait_for(job)
    assert job.status == "succeeded", job.error
    assert seen == [reward_version.pk]
    version = job.result_version
    assert version.parent_id == tiny_version.pk and version.reward_model_id == reward_version.pk
    for key in (
        "objective/scores",
        "objective/kl",
        "objective/entropy",
        "policy/clipfrac",
        "policy/approxkl",
        "loss/value",
        "loss/policy",
        "response/length",
    ):
        assert JobMetric.objects.filter(job=job, key=key).count() == 3, key
    assert job.samples and {"prompt", "response", "score"} <= set(job.samples[0])
    assert load_policy(version.path, "cpu")

    # the starting and the trained policy were scored on the same prompts: both numbers on both rows
    prompt_ids = sorted(project.prompts.values_list("pk", flat=True))
    assert version.data_snapshot["eval_prompt_ids"] == prompt_ids
    assert version.metrics["eval/prompts"] == 3 and version.metrics["eval/reward_model_id"] == reward_version.pk
    tiny_version.refresh_from_db()
    base_eval = tiny_version.metrics
    assert base_eval["eval/prompt_ids"] == prompt_ids and base_eval["eval/compared_with_id"] == version.pk
    assert base_eval["eval/reward_mean"] == version.metrics["eval/base_reward_mean"]
    assert base_eval["eval/reward_model_id"] == reward_version.pk and base_eval["eval/job_id"] == job.pk
    assert 0 <= version.metrics["eval/cut_fraction"] <= 1
    assert "reward-model score on 3 prompts" in job.log

    # the model versions page shows both scores: the starting policy's on its own row, and beside the new one's
    client = Client()
    client.force_login(admin_user)
    html = client.get(reverse("jobs:models")).content.decode()
    rows = {int(pk): row for pk, row in re.findall(r'<tr id="version-(\d+)">(.*?)</tr>', html, re.S)}
    base_text, new_text = num(base_eval["eval/reward_mean"]), num(version.metrics["eval/reward_mean"])
    new_cell = re.search(r'class="policy-score">(.*?)</td>', rows[version.pk], re.S).group(1)
    base_cell = re.search(r'class="policy-score">(.*?)</td>', rows[tiny_version.pk], re.S).group(1)
    assert (
        new_cell.strip().startswith(new_text)
        and f"start #{tiny_version.pk}: {base_text} on the same prompts" in new_cell
    )
    assert base_cell.strip().startswith(base_text) and "mean on 3 eval prompts" in base_cell
    assert f"PPO job #{job.pk}" in base_cell


@pytest.mark.django_db
def test_reward_and_policy_resolution(tiny_version, monkeypatch):
    with pytest.raises(ServiceError) as err:
        policy_common.resolve_reward(None, field_name="reward_version_id")
    assert err.value.field == "reward_version_id"
    with pytest.raises(ServiceError):
        policy_common.resolve_policy(10**9, field_name="base_version_id")
    monkeypatch.setattr(policy_common, "default_policy_source", lambda: tiny_version.path + "-default")
    default = policy_common.resolve_policy(None, field_name="base_version_id")
    assert default.name == policy_common.DEFAULT_POLICY_NAME
    assert policy_common.resolve_policy(None, field_name="base_version_id") == default, "registered once"
    tiny_version.is_promoted = True
    tiny_version.save()
    assert policy_common.resolve_policy(None, field_name="base_version_id") == tiny_version


@pytest.mark.django_db
def test_job_configs_name_the_wrong_field(project, tiny_version):
    pid = project.pk
    for kind, data, field in [
        ("generate", {"project_ids": [pid], "date_to": "2000-01-01"}, "project_ids"),  # no prompts that old
        ("generate", {"project_ids": [pid + 1000]}, "project_ids"),
        ("generate", {"project_ids": [pid], "date_from": "yesterday"}, "date_from"),
        ("generate", {"project_ids": [pid], "policy_version_id": tiny_version.pk + 1000}, "policy_version_id"),
        ("sft", {"project_ids": [pid], "epochs": 0}, "epochs"),
        ("ppo", {"project_ids": [pid], "mini_batch_size": 3}, "mini_batch_size"),
        ("ppo", {"project_ids": [pid], "reward_version_id": "abc"}, "reward_version_id"),
        ("ppo", {"project_ids": [pid], "reward_version_id": tiny_version.pk}, "reward_version_id"),
    ]:
        with pytest.raises(ServiceError) as err:
            job_config_validate(kind=kind, config=data)
        assert err.value.field == field, (data, err.value)


@pytestmark_tx
def test_lora_settings_from_the_start_form_reach_training_and_the_version_generates(
    project, tiny_version, training_queue, admin_user
):
    """adapter / LoRA / checkpointing fields of the admin form -> job config -> SFT; the LoRA version then generates."""
    import json

    from django.test import Client
    from django.urls import reverse

    from rlhf_worker.forms import JobConfigForm
    from rlhf_worker.jobs import sft as sft_job
    from rlhf_worker.models import TrainingJob

    for prompt in Prompt.objects.filter(project=project):
        Demonstration.objects.create(prompt=prompt, text="aaaa")
    blank = JobConfigForm(config_cls=sft_job.Config, job_kind="sft")
    data = {
        name: field.initial
        for name, field in blank.fields.items()
        if field.initial is not None and field.initial is not False
    }
    data.update(
        {
            "project_ids": [str(project.pk)],
            "base_version_id": str(tiny_version.pk),
            "epochs": "2",
            "batch_size": "2",
            "learning_rate": "0.005",
            "adapter": "lora",
            "lora_rank": "4",
            "lora_alpha": "8",
            "lora_target_modules": "q_proj, v_proj",
            "gradient_checkpointing": "on",
        }
    )
    client = Client()
    client.force_login(admin_user)
    response = client.post(reverse("jobs:start", kwargs={"kind": "sft"}), data)
    assert response.status_code == 302, [line for line in response.content.decode().splitlines() if "error" in line]
    job = wait_for(TrainingJob.objects.get(kind="sft"))
    assert job.status == "succeeded", job.error
    assert {
        "adapter": "lora",
        "lora_rank": 4,
        "lora_alpha": 8.0,
        "lora_target_modules": ["q_proj", "v_proj"],
        "gradient_checkpointing": True,
    }.items() <= job.config.items()
    adapter_config = json.loads((Path(job.result_version.path) / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"] and adapter_config["r"] == 4

    generated = wait_for(
        job_start(
            kind="generate",
            config={"project_ids": [project.pk], "policy_version_id": job.result_version.pk, "max_new_tokens": 4},
            user=admin_user,
        )
    )
    assert generated.status == "succeeded", generated.error
    assert Completion.objects.filter(model_version=job.result_version).count() == 6
