"""The job start form built from a Config dataclass: field types, pickers, and all errors at once."""

from __future__ import annotations

import dataclasses

import pytest
from django.http import QueryDict

from rlhf_worker.forms import JobConfigForm, collect_config_errors
from rlhf_worker.models import ModelVersion
from rlhf_worker.training.config_base import ConfigError


@dataclasses.dataclass(frozen=True)
class PPOLikeConfig:
    policy_version_id: int | None = dataclasses.field(default=None, metadata={"help": "Policy to start from."})
    reward_version_id: int | None = dataclasses.field(default=None, metadata={"help": "Reward model to optimise."})
    stop_words: list[str] = dataclasses.field(default_factory=lambda: ["</s>"], metadata={"help": "Stop strings."})
    max_new_tokens: int | None = dataclasses.field(default=None, metadata={"help": "Cap on response length."})
    kl_coef: float = dataclasses.field(default=0.05, metadata={"help": "KL penalty."})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "Episodes per step."})
    mini_batch_size: int = dataclasses.field(default=4, metadata={"help": "Episodes per minibatch."})
    resume_job_id: int | None = dataclasses.field(default=None, metadata={"help": "Job to continue."})

    def validate(self):
        if self.kl_coef < 0:
            raise ConfigError("kl_coef", "must be >= 0")
        if self.batch_size < 1:
            raise ConfigError("batch_size", "must be at least 1")
        if self.batch_size % self.mini_batch_size:
            raise ConfigError("mini_batch_size", "must divide batch_size")


def form(data: dict | None = None, **kwargs) -> JobConfigForm:
    qd = None
    if data is not None:
        qd = QueryDict(mutable=True)
        for key, value in data.items():
            qd.setlist(key, value if isinstance(value, list) else [value])
    return JobConfigForm(qd, config_cls=PPOLikeConfig, job_kind="ppo", **kwargs)


BASE = {
    "policy_version_id": "",
    "reward_version_id": "",
    "stop_words": "</s>",
    "max_new_tokens": "",
    "kl_coef": "0.05",
    "batch_size": "8",
    "mini_batch_size": "4",
}


@pytest.mark.django_db
def test_version_pickers_list_the_right_registry_and_default():
    policy = ModelVersion.objects.create(kind="policy", name="sft-a", path="/a", is_promoted=True)
    reward = ModelVersion.objects.create(kind="reward", name="rm-a", path="/r")
    f = form()
    assert [c[0] for c in f.fields["policy_version_id"].choices] == ["", policy.pk]
    assert f"the promoted one: #{policy.pk} sft-a" in f.fields["policy_version_id"].choices[0][1]
    assert [c[0] for c in f.fields["reward_version_id"].choices] == ["", reward.pk]
    from rlhf_worker.models import TrainingJob

    ppo_job = TrainingJob.objects.create(kind="ppo", status="cancelled", step=7)
    TrainingJob.objects.create(kind="sft", status="failed")
    choices = form().fields["resume_job_id"].choices
    assert [c[0] for c in choices] == ["", ppo_job.pk] and "cancelled" in choices[1][1] and "step 7" in choices[1][1]
    ok = form({**BASE, "policy_version_id": str(policy.pk), "stop_words": "</s>, ###", "max_new_tokens": "64"})
    assert ok.is_valid(), ok.errors
    assert ok.config_dict == {
        "policy_version_id": policy.pk,
        "reward_version_id": None,
        "stop_words": ["</s>", "###"],
        "max_new_tokens": 64,
        "kl_coef": 0.05,
        "batch_size": 8,
        "mini_batch_size": 4,
        "resume_job_id": None,
    }
    assert form({**BASE, "reward_version_id": "999999"}).errors["reward_version_id"]  # not in the registry


@pytest.mark.django_db
def test_every_wrong_field_is_reported_at_once_including_cross_field_checks():
    f = form({**BASE, "kl_coef": "-1", "batch_size": "6"})
    assert not f.is_valid()
    assert f.errors["kl_coef"] == ["must be >= 0"]
    assert f.errors["mini_batch_size"] == ["must divide batch_size"]
    assert f.config_dict is None


def test_collect_config_errors_stops_when_a_default_is_itself_invalid():
    @dataclasses.dataclass(frozen=True)
    class NeedsProjects:
        project_ids: list[int] = dataclasses.field(default_factory=list)
        steps: int = 1

        def validate(self):
            if not self.project_ids:
                raise ConfigError("project_ids", "choose at least one project")
            if self.steps < 1:
                raise ConfigError("steps", "must be at least 1")

    config, errors = collect_config_errors(NeedsProjects, {"project_ids": [], "steps": 0})
    assert config is None and errors == {"project_ids": "choose at least one project"}
    config, errors = collect_config_errors(NeedsProjects, {"project_ids": [1], "steps": 0})
    assert errors == {"steps": "must be at least 1"}
    config, errors = collect_config_errors(NeedsProjects, {"project_ids": [1], "steps": 2})
    assert errors == {} and config.steps == 2
