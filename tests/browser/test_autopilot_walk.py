"""Browser: an admin turns the autopilot on for a project, sets N, pauses and resumes; N new rankings start a cycle
that a real worker runs (tiny models) and the page shows it as one pipeline of jobs; a cycle whose reward job fails
shows the reason; the quality page puts the new reward model next to its ceiling."""

from __future__ import annotations

import shutil

import pytest
from django.utils import timezone

from labeling_app.models import Annotation, RankingTask, Rating
from rlhf_worker.models import Autopilot, PipelineRun
from rlhf_worker.services.autopilot import autopilots_tick
from rlhf_worker.training.policy_models import save_tiny_policy
from tests.conftest import ARTIFACTS, login
from tests.rlhf_worker.jobs.conftest import backbone_dir, labeled_project  # noqa: F401  (fixtures)
from tests.rlhf_worker.jobs.test_autopilot_cycle import tiny_presets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.slow]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"autopilot-{name}.png"), full_page=True)


def add_rankings(project, admin_user, count: int) -> None:
    task = RankingTask.objects.filter(project=project).order_by("pk").first()
    RankingTask.objects.filter(pk=task.pk).update(overlap=task.overlap + count)
    for i in range(count):
        person = type(admin_user).objects.create_user(
            username=f"extra-{Annotation.objects.count()}-{i}", password="pw-for-tests-123"
        )
        annotation = Annotation.objects.create(
            task=task, labeler=person, status="submitted", submitted_at=timezone.now()
        )
        for rank, tc in enumerate(task.task_completions.order_by("position"), start=1):
            Rating.objects.create(annotation=annotation, completion_id=tc.completion_id, rank=rank)


def test_admin_runs_a_project_on_autopilot(
    page,
    live_server,
    settings,
    tmp_path,
    labeled_project,
    backbone_dir,  # noqa: F811
    training_queue,
    admin_user,
):
    settings.JOB_POLL_SECONDS = 0.5
    settings.DEFAULT_POLICY = save_tiny_policy(str(tmp_path / "tiny-policy"), seed=0)
    tiny_presets(backbone_dir)
    project = labeled_project
    login(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/jobs/")
    page.click("nav.subnav >> text=Autopilot")
    page.click(f"#autopilots tr[data-project='{project.pk}'] a")
    assert page.inner_text("#autopilot-status") == "off"

    # turn it on: N = 0 is refused beside the field, then N = 3 with the tiny presets and auto-promote
    page.fill("#id_every_n_rankings", "0")
    page.click("#save-autopilot")
    assert "greater than or equal to 1" in page.inner_text("#error-every_n_rankings")
    page.fill("#id_every_n_rankings", "3")
    for kind in ("reward", "score", "generate"):
        page.select_option(f"#id_preset_{kind}", "tiny")
    page.check("#id_auto_promote")
    page.click("#save-autopilot")
    page.wait_for_selector("text=Autopilot turned on")
    assert page.inner_text("#autopilot-status") == "on" and page.inner_text("#new-rankings") == "0 / 3"
    assert "reward model (from the last one) → score completions → generate new tasks" in page.inner_text(
        "#autopilot-plan"
    )
    shot(page, "1-on")

    # change N, pause, resume
    page.fill("#id_every_n_rankings", "2")
    page.click("#save-autopilot")
    page.wait_for_selector("text=Autopilot saved")
    assert page.inner_text("#new-rankings") == "0 / 2"
    page.click("#pause")
    page.wait_for_selector("#resume")
    assert page.inner_text("#autopilot-status") == "paused"
    add_rankings(project, admin_user, 2)
    assert autopilots_tick()["started"] == 0, "paused: no cycle"
    shot(page, "2-paused")
    page.click("#resume")
    page.wait_for_selector("#pause")
    assert page.inner_text("#autopilot-status") == "on"
    assert Autopilot.objects.get().paused is False

    # the scheduler's tick starts the cycle; the page follows the worker through the steps
    assert autopilots_tick()["started"] == 1
    run = PipelineRun.objects.get()
    page.reload()
    page.wait_for_selector(f"#pipeline-{run.pk}[data-status='succeeded']", timeout=240_000)
    steps = page.eval_on_selector_all(
        f"#pipeline-{run.pk} li.pipeline-step", "els => els.map(e => [e.dataset.kind, e.dataset.status])"
    )
    assert steps == [["reward", "succeeded"], ["score", "succeeded"], ["generate", "succeeded"]]
    row = page.inner_text(f"#pipeline-{run.pk}")
    assert "Promoted reward model" in row and "12 new ranking tasks" in row
    job_links = page.eval_on_selector_all(
        f"#pipeline-{run.pk} li.pipeline-step a", "els => els.map(e => e.getAttribute('href'))"
    )
    assert job_links == [f"/jobs/{s.job_id}/" for s in run.steps.order_by("position")]
    shot(page, "3-cycle-succeeded")
    run.refresh_from_db()

    # a cycle whose reward job fails stops there, with the job's reason
    # (the next reward job continues from the last reward model, whose folder is gone)
    shutil.rmtree(run.reward_version.path)
    page.click("#run-now")
    page.wait_for_selector("text=started")
    failed = PipelineRun.objects.exclude(pk=run.pk).get()
    page.wait_for_selector(f"#pipeline-{failed.pk}[data-status='failed']", timeout=120_000)
    reason = page.inner_text(f"#pipeline-{failed.pk} .failure-reason")
    assert (
        reason.startswith(f"Reward model job #{failed.steps.get().job_id} failed:")
        and run.reward_version.path in reason
    )
    assert "Score completions: not run" in page.inner_text(f"#pipeline-{failed.pk}")
    shot(page, "4-cycle-failed")

    # the quality page: the reward model next to its ceiling
    page.goto(f"{live_server.url}/projects/{project.pk}/quality/")
    page.wait_for_selector("#chart-reward-ceiling .main-svg")
    accuracy = page.eval_on_selector("#chart-reward-ceiling", "el => el.data[1].y")
    assert accuracy == [pytest.approx(run.reward_version.metrics["eval/accuracy"])]
    ceiling = page.eval_on_selector("#chart-reward-ceiling", "el => el.data[0].y")
    assert ceiling and all(0 <= y <= 1 for y in ceiling)
    page.locator("#reward-ceiling").scroll_into_view_if_needed()
    shot(page, "5-quality-ceiling")
