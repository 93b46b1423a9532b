"""The job registry and who validates a job's config: the service once, the runner only what can vanish."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from config.errors import ServiceError
from rlhf_worker.jobs import JOB_MODULES, job_module
from rlhf_worker.jobs.runner import execute_job
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.services.jobs import job_start
from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.policy_models import save_tiny_policy
from tests.rlhf_worker.helpers import form_defaults

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_job_kind_has_one_registered_module_with_config_check_and_run():
    assert set(JOB_MODULES) == set(TrainingJob.Kind.values)
    for kind in TrainingJob.Kind.values:
        module = job_module(kind)
        assert module.__name__ == f"rlhf_worker.jobs.{kind}", kind
        assert dataclasses.is_dataclass(module.Config) and callable(module.Config.validate), kind
        assert callable(module.check) and callable(module.run), kind
        assert (module.__doc__ or "").strip(), kind
    with pytest.raises(LookupError):
        job_module("distill")


@pytest.fixture
def no_queue(monkeypatch):
    """Jobs are stored but not sent to Celery: the tests run them in-process with execute_job."""
    monkeypatch.setattr("rlhf_worker.services.jobs.job_enqueue", lambda *, job_id: None)


@pytest.fixture
def counted_kind(monkeypatch):
    """A job kind that counts how often its config is validated and checked."""
    calls = {"validate": 0, "check": 0}

    @dataclasses.dataclass(frozen=True)
    class CountedConfig:
        steps: int = 1

        def validate(self):
            calls["validate"] += 1
            if self.steps < 1:
                raise ConfigError("steps", "must be at least 1")

    def check(cfg):
        calls["check"] += 1

    def run(job, ctx):
        ctx.report(ctx.config.steps, ctx.config.steps, {"train/loss": 0.5})

    monkeypatch.setitem(JOB_MODULES, "score", types.SimpleNamespace(Config=CountedConfig, check=check, run=run))
    return calls


def test_the_service_validates_once_and_the_runner_trusts_the_stored_config(counted_kind, no_queue, admin_user):
    job = job_start(kind="score", config={"steps": "3"}, user=admin_user)
    assert job.config == {"steps": 3}
    assert counted_kind == {"validate": 1, "check": 1}
    assert execute_job(job.pk) == TrainingJob.Status.SUCCEEDED
    assert counted_kind == {"validate": 1, "check": 1}, "the runner rebuilt the config without validating it again"
    with pytest.raises(ServiceError) as err:
        job_start(kind="score", config={"steps": 0}, user=admin_user)
    assert err.value.field == "steps" and counted_kind["check"] == 1, "check runs only on values that passed"


def test_a_version_deleted_while_the_job_waits_fails_the_job_naming_it(no_queue, admin_user, researcher):
    from labeling_app.models import Prompt
    from labeling_app.services.projects import project_create

    project = project_create(name="Vanishing", user=researcher, completions_per_task=2)
    Prompt.objects.create(project=project, text="say a")
    version = ModelVersion.objects.create(
        kind="policy", name="tiny", path=save_tiny_policy(str(Path(settings.MODEL_STORE) / "tiny-policy"))
    )
    job = job_start(
        kind="generate",
        config={"project_ids": [project.pk], "policy_version_id": version.pk, "max_new_tokens": 4, "device": "cpu"},
        user=admin_user,
    )
    deleted = version.pk
    version.delete()
    assert execute_job(job.pk) == TrainingJob.Status.FAILED
    job.refresh_from_db()
    assert job.error.startswith(f"ServiceError: policy_version_id: no policy model version with id {deleted}")


def test_the_start_form_shows_the_services_refusal_beside_the_field(admin_user, demo_project):
    stopped = TrainingJob.objects.create(kind="reward", status="cancelled", config={})  # left no checkpoint
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        reverse("jobs:start", kwargs={"kind": "reward"}),
        {
            **form_defaults(job_module("reward").Config),
            "project_ids": [str(demo_project.pk)],
            "resume_job_id": str(stopped.pk),
        },
    )
    html = response.content.decode()
    assert response.status_code == 400 and "Nothing was started" in html
    assert 'id="error-resume_job_id"' in html and f"reward job {stopped.pk} left no checkpoint" in html
    assert TrainingJob.objects.count() == 1


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_cannot_resume_from_a_job_that_has_not_ended(admin_user, demo_project, status):
    """Even with a checkpoint on disk: the running job still rewrites it, so the form refuses and starts nothing."""
    unfinished = TrainingJob.objects.create(kind="reward", status=status, config={})
    folder = Path(settings.MODEL_STORE) / "jobs" / f"reward-{unfinished.pk}"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "trainer_state.pt").write_bytes(b"state")
    (folder / "data_snapshot.json").write_text("{}")
    config = {"project_ids": [demo_project.pk], "resume_job_id": unfinished.pk}
    with pytest.raises(ServiceError) as refused:
        job_start(kind="reward", config=config, user=admin_user)
    assert refused.value.field == "resume_job_id" and f"reward job {unfinished.pk} is still {status}" in str(
        refused.value
    )

    client = Client()
    client.force_login(admin_user)
    response = client.post(
        reverse("jobs:start", kwargs={"kind": "reward"}),
        {
            **form_defaults(job_module("reward").Config),
            "project_ids": [str(demo_project.pk)],
            "resume_job_id": str(unfinished.pk),
        },
    )
    html = response.content.decode()
    assert response.status_code == 400 and "Nothing was started" in html
    assert 'id="error-resume_job_id"' in html and f"reward job {unfinished.pk} is still {status}: cancel it" in html
    assert TrainingJob.objects.count() == 1

    # once it has ended, its checkpoint is what a new job continues from
    TrainingJob.objects.filter(pk=unfinished.pk).update(status="cancelled")
    assert job_module("reward").resumable_job_dir(unfinished.pk) == folder


def _ended_job_with_checkpoint(kind: str, status: str, config: dict | None = None) -> TrainingJob:
    """A job row whose output folder holds a checkpoint and a data snapshot (as a cancelled run leaves them)."""
    job = TrainingJob.objects.create(kind=kind, status=status, config=config or {})
    (job.output_dir / "checkpoint").mkdir(parents=True)
    (job.output_dir / "checkpoint" / "trainer_state.pt").write_bytes(b"state")
    (job.output_dir / "data_snapshot.json").write_text("{}")
    return job


def test_the_job_page_offers_resume_for_an_ended_reward_sft_or_ppo_job_with_a_checkpoint(admin_user, demo_project):
    client = Client()
    client.force_login(admin_user)

    def page(job: TrainingJob) -> str:
        return client.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()

    for kind in ("reward", "sft", "ppo"):
        for status in ("cancelled", "failed", "lost"):
            assert 'id="resume-job"' in page(_ended_job_with_checkpoint(kind, status)), (kind, status)
    running = _ended_job_with_checkpoint("sft", "running")
    assert 'id="resume-job"' not in page(running)
    assert 'id="resume-job"' not in page(TrainingJob.objects.create(kind="ppo", status="failed"))  # no checkpoint
    generate = _ended_job_with_checkpoint("generate", "cancelled")
    assert 'id="resume-job"' not in page(generate)

    count = TrainingJob.objects.count()
    for job, reason in [
        (running, f"SFT job {running.pk} is still running: cancel it"),
        (generate, "Generate candidates jobs have no checkpoints to resume from"),
    ]:
        response = client.post(reverse("jobs:resume", kwargs={"pk": job.pk}), follow=True)
        assert response.redirect_chain[-1][0] == reverse("jobs:detail", kwargs={"pk": job.pk})
        assert f"Could not resume job #{job.pk}: {reason}" in response.content.decode()
    assert TrainingJob.objects.count() == count  # nothing started


@pytest.mark.parametrize("kind", ["sft", "ppo", "reward"])
def test_a_resume_with_other_training_settings_is_refused_naming_them(admin_user, demo_project, kind):
    """The checkpoint holds what those settings trained; only where it runs and how often it saves may change."""
    ran_with = {"learning_rate": 0.001, "seed": 3, "device": "cpu", "num_processes": 1}
    cancelled = _ended_job_with_checkpoint(kind, "cancelled", config=ran_with)
    config = {"project_ids": [demo_project.pk], "resume_job_id": cancelled.pk}
    with pytest.raises(ServiceError) as refused:
        job_start(kind=kind, config={**config, **ran_with, "learning_rate": 0.002, "seed": 4}, user=admin_user)
    assert refused.value.field == "resume_job_id"
    assert "other settings (learning_rate 0.001 -> 0.002, seed 3 -> 4)" in str(refused.value)
    assert TrainingJob.objects.count() == 1


@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu", "cuda:", " cpu", "CUDA"])
def test_every_job_that_takes_a_device_refuses_one_it_cannot_run_on_beside_the_field(device):
    from rlhf_worker.services.jobs import job_config_validate

    kinds = [
        k for k in TrainingJob.Kind.values if "device" in {f.name for f in dataclasses.fields(job_module(k).Config)}
    ]
    assert {"reward", "sft", "ppo", "generate", "score"} <= set(kinds)
    for kind in kinds:
        with pytest.raises(ServiceError) as refused:
            job_config_validate(kind=kind, config={"device": device})
        errors = refused.value.errors
        assert "device" in errors, (kind, errors)
        assert "auto, cpu, cuda or cuda:N" in errors["device"][0] and repr(device) in errors["device"][0], kind


def test_the_devices_a_job_can_run_on_pass_the_check():
    from rlhf_worker.training.device import device_problem

    assert [device_problem(d) for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:7")] == [None] * 5
