"""A decoder reward model started from a policy version (InstructGPT's initialisation), through the real worker:
the reward job trains and registers it, the score job scores with it, PPO optimises against it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.conf import settings

from config.errors import ServiceError
from labeling_app.models import Completion
from rlhf_worker.models import CompletionScore, ModelVersion
from rlhf_worker.services.jobs import job_config_validate, job_start
from rlhf_worker.training.policy_models import load_policy, save_tiny_policy
from rlhf_worker.training.reward_model import DECODER, RewardScorer, read_saved_config
from tests.rlhf_worker.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
torch.set_num_threads(1)


@pytest.fixture
def policy_version(db):
    path = save_tiny_policy(str(Path(settings.MODEL_STORE) / "tiny-policy-for-rm"), seed=0)
    return ModelVersion.objects.create(kind="policy", name="tiny sft", path=path)


def test_reward_model_from_a_policy_version_then_score_and_ppo_use_it(
    labeled_project, policy_version, training_queue, admin_user
):
    from transformers import AutoModelForSequenceClassification

    job = wait_for(
        job_start(
            kind="reward",
            config={
                "project_ids": [labeled_project.pk],
                "init_policy_version_id": policy_version.pk,
                "learning_rate": 1e-3,
                "epochs": 1,
                "batch_size": 4,
                "max_length": 256,
                "eval_fraction": 0.25,
                "device": "cpu",
            },
            user=admin_user,
        )
    )
    assert job.status == "succeeded", job.error
    reward = job.result_version
    assert reward.parent_id == policy_version.pk and "eval/accuracy" in reward.metrics
    assert read_saved_config(reward.path)["backbone_kind"] == DECODER
    hf = AutoModelForSequenceClassification.from_pretrained(reward.path)
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    # the trunk started as the policy's (the head is new): one tensor still close to the policy's after 1 epoch
    policy = load_policy(policy_version.path, "cpu")[0]
    assert torch.allclose(hf.model.norm.weight, policy.model.norm.weight, atol=0.1)

    score = wait_for(
        job_start(
            kind="score",
            config={
                "project_ids": [labeled_project.pk],
                "reward_version_id": reward.pk,
                "batch_size": 8,
                "device": "cpu",
            },
            user=admin_user,
        )
    )
    assert score.status == "succeeded", score.error
    completions = list(
        Completion.objects.filter(prompt__project=labeled_project).select_related("prompt").order_by("pk")
    )
    stored = dict(CompletionScore.objects.filter(model_version=reward).values_list("completion_id", "score"))
    expected = RewardScorer.from_pretrained(reward.path, device="cpu").score(
        [c.prompt.text for c in completions], [c.text for c in completions]
    )
    assert [stored[c.pk] for c in completions] == pytest.approx(expected.tolist(), abs=1e-5)

    ppo = wait_for(
        job_start(
            kind="ppo",
            config={
                "project_ids": [labeled_project.pk],
                "base_version_id": policy_version.pk,
                "reward_version_id": reward.pk,
                "total_episodes": 8,
                "batch_size": 4,
                "mini_batch_size": 2,
                "max_new_tokens": 6,
                "learning_rate": 1e-3,
                "device": "cpu",
            },
            user=admin_user,
        ),
        timeout=240,
    )
    assert ppo.status == "succeeded", ppo.error
    assert ppo.result_version.reward_model_id == reward.pk and ppo.step == ppo.total_steps == 2
    assert all(isinstance(s["score"], float) for s in ppo.samples)


@pytest.mark.parametrize(
    "overrides, field_name, says",
    [
        ({"init_policy_version_id": 999999}, "init_policy_version_id", "no policy model version"),
        ({"init_policy_version_id": "policy", "base_version_id": "reward"}, "init_policy_version_id", "not both"),
        (
            {"init_policy_version_id": "policy", "backbone": "/some/folder"},
            "init_policy_version_id",
            "replaces the backbone",
        ),
        ({"backbone_kind": "decoder"}, "backbone_kind", "is an encoder"),
        ({"backbone_kind": "sideways"}, "backbone_kind", "must be one of"),
    ],
)
def test_decoder_starting_point_errors_name_the_field(labeled_project, policy_version, overrides, field_name, says):
    reward = ModelVersion.objects.create(kind="reward", name="rm", path="/nowhere")
    ids = {"policy": policy_version.pk, "reward": reward.pk}
    config = {"project_ids": [labeled_project.pk], "device": "cpu"}
    config.update(
        {k: ids.get(v, v) if isinstance(v, str) and k.endswith("_version_id") else v for k, v in overrides.items()}
    )
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="reward", config=config)
    assert err.value.field == field_name and says in err.value.message


def test_the_start_form_lists_policy_versions_to_start_a_reward_model_from(policy_version):
    from rlhf_worker.forms import JobConfigForm
    from rlhf_worker.jobs import reward as reward_job

    ModelVersion.objects.create(kind="reward", name="rm", path="/nowhere")
    form = JobConfigForm(config_cls=reward_job.Config, job_kind="reward")
    choices = list(form.fields["init_policy_version_id"].choices)
    assert choices == [("", "None — use the backbone setting"), (policy_version.pk, f"#{policy_version.pk} tiny sft")]
    assert form.fields["backbone_kind"].choices == [("auto", "auto"), ("encoder", "encoder"), ("decoder", "decoder")]
