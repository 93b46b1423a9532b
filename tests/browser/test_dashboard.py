"""Browser: an admin starts a reward-model job on seeded labels, watches it, sees the version, promotes a policy."""

from __future__ import annotations

import re

import pytest

from rlhf_worker.models import ModelVersion, TrainingJob
from tests.conftest import ARTIFACTS, login
from tests.rlhf_worker.dashboard_fakes import fake_reward_kind, seed_rankings  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def chart_points(page, chart_id: str) -> int:
    return int(page.eval_on_selector(f"#chart-{chart_id}", "el => el.dataset.points || '0'"))


def test_admin_trains_a_reward_model_watches_it_and_promotes_a_policy(
    page, live_server, settings, fake_reward_kind, training_queue, admin_user, labeler, labeler2, demo_project
):
    settings.JOB_POLL_SECONDS = 0.4
    seed_rankings(demo_project, [labeler, labeler2], n_prompts=8)
    policy = ModelVersion.objects.create(kind="policy", name="sft-demo", path="/models/sft-demo")
    login(page, live_server, admin_user.username)

    page.goto(f"{live_server.url}/jobs/")
    page.click("a[data-kind=reward]")
    page.wait_for_selector("form.config-form")
    # bad settings: field errors beside the fields, nothing started
    page.fill("#id_steps", "0")
    page.fill("#id_learning_rate", "99")
    page.click("#start-job")
    page.wait_for_selector("#error-steps")
    assert "must be at least 1" in page.inner_text("#field-steps")
    assert "must be in (0, 10]" in page.inner_text("#field-learning_rate")
    shot(page, "1-field-errors")
    assert not TrainingJob.objects.exists()

    page.fill("#id_steps", "60")
    page.fill("#id_learning_rate", "0.5")
    page.fill("#id_step_seconds", "0.12")
    page.select_option("select[name=project_ids]", str(demo_project.pk))
    page.click("#start-job")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job = TrainingJob.objects.get()

    # the progress bar and the loss curve move while it runs
    page.wait_for_function(
        "() => { const p = document.querySelector('#job-progress'); return p && p.value > 0 && p.value < 1; }"
    )
    page.wait_for_selector("#chart-loss .main-svg")
    first_progress = float(page.get_attribute("#job-progress", "value"))
    first_points = chart_points(page, "loss")
    shot(page, "2-running")
    page.wait_for_function(
        "([p, n]) => document.querySelector('#job-progress') && (document.querySelector('#job-progress').value > p)"
        " && Number(document.querySelector('#chart-loss').dataset.points) > n",
        arg=[first_progress, first_points],
    )
    assert first_points > 0

    # it succeeds; polling stops; the last points are drawn
    page.wait_for_selector("#job-status:has-text('Succeeded')", timeout=60_000)
    page.wait_for_selector("#charts[data-done=true]")
    assert page.get_attribute("#job-live", "hx-trigger") is None
    assert chart_points(page, "loss") >= 60 and chart_points(page, "accuracy") > 0
    # the drawn x axis reaches the last step (the final points are on screen, not just in memory)
    assert page.eval_on_selector("#chart-loss", "el => el._fullLayout.xaxis.range[1]") >= 59
    assert "optimisation step" in page.inner_text("#chart-loss") and "loss (nats)" in page.inner_text("#chart-loss")
    shot(page, "3-succeeded")
    job.refresh_from_db()
    assert job.status == "succeeded" and job.progress == 1.0
    version = ModelVersion.objects.get(training_job=job)
    assert version.kind == "reward" and version.data_snapshot["project_ids"] == [demo_project.pk]

    # the new version is in the registry, with its lineage and metrics
    page.click("#result-version")
    page.wait_for_selector(f"h1:has-text('{version.name}')")
    page.click("nav.subnav >> text=Model versions")
    page.wait_for_selector(f"#reward-table #version-{version.pk}")
    row = page.inner_text(f"#reward-table #version-{version.pk}")
    assert f"#{job.pk}" in row and f"projects #{demo_project.pk}" in row
    page.wait_for_selector("#reward-chart .main-svg")

    # promote a policy: generation jobs use it by default from now on
    page.click(f"[data-promote='{policy.pk}']")
    page.wait_for_selector("#promoted-policy:has-text('sft-demo')")
    policy.refresh_from_db()
    assert policy.is_promoted
    assert ModelVersion.objects.filter(kind="policy", is_promoted=True).count() == 1
    shot(page, "4-promoted")

    # the workers page shows the test worker and its queue
    page.click("nav.subnav >> text=Workers")
    page.wait_for_selector(f"#worker-table:has-text('{training_queue}')")
    shot(page, "5-workers")
    page.click("nav.subnav >> text=Jobs")
    page.wait_for_selector(f"#job-table a[href='/jobs/{job.pk}/']")
    shot(page, "6-jobs-list")


def test_admin_trains_the_real_reward_model_on_seeded_labels(
    page, live_server, settings, training_queue, admin_user, labeler, labeler2, demo_project, tmp_path
):
    """The same flow through the real reward job (training.reward.train) with a tiny random BERT backbone."""
    from rlhf_worker.training.reward_model import save_tiny_backbone

    settings.JOB_POLL_SECONDS = 0.4
    backbone = save_tiny_backbone(tmp_path / "tiny-bert", "bert", seed=0)
    seed_rankings(demo_project, [labeler, labeler2], n_prompts=8)
    login(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/jobs/")
    page.click("a[data-kind=reward]")
    page.wait_for_selector("form.config-form")
    settings_to_fill = {
        "backbone": str(backbone),
        "epochs": "6",
        "batch_size": "2",
        "max_length": "64",
        "eval_fraction": "0.25",
        "eval_every": "4",
        "save_every": "0",
        "learning_rate": "0.001",
        "device": "cpu",
        "name": "tiny-rm",
    }
    page.click("#advanced-settings > summary")  # batch size, max length, eval/save steps are advanced settings
    for name, value in settings_to_fill.items():
        page.fill(f"#id_{name}", value)
    page.select_option("select[name=project_ids]", str(demo_project.pk))
    page.click("#start-job")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job = TrainingJob.objects.get()
    page.wait_for_selector("#job-status:has-text('Succeeded')", timeout=90_000)
    page.wait_for_selector("#charts[data-done=true]")
    assert chart_points(page, "loss") > 0 and chart_points(page, "accuracy") > 0
    shot(page, "real-reward-succeeded")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    version = ModelVersion.objects.get(training_job=job)
    assert version.kind == "reward" and version.name == "tiny-rm" and "eval/accuracy" in version.metrics
    page.click("nav.subnav >> text=Model versions")
    page.wait_for_selector(f"#reward-table #version-{version.pk}")
    shot(page, "real-reward-registry")
