"""Browser: an admin starts jobs from presets, is refused a PPO job with no reward model (the reason at the top of
the form), saves a preset, and sees the notice when a job they started ends."""

from __future__ import annotations

import re

import pytest

from rlhf_worker.models import JobPreset, TrainingJob
from tests.conftest import ARTIFACTS, login
from tests.rlhf_worker.dashboard_fakes import fake_reward_kind, seed_rankings  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"presets-{name}.png"), full_page=True)


def test_admin_uses_presets_is_refused_a_ppo_job_without_reward_model_and_sees_a_job_end(
    page, live_server, settings, fake_reward_kind, training_queue, admin_user, labeler, labeler2, demo_project
):
    settings.JOB_POLL_SECONDS = 0.4
    login(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/jobs/")
    page.click("a[data-kind=ppo]")
    page.wait_for_selector("form.config-form")

    # the Quick CPU demo preset fills the form; the rarely changed settings wait under Advanced
    page.select_option("#preset-select", "Quick CPU demo")
    page.click("#apply-preset")
    page.wait_for_selector("#preset-applied")
    assert page.input_value("#id_total_episodes") == "32" and page.input_value("#id_device") == "cpu"
    assert not page.is_visible("#id_cliprange")
    page.click("#advanced-settings > summary")
    assert page.is_visible("#id_cliprange") and page.input_value("#id_trainable_layers") == "2"
    shot(page, "1-quick-cpu-demo-advanced")

    # no reward model exists: the start is refused, the reason first on the page, linked to its field
    page.click("#start-job")
    page.wait_for_selector("#error-summary")
    summary = page.inner_text("#error-summary")
    assert "Nothing was started" in summary and "there is no reward model yet" in summary
    assert "Reward model job" in summary
    box = page.query_selector("#error-summary").bounding_box()
    assert box["y"] < page.query_selector("#field-project_ids").bounding_box()["y"]
    assert page.evaluate("document.activeElement.id") == "error-summary"
    shot(page, "2-refused-no-reward-model")
    page.click("#error-summary a[href='#id_reward_version_id']")
    assert page.url.endswith("#id_reward_version_id")
    assert "there is no reward model yet" in page.inner_text("#field-reward_version_id")
    assert not TrainingJob.objects.exists()

    # save these settings as a preset, and find it again in the picker
    page.fill("#preset-name", "PPO on my laptop")
    page.click("#save-preset")
    page.wait_for_selector("#preset-applied:has-text('PPO on my laptop')")
    assert JobPreset.objects.get().config["total_episodes"] == 32
    assert page.input_value("#id_total_episodes") == "32"
    assert "PPO on my laptop (saved)" in page.inner_text("#preset-select")
    shot(page, "3-preset-saved")

    # a job the admin starts ends: the next page they load tells them, until they dismiss it
    seed_rankings(demo_project, [labeler, labeler2], n_prompts=4)
    page.goto(f"{live_server.url}/jobs/start/reward/")
    page.fill("#id_steps", "8")
    page.click("#start-job")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job = TrainingJob.objects.get()
    page.wait_for_selector("#job-status:has-text('Succeeded')", timeout=60_000)
    earlier = TrainingJob.objects.create(  # someone else's failed job: its reason in the list, no notice for this admin
        kind="sft",
        status="failed",
        started_at=job.created_at,
        finished_at=job.created_at,
        error="ValueError: no demonstrations match the selection\nTraceback (most recent call last): ...",
    )
    page.goto(f"{live_server.url}/jobs/")
    page.wait_for_selector("#job-notice")
    failure = page.inner_text(f"#job-row-{earlier.pk} .failure-reason")
    assert failure == "ValueError: no demonstrations match the selection"
    assert f"job #{job.pk}" in page.inner_text("#job-notice") and page.inner_text("#job-notice-badge") == "1"
    row = page.inner_text(f"#job-row-{job.pk}")
    assert re.search(r"\d+ s", row), row  # the duration column
    shot(page, "4-job-ended-notice")
    page.click("#dismiss-job-notice")
    page.wait_for_selector("h1:has-text('Training jobs')")
    assert not page.is_visible("#job-notice") and not page.is_visible("#job-notice-badge")
    shot(page, "5-notice-dismissed")
