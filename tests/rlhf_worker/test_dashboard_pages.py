"""The training dashboard: start form from a Config, field errors, roles, live page, cancel, lost jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from rlhf_worker.charts import chart_groups
from rlhf_worker.models import JobMetric, ModelVersion, TrainingJob
from rlhf_worker.services.jobs import jobs_mark_lost, jobs_sweep
from tests.rlhf_worker.dashboard_fakes import FAKE_REWARD, fake_reward_kind, install_fake_kinds, seed_rankings  # noqa: F401
from tests.rlhf_worker.helpers import status_in, wait_for


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


VALID = {
    "steps": "12",
    "learning_rate": "0.5",
    "step_seconds": "0",
    "fail_at": "-1",
    "normalize": "on",
    "date_from": "",
    "date_to": "",
    "base_version_id": "",
}


@pytest.mark.django_db
def test_start_form_shows_every_setting_with_its_default_and_help(fake_reward_kind, admin_user, demo_project):
    ModelVersion.objects.create(kind="reward", name="rm-old", path="/x")
    ModelVersion.objects.create(kind="policy", name="not-a-reward-model", path="/y")
    html = client_for(admin_user).get(reverse("jobs:start", kwargs={"kind": "reward"})).content.decode()
    for f in (
        "project_ids",
        "date_from",
        "date_to",
        "base_version_id",
        "steps",
        "learning_rate",
        "step_seconds",
        "normalize",
        "fail_at",
    ):
        assert f'name="{f}"' in html, f
    assert "Gradient-descent step size." in html and "Default: <code>0.5</code>" in html
    assert 'type="date"' in html and '<select name="project_ids"' in html and demo_project.name in html
    assert "rm-old" in html and "not-a-reward-model" not in html  # the picker lists this kind's registry only
    assert 'value="20"' in html  # steps prefilled with its default


@pytest.mark.django_db
def test_bad_settings_give_field_errors_and_start_nothing(fake_reward_kind, admin_user):
    c = client_for(admin_user)
    url = reverse("jobs:start", kwargs={"kind": "reward"})
    response = c.post(url, {**VALID, "steps": "0", "learning_rate": "99", "step_seconds": "slow"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was started" in html
    # every wrong field at once, each error beside its own field
    assert 'id="error-steps"' in html and "must be at least 1" in html
    assert 'id="error-learning_rate"' in html and "must be in (0, 10]" in html
    assert 'id="error-step_seconds"' in html
    assert 'id="error-fail_at"' not in html
    assert not TrainingJob.objects.exists()
    # an emptied required number is an error too, not a silent default
    response = c.post(url, {**VALID, "steps": ""})
    assert 'id="error-steps"' in response.content.decode()
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_valid_settings_start_a_job_with_the_normalised_config(
    fake_reward_kind, admin_user, demo_project, django_capture_on_commit_callbacks, monkeypatch
):
    enqueued = []
    monkeypatch.setattr("rlhf_worker.services.jobs.job_enqueue", lambda *, job_id: enqueued.append(job_id))
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(admin_user).post(
            reverse("jobs:start", kwargs={"kind": "reward"}),
            {**VALID, "project_ids": [str(demo_project.pk)], "date_from": "2026-01-01"},
        )
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("jobs:detail", kwargs={"pk": job.pk})
    assert enqueued == [job.pk]
    assert job.config == {
        "project_ids": [demo_project.pk],
        "date_from": "2026-01-01",
        "date_to": "",
        "base_version_id": None,
        "steps": 12,
        "learning_rate": 0.5,
        "step_seconds": 0.0,
        "normalize": True,
        "fail_at": -1,
    }
    assert job.created_by == admin_user


@pytest.mark.django_db
def test_a_kind_without_a_module_is_shown_unavailable(monkeypatch, admin_user):
    install_fake_kinds(monkeypatch, {"reward": FAKE_REWARD, "ppo": None})
    c = client_for(admin_user)
    html = c.get(reverse("jobs:list")).content.decode()
    assert "Start: Reward model" in html
    assert "Unavailable — not installed: no module is registered for ppo jobs in rlhf_worker.jobs.JOB_MODULES" in html
    response = c.post(reverse("jobs:start", kwargs={"kind": "ppo"}), {"steps": "3"})
    assert response.status_code == 200 and "PPO jobs are unavailable" in response.content.decode()
    assert not TrainingJob.objects.exists()
    assert c.get(reverse("jobs:start", kwargs={"kind": "nonsense"})).status_code == 404


@pytest.mark.django_db
def test_labelers_and_researchers_cannot_start_or_cancel_jobs(fake_reward_kind, labeler, researcher, admin_user):
    job = TrainingJob.objects.create(kind="reward", status="running", heartbeat_at=timezone.now(), config={"steps": 3})
    for user in (labeler, researcher):
        c = client_for(user)
        assert c.post(reverse("jobs:start", kwargs={"kind": "reward"}), VALID).status_code == 403
        assert c.post(reverse("jobs:cancel", kwargs={"pk": job.pk})).status_code == 403
        assert c.post(reverse("jobs:rerun", kwargs={"pk": job.pk})).status_code == 403
    job.refresh_from_db()
    assert not job.cancel_requested and TrainingJob.objects.count() == 1
    # researchers may watch, without the admin buttons; labelers may not even look
    res = client_for(researcher)
    html = res.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()
    assert "Running" in html and 'id="cancel-job"' not in html and 'id="rerun-job"' not in html
    assert "Start: Reward model" not in res.get(reverse("jobs:list")).content.decode()
    assert client_for(labeler).get(reverse("jobs:detail", kwargs={"pk": job.pk})).status_code == 403
    admin_html = client_for(admin_user).get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()
    assert 'id="cancel-job"' in admin_html and 'id="rerun-job"' in admin_html


WRITES = ("INSERT", "UPDATE", "DELETE", "SELECT NEXTVAL", "LOCK")


@pytest.mark.django_db
def test_job_pages_only_read_and_the_sweep_marks_a_stale_job_lost_with_the_reason_on_its_page(researcher):
    job = TrainingJob.objects.create(
        kind="reward", status="running", worker="gpu-node-3", heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    queued = TrainingJob.objects.create(kind="reward", config={"steps": 3})
    TrainingJob.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(hours=1))
    c = client_for(researcher)
    urls = [reverse("jobs:list"), reverse("jobs:workers")] + [
        reverse(name, kwargs={"pk": pk})
        for pk in (job.pk, queued.pk)
        for name in ("jobs:detail", "jobs:live", "jobs:series")
    ]
    with CaptureQueriesContext(connection) as queries:
        for url in urls:
            assert c.get(url).status_code == 200, url
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]
    assert writes == [], "a GET must not write; the scheduler's sweep marks lost jobs"
    job.refresh_from_db()
    assert job.status == "running"

    assert jobs_mark_lost() == 1  # what the scheduled sweep runs
    html = c.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()
    job.refresh_from_db()
    assert job.status == "lost"
    assert "Why it was marked lost" in html and "no heartbeat from worker gpu-node-3" in html
    # a finished job's fragment stops polling, and the workers page lists it with the reason
    fragment = c.get(reverse("jobs:live", kwargs={"pk": job.pk})).content.decode()
    assert "hx-trigger" not in fragment
    assert "no heartbeat from worker gpu-node-3" in c.get(reverse("jobs:workers")).content.decode()


@pytest.mark.django_db
def test_the_workers_page_says_when_no_sweep_has_run(researcher):
    from django.core.cache import cache

    from rlhf_worker.selectors import SWEEP_CACHE_KEY

    cache.delete(SWEEP_CACHE_KEY)
    c = client_for(researcher)
    html = c.get(reverse("jobs:workers")).content.decode()
    assert 'id="sweep-stale"' in html and "No job sweep has run yet" in html and "celery -A config beat" in html
    jobs_sweep()
    html = c.get(reverse("jobs:workers")).content.decode()
    assert 'id="sweep-stale"' not in html and 'id="sweep-age"' in html and "Last sweep 0 s ago" in html


@pytest.mark.django_db
def test_the_live_fragment_polls_only_while_the_job_runs(researcher):
    job = TrainingJob.objects.create(
        kind="reward",
        status="running",
        heartbeat_at=timezone.now(),
        progress=0.25,
        step=5,
        total_steps=20,
        eta_seconds=75,
        log="line 1\nline 2",
    )
    c = client_for(researcher)
    html = c.get(reverse("jobs:live", kwargs={"pk": job.pk})).content.decode()
    assert 'hx-trigger="every' in html and 'value="0.25"' in html and "25% — step 5 of 20" in html
    assert "ETA 1 min 15 s" in html and "line 2" in html
    TrainingJob.objects.filter(pk=job.pk).update(
        kind="ppo",
        samples=[{"prompt": "Why is the sky blue?", "response": "Rayleigh <b>scattering</b>", "score": 1.25}],
    )
    html = c.get(reverse("jobs:live", kwargs={"pk": job.pk})).content.decode()
    assert "Why is the sky blue?" in html and "Rayleigh &lt;b&gt;scattering&lt;/b&gt;" in html and "score 1.25" in html
    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded", progress=1.0)
    html = c.get(reverse("jobs:live", kwargs={"pk": job.pk})).content.decode()
    assert "hx-trigger" not in html and "hx-get" not in html and "Succeeded" in html


@pytest.mark.django_db
def test_series_json_returns_new_points_grouped_into_charts(researcher):
    job = TrainingJob.objects.create(kind="reward", status="running", heartbeat_at=timezone.now())
    JobMetric.objects.bulk_create(
        [
            JobMetric(job=job, step=s, key=k, value=v)
            for s, k, v in [
                (1, "train/loss", 0.7),
                (1, "train/accuracy", 0.5),
                (2, "train/loss", 0.6),
                (2, "eval/accuracy", 0.55),
                (2, "train/epoch", 0.1),
            ]
        ]
    )
    c = client_for(researcher)
    data = c.get(reverse("jobs:series", kwargs={"pk": job.pk})).json()
    assert data["series"]["train/loss"] == {"x": [1, 2], "y": [0.7, 0.6]}
    assert [ch["id"] for ch in data["charts"]] == ["loss", "accuracy"]
    assert data["charts"][1]["keys"] == ["train/accuracy", "eval/accuracy"] and data["charts"][1]["y_range"] == [0, 1]
    assert not data["finished"]
    again = c.get(reverse("jobs:series", kwargs={"pk": job.pk}), {"after": data["last_id"]}).json()
    assert again["series"] == {} and again["last_id"] == data["last_id"]
    JobMetric.objects.create(job=job, step=3, key="train/loss", value=0.5)
    assert c.get(reverse("jobs:series", kwargs={"pk": job.pk}), {"after": data["last_id"]}).json()["series"] == {
        "train/loss": {"x": [3], "y": [0.5]}
    }


def test_chart_groups_for_ppo_and_sft_keys():
    ppo = chart_groups(
        [
            "objective/scores",
            "objective/kl",
            "objective/entropy",
            "policy/clipfrac",
            "policy/approxkl",
            "loss/policy",
            "loss/value",
            "objective/kl_coef",
        ]
    )
    by_id = {c["id"]: c["keys"] for c in ppo}
    assert list(by_id)[:4] == ["score", "kl", "entropy", "clipfrac"]
    assert by_id["kl"] == ["objective/kl", "policy/approxkl"] and by_id["ppo_loss"] == ["loss/policy", "loss/value"]
    assert by_id["k-objective-kl-coef"] == ["objective/kl_coef"]
    assert all(c["title"] and c["y_title"] for c in ppo)
    assert [c["id"] for c in chart_groups(["train/loss"])] == ["loss"]
    timing = chart_groups(["time/sample_s", "time/ref_s", "time/episodes_per_s", "train/episodes"])
    assert [(c["id"], c["keys"]) for c in timing] == [
        ("timing", ["time/ref_s", "time/sample_s"]),
        ("k-time-episodes-per-s", ["time/episodes_per_s"]),
    ]


# --- through a real Celery worker -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cancel_from_the_job_page_stops_a_running_job(
    fake_reward_kind, training_queue, admin_user, labeler, labeler2, demo_project
):
    seed_rankings(demo_project, [labeler, labeler2], n_prompts=4)
    c = client_for(admin_user)
    response = c.post(
        reverse("jobs:start", kwargs={"kind": "reward"}), {**VALID, "steps": "400", "step_seconds": "0.05"}
    )
    job = TrainingJob.objects.get()
    assert response.status_code == 302
    wait_for(job, status_in("running"), timeout=30)
    # the workers page shows the test worker, its queue, and that it runs this job
    from django.core.cache import cache

    from rlhf_worker.selectors import WORKERS_CACHE_KEY

    cache.delete(WORKERS_CACHE_KEY)
    workers_html = c.get(reverse("jobs:workers")).content.decode()
    assert training_queue in workers_html and f"Reward model job #{job.pk}" in workers_html
    assert c.post(reverse("jobs:cancel", kwargs={"pk": job.pk})).status_code == 302
    job = wait_for(job, timeout=30)
    assert job.status == "cancelled" and job.step < 400 and job.result_version is None
    html = c.get(reverse("jobs:detail", kwargs={"pk": job.pk})).content.decode()
    assert "Cancelled" in html and 'id="cancel-job"' not in html


@pytest.mark.django_db(transaction=True)
def test_rerun_starts_a_new_job_with_the_same_config(
    fake_reward_kind, training_queue, admin_user, labeler, labeler2, demo_project
):
    seed_rankings(demo_project, [labeler, labeler2], n_prompts=4)
    c = client_for(admin_user)
    c.post(reverse("jobs:start", kwargs={"kind": "reward"}), {**VALID, "steps": "6"})
    first = wait_for(TrainingJob.objects.get(), timeout=30)
    assert first.status == "succeeded", first.error
    assert first.result_version.metrics["eval/accuracy"] >= 0.5
    response = c.post(reverse("jobs:rerun", kwargs={"pk": first.pk}))
    second = TrainingJob.objects.exclude(pk=first.pk).get()
    assert response["Location"] == reverse("jobs:detail", kwargs={"pk": second.pk})
    assert second.config == first.config
    assert wait_for(second, timeout=30).status == "succeeded"


@pytest.mark.django_db
def test_every_installed_job_kind_gets_a_start_form_with_all_its_settings(admin_user, demo_project):
    """Every registered job kind renders every Config field with its default."""
    from rlhf_worker.selectors import job_kinds
    from rlhf_worker.training.config_base import config_fields

    c = client_for(admin_user)
    available = [k for k in job_kinds() if k.available]
    for info in available:
        html = c.get(reverse("jobs:start", kwargs={"kind": info.kind})).content.decode()
        for f in config_fields(info.config_cls):
            assert f'id="field-{f["name"]}"' in html, (info.kind, f["name"])
        # an empty submission starts nothing and says so
        response = c.post(reverse("jobs:start", kwargs={"kind": info.kind}), {})
        assert response.status_code == 400 and "Nothing was started" in response.content.decode(), info.kind
    assert not TrainingJob.objects.exists()
