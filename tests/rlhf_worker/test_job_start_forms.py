"""Jobs that are hard to start wrong: refusals at start (form and service), none chosen = every project, the error
summary, presets (built-in and saved), the Advanced section, the jobs list's duration/ETA/failure, ended-job notices."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import Demonstration, Project, Prompt
from labeling_app.services.projects import project_create
from rlhf_worker.jobs import ppo as ppo_job
from rlhf_worker.models import JobNoticesSeen, JobPreset, ModelVersion, TrainingJob
from rlhf_worker.selectors import job_kind_info, job_notices
from rlhf_worker.services.jobs import job_config_validate, job_start
from rlhf_worker.services.presets import job_preset_save
from tests.conftest import make_user
from tests.rlhf_worker.helpers import form_defaults


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def prompts_project(db, researcher):
    project = project_create(name="Prompts only", user=researcher, completions_per_task=2, overlap=1)
    for text in ("say a", "hello there"):
        Prompt.objects.create(project=project, text=text)
    return project


def ppo_form(**overrides) -> dict:
    """What the PPO start form posts with every default (as the browser sends it), the common ones spelt out."""
    data = form_defaults(ppo_job.Config)
    data.pop("project_ids")  # a multiple select with nothing chosen sends nothing
    data |= {
        "total_episodes": "320",
        "batch_size": "16",
        "mini_batch_size": "8",
        "ppo_epochs": "2",
        "learning_rate": "5e-05",
        "value_learning_rate": "0.0001",
        "max_new_tokens": "96",
        "max_prompt_tokens": "256",
        "temperature": "0.7",
        "kl_coef": "0.02",
        "kl_target": "6.0",
        "kl_horizon": "10000",
        "gamma": "1.0",
        "lam": "0.95",
        "cliprange": "0.2",
        "cliprange_value": "0.2",
        "vf_coef": "0.1",
        "whiten_advantages": "on",
        "missing_stop_penalty": "0.0",
        "max_grad_norm": "1.0",
        "trainable_layers": "8",
        "seed": "0",
        "use_chat_template": "on",
        "samples_per_step": "2",
        "eval_prompts": "36",
        "prompt_ids": "",
        "date_from": "",
        "date_to": "",
        "base_version_id": "",
        "reward_version_id": "",
        "name": "",
        "device": "auto",
    }
    data.update(overrides)
    return data


# --- refusals at start ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_ppo_without_a_resolvable_reward_model_is_refused_saying_how_to_get_one(prompts_project, admin_user):
    with pytest.raises(ServiceError) as err:
        job_start(kind="ppo", config={"project_ids": [prompts_project.pk]}, user=admin_user)
    assert err.value.field == "reward_version_id"
    assert "there is no reward model yet" in err.value.message and "Reward model job" in err.value.message
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_ppo_refusal_lists_the_reward_models_that_exist_when_none_is_promoted(prompts_project, admin_user):
    older = ModelVersion.objects.create(kind="reward", name="rm-monday", path="/rm1")
    newer = ModelVersion.objects.create(kind="reward", name="rm-tuesday", path="/rm2")
    ModelVersion.objects.create(kind="policy", name="a-policy", path="/p")
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="ppo", config={"project_ids": [prompts_project.pk]})
    message = err.value.message
    assert err.value.field == "reward_version_id" and "no reward model is promoted" in message
    assert f"#{newer.pk} rm-tuesday, #{older.pk} rm-monday" in message and "a-policy" not in message
    # choosing one (or promoting one) resolves it
    assert job_config_validate(kind="ppo", config={"project_ids": [prompts_project.pk], "reward_version_id": older.pk})
    ModelVersion.objects.filter(pk=newer.pk).update(is_promoted=True)
    assert job_config_validate(kind="ppo", config={"project_ids": [prompts_project.pk]})["reward_version_id"] is None


@pytest.mark.django_db
def test_the_form_refuses_it_with_the_error_summary_at_the_top_linking_to_the_field(prompts_project, admin_user):
    ModelVersion.objects.create(kind="reward", name="rm-unpromoted", path="/rm")
    response = client_for(admin_user).post(
        reverse("jobs:start", kwargs={"kind": "ppo"}), ppo_form(project_ids=[str(prompts_project.pk)])
    )
    assert response.status_code == 400
    html = response.content.decode()
    summary = html.index('id="error-summary"')
    assert summary < html.index('id="field-project_ids"'), "the summary comes before the first field"
    assert 'href="#id_reward_version_id"' in html[summary:] and "rm-unpromoted" in html[summary:]
    assert 'id="error-reward_version_id"' in html  # and beside its field
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_sft_without_demonstrations_and_generate_without_prompts_are_refused(prompts_project, researcher):
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="sft", config={"project_ids": [prompts_project.pk]})
    assert err.value.field == "project_ids" and "no demonstrations" in err.value.message
    Demonstration.objects.create(prompt=Prompt.objects.filter(project=prompts_project).first(), text="a")
    assert job_config_validate(kind="sft", config={"project_ids": [prompts_project.pk]})

    empty = project_create(name="Empty", user=researcher, completions_per_task=2, overlap=1)
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="generate", config={"project_ids": [empty.pk]})
    assert err.value.field == "project_ids" and f"no prompts in projects #{empty.pk}" in err.value.message
    assert job_config_validate(kind="generate", config={"project_ids": [prompts_project.pk]})


# --- none chosen means every project ------------------------------------------------------------------------
@pytest.mark.django_db
def test_no_project_chosen_means_every_project_written_into_the_stored_config(
    prompts_project, researcher, admin_user, monkeypatch
):
    other = project_create(name="Second", user=researcher, completions_per_task=2, overlap=1)
    Prompt.objects.create(project=other, text="third")
    monkeypatch.setattr("rlhf_worker.services.jobs.job_enqueue", lambda *, job_id: None)
    job = job_start(kind="generate", config={"project_ids": []}, user=admin_user)
    assert job.config["project_ids"] == sorted([prompts_project.pk, other.pk])
    # prompt ids alone select prompts without widening to every project
    prompt = Prompt.objects.filter(project=other).get()
    assert job_config_validate(kind="generate", config={"prompt_ids": [prompt.pk]})["project_ids"] == []


@pytest.mark.django_db
def test_no_project_chosen_and_no_project_at_all_is_refused(admin_user):
    assert not Project.objects.exists()
    with pytest.raises(ServiceError) as err:
        job_config_validate(kind="generate", config={})
    assert err.value.field == "project_ids" and "there are no projects yet" in err.value.message


@pytest.mark.django_db
def test_the_form_help_says_none_means_every_project_and_the_form_accepts_none(
    prompts_project, admin_user, monkeypatch
):
    c = client_for(admin_user)
    for kind in ("generate", "sft", "reward", "ppo", "score"):
        html = c.get(reverse("jobs:start", kwargs={"kind": kind})).content.decode()
        assert "none chosen means every project" in html, kind
    monkeypatch.setattr("rlhf_worker.services.jobs.job_enqueue", lambda *, job_id: None)
    promoted = ModelVersion.objects.create(kind="reward", name="rm", path="/rm", is_promoted=True)
    response = c.post(reverse("jobs:start", kwargs={"kind": "ppo"}), ppo_form())  # no project_ids at all
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and job.config["project_ids"] == [prompts_project.pk]
    assert job.config["reward_version_id"] is None and promoted.is_promoted


# --- presets and the Advanced section -----------------------------------------------------------------------
@pytest.mark.django_db
def test_common_settings_first_and_the_rest_under_advanced(admin_user):
    html = client_for(admin_user).get(reverse("jobs:start", kwargs={"kind": "ppo"})).content.decode()
    advanced = html.index('<details class="advanced"')
    for name in ppo_job.COMMON_FIELDS:
        assert html.index(f'id="field-{name}"') < advanced, name
    for name in ("cliprange", "gamma", "whiten_advantages", "samples_per_step"):
        assert html.index(f'id="field-{name}"') > advanced, name
    assert '<details class="advanced" id="advanced-settings">' in html  # closed while nothing in it is wrong


@pytest.mark.django_db
def test_an_error_in_an_advanced_setting_opens_the_section(admin_user):
    html = (
        client_for(admin_user)
        .post(reverse("jobs:start", kwargs={"kind": "ppo"}), ppo_form(cliprange="-1"))
        .content.decode()
    )
    assert '<details class="advanced" id="advanced-settings" open>' in html and 'href="#id_cliprange"' in html


@pytest.mark.django_db
def test_built_in_presets_prefill_the_form(admin_user):
    c = client_for(admin_user)
    url = reverse("jobs:start", kwargs={"kind": "ppo"})
    html = c.get(url + "?preset=Quick+CPU+demo").content.decode()
    assert 'id="preset-applied"' in html
    assert 'name="total_episodes" value="32"' in html and 'name="device" value="cpu"' in html
    html = c.get(url + "?preset=Defaults").content.decode()
    assert 'name="total_episodes" value="320"' in html
    response = c.get(url + "?preset=nonsense", follow=True)
    assert "There is no PPO preset called" in response.content.decode()


@pytest.mark.django_db
def test_an_admin_saves_a_preset_and_applies_it_later(admin_user):
    c = client_for(admin_user)
    response = c.post(
        reverse("jobs:preset_save", kwargs={"kind": "ppo"}),
        ppo_form(total_episodes="64", kl_coef="0.1", preset_name="  Small   KL run "),
    )
    preset = JobPreset.objects.get()
    assert (preset.kind, preset.name, preset.created_by) == ("ppo", "Small KL run", admin_user)
    assert preset.config["total_episodes"] == 64 and preset.config["kl_coef"] == 0.1
    assert response.status_code == 302 and response["Location"].endswith("?preset=Small+KL+run")
    html = c.get(response["Location"]).content.decode()
    assert 'name="total_episodes" value="64"' in html and "Small KL run (saved)" in html
    assert not TrainingJob.objects.exists(), "saving a preset starts nothing"
    # the same name again (any case) replaces it; another kind's form does not list it
    c.post(
        reverse("jobs:preset_save", kwargs={"kind": "ppo"}), ppo_form(total_episodes="128", preset_name="small kl RUN")
    )
    assert JobPreset.objects.get().config["total_episodes"] == 128
    assert "Small KL run" not in c.get(reverse("jobs:start", kwargs={"kind": "sft"})).content.decode()
    c.post(reverse("jobs:preset_delete", kwargs={"pk": preset.pk}))
    assert not JobPreset.objects.exists()


@pytest.mark.django_db
def test_a_preset_is_refused_without_a_name_under_a_built_in_name_or_with_bad_settings(admin_user):
    c = client_for(admin_user)
    url = reverse("jobs:preset_save", kwargs={"kind": "ppo"})
    for data, expected in [
        (ppo_form(preset_name=""), "give the preset a name"),
        (ppo_form(preset_name="quick cpu DEMO"), "is a built-in preset"),
        (ppo_form(preset_name="x", mini_batch_size="3"), "The preset was not saved"),
    ]:
        response = c.post(url, data)
        assert response.status_code == 400 and expected in response.content.decode(), expected
    assert not JobPreset.objects.exists()


@pytest.mark.django_db
def test_saved_presets_keep_working_when_a_setting_is_added_later(admin_user):
    """A preset stores the config of its day: fields added to the Config later take their default."""
    job_preset_save(kind="score", name="old", config={"batch_size": 7}, user=admin_user)
    html = client_for(admin_user).get(reverse("jobs:start", kwargs={"kind": "score"}) + "?preset=old").content.decode()
    assert 'name="batch_size" value="7"' in html and 'id="field-device"' in html


@pytest.mark.django_db(transaction=True)
def test_two_saves_of_one_preset_name_at_once_leave_one_preset(admin_user, monkeypatch):
    """The other save's insert commits between this save's look-up (nothing found) and its insert: this save then
    replaces that preset instead of failing with a 500 on the unique name."""
    import threading

    from django.db import connection

    real_create = JobPreset.objects.create
    raced = []

    def create_after_a_concurrent_save(**fields):
        if not raced:
            raced.append(True)
            other = threading.Thread(
                target=lambda: (
                    JobPreset.objects.create(
                        kind="score", name="Nightly", config={"batch_size": 3}, created_by=admin_user
                    ),
                    connection.close(),
                )
            )
            other.start()
            other.join()
        return real_create(**fields)

    monkeypatch.setattr(JobPreset.objects, "create", create_after_a_concurrent_save)
    preset, created = job_preset_save(kind="score", name="nightly", config={"batch_size": 9}, user=admin_user)
    assert raced and not created
    assert list(JobPreset.objects.values_list("name", "config")) == [("nightly", {"batch_size": 9})]
    assert preset.pk == JobPreset.objects.get().pk


def test_every_job_kind_names_real_common_fields_and_a_valid_quick_cpu_demo():
    from rlhf_worker.jobs import JOB_MODULES
    from rlhf_worker.training.config_base import config_fields, config_from_dict

    for kind, module in JOB_MODULES.items():
        names = {f["name"] for f in config_fields(module.Config)}
        assert set(module.COMMON_FIELDS) <= names, kind
        assert set(module.QUICK_CPU_DEMO) <= names and module.QUICK_CPU_DEMO["device"] == "cpu", kind
        assert config_from_dict(module.Config, {**module.QUICK_CPU_DEMO, "project_ids": [1]}), kind
        assert job_kind_info(kind).quick_cpu_demo == module.QUICK_CPU_DEMO


def seconds_in(row_html: str, cell: str) -> int:
    minutes, seconds = re.search(rf'<td class="{cell}">(\d+) min (\d+) s</td>', row_html[:1500]).groups()
    return 60 * int(minutes) + int(seconds)


# --- the jobs list ----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_jobs_list_shows_duration_eta_and_the_first_line_of_the_error(researcher, admin_user):
    now = timezone.now()
    running = TrainingJob.objects.create(
        kind="ppo", status="running", progress=0.25, started_at=now - timedelta(seconds=60), created_by=admin_user
    )
    failed = TrainingJob.objects.create(
        kind="sft",
        status="failed",
        started_at=now - timedelta(seconds=200),
        finished_at=now - timedelta(seconds=107),
        error="ValueError: no demonstrations match\nTraceback (most recent call last):\n  ...",
    )
    queued = TrainingJob.objects.create(kind="reward")
    assert running.eta_from_progress(now) == pytest.approx(180.0)  # 60 s for 25 %: 180 s for the other 75 %
    html = client_for(researcher).get(reverse("jobs:list")).content.decode()
    row = html[html.index(f'id="job-row-{running.pk}"') :]
    # the page is rendered a moment after `now`: 60-70 s elapsed, so 180-210 s left
    assert 60 <= seconds_in(row, "duration") <= 70 and 180 <= seconds_in(row, "eta") <= 210
    row = html[html.index(f'id="job-row-{failed.pk}"') :]
    assert '<td class="duration">1 min 33 s</td>' in row[:1500]
    assert "ValueError: no demonstrations match</a>" in row[:1500] and "Traceback" not in row[:1500]
    row = html[html.index(f'id="job-row-{queued.pk}"') :]
    assert '<td class="duration">—</td>' in row[:1500] and '<td class="eta">—</td>' in row[:1500]
    detail = client_for(researcher).get(reverse("jobs:detail", kwargs={"pk": failed.pk})).content.decode()
    assert "Traceback (most recent call last)" in detail  # the whole error on the job's page


# --- the notice of ended jobs -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_admin_who_started_a_job_sees_a_notice_when_it_ends_until_they_dismiss_it(admin_user, researcher):
    other_admin = make_user("adm2", "admin")
    c = client_for(admin_user)
    job = TrainingJob.objects.create(kind="sft", status="running", created_by=admin_user, started_at=timezone.now())
    assert 'id="job-notice"' not in c.get(reverse("jobs:list")).content.decode()
    TrainingJob.objects.filter(pk=job.pk).update(
        status="failed", finished_at=timezone.now(), error="boom: out of memory\nmore"
    )
    for page in (reverse("jobs:list"), reverse("researcher:project_list")):
        html = c.get(page).content.decode()
        assert 'id="job-notice"' in html and f"job #{job.pk}" in html and "boom: out of memory" in html, page
        assert 'id="job-notice-badge"' in html
    assert not JobNoticesSeen.objects.exists(), "showing the notice writes nothing"
    assert 'id="job-notice"' not in client_for(other_admin).get(reverse("jobs:list")).content.decode()
    assert 'id="job-notice"' not in client_for(researcher).get(reverse("jobs:list")).content.decode()

    notices = job_notices(user=admin_user)
    response = c.post(reverse("jobs:notices_dismiss"), {"until": notices.until.isoformat(), "next": "/jobs/"})
    assert response.status_code == 302 and response["Location"] == "/jobs/"
    assert 'id="job-notice"' not in c.get(reverse("jobs:list")).content.decode()
    # a job that ends later brings it back; an older `until` never moves the mark back
    later = TrainingJob.objects.create(
        kind="ppo", status="succeeded", created_by=admin_user, finished_at=timezone.now() + timedelta(seconds=1)
    )
    c.post(reverse("jobs:notices_dismiss"), {"until": (notices.until - timedelta(days=1)).isoformat()})
    assert [j.pk for j in job_notices(user=admin_user).jobs] == [later.pk]


@pytest.mark.django_db
def test_dismissing_needs_a_time_and_goes_back_only_to_this_site(admin_user):
    c = client_for(admin_user)
    assert c.post(reverse("jobs:notices_dismiss"), {"until": "yesterday"}).status_code == 400
    response = c.post(
        reverse("jobs:notices_dismiss"), {"until": timezone.now().isoformat(), "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("jobs:list")
    assert c.get(reverse("jobs:notices_dismiss")).status_code == 405


# --- the jobs API -------------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_api_refuses_a_ppo_job_without_reward_model_like_the_form(prompts_project, admin_user):
    ModelVersion.objects.create(kind="reward", name="rm-listed", path="/rm")
    response = client_for(admin_user).post(
        reverse("api:jobs-start"), {"kind": "ppo", "config": {}}, content_type="application/json"
    )
    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == ["reward_version_id"] and "rm-listed" in body["detail"]
    assert not TrainingJob.objects.exists()
    response = client_for(admin_user).post(reverse("api:jobs-start"), {"kind": "nope"}, content_type="application/json")
    assert response.status_code == 400 and "kind" in response.json()["errors"]


@pytest.mark.django_db
def test_the_api_starts_a_job_from_a_preset_with_overrides(prompts_project, admin_user, monkeypatch):
    monkeypatch.setattr("rlhf_worker.services.jobs.job_enqueue", lambda *, job_id: None)
    response = client_for(admin_user).post(
        reverse("api:jobs-start"),
        {"kind": "generate", "preset": "quick cpu demo", "config": {"max_new_tokens": 8}},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.created_by == admin_user and job.config["device"] == "cpu" and job.config["batch_size"] == 4
    assert job.config["max_new_tokens"] == 8 and job.config["project_ids"] == [prompts_project.pk]
    response = client_for(admin_user).post(
        reverse("api:jobs-start"), {"kind": "generate", "preset": "missing"}, content_type="application/json"
    )
    assert response.status_code == 400 and list(response.json()["errors"]) == ["preset"]


@pytest.mark.django_db
def test_an_empty_policy_setting_is_refused_when_nothing_could_resolve_it(prompts_project, settings, monkeypatch):
    """No policy promoted, no DEFAULT_POLICY and no built-in model wheel: refused at start, naming the setting."""
    settings.DEFAULT_POLICY = ""
    monkeypatch.setattr("rlhf_worker.training.policy_models.GGUF_PACKAGE", "no_such_model_wheel")
    for kind, field_name in (("generate", "policy_version_id"), ("ppo", "base_version_id")):
        with pytest.raises(ServiceError) as err:
            job_config_validate(kind=kind, config={"project_ids": [prompts_project.pk]})
        assert err.value.field == field_name and "built-in model is missing" in err.value.message, kind
    policy = ModelVersion.objects.create(kind="policy", name="sft-1", path="/p", is_promoted=True)
    assert job_config_validate(kind="generate", config={"project_ids": [prompts_project.pk]})
    with pytest.raises(ServiceError) as err:
        job_config_validate(
            kind="generate", config={"project_ids": [prompts_project.pk], "policy_version_id": policy.pk + 99}
        )
    assert err.value.field == "policy_version_id"
