"""The autopilot: N new rankings start one cycle (never two), its steps follow one another as their jobs end (marked
by the job runner's own functions), a failed step stops the cycle with its reason, pause / resume / change N, and
auto-promote of the reward model on and off. Jobs are started by the real start service; outside the tests that
need a commit, the test transaction keeps their messages from being sent."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, transaction

from config.errors import ServiceError
from rlhf_worker.jobs.runner import _finish
from rlhf_worker.models import Autopilot, ModelVersion, PipelineRun, TrainingJob
from rlhf_worker.services.autopilot import (
    autopilot_configure,
    autopilot_pause,
    autopilot_resume,
    autopilots_tick,
    pipeline_advance,
    pipeline_start,
)
from rlhf_worker.services.jobs import job_cancel, job_mark_lost
from tests.rlhf_worker.autopilot_fixtures import current_job, labelers, project, rank, reward_version, succeed  # noqa: F401


def steps(run: PipelineRun) -> list[tuple[str, str]]:
    return [(s.kind, s.job.status if s.job else "-") for s in run.steps.select_related("job").order_by("position")]


def test_a_cycle_starts_after_n_new_rankings_and_not_before(project, labelers, admin_user):
    rank(project, labelers, 2)  # before the autopilot: not counted
    autopilot = autopilot_configure(
        project=project, every_n_rankings=3, include_ppo=False, auto_promote=False, user=admin_user
    )
    assert autopilot.rankings_at_last_cycle == 2
    rank(project, labelers, 2)
    assert autopilots_tick()["started"] == 0 and not PipelineRun.objects.exists()
    rank(project, labelers, 1)
    assert autopilots_tick()["started"] == 1
    run = PipelineRun.objects.get()
    assert run.status == "running" and run.plan == ["reward", "score", "generate"] and run.rankings_at_start == 5
    assert steps(run) == [("reward", "queued")]
    job = current_job(run)
    assert job.config["project_ids"] == [project.pk] and job.config["base_version_id"] is None
    assert job.created_by == admin_user
    autopilot.refresh_from_db()
    assert autopilot.rankings_at_last_cycle == 5
    rank(project, labelers, 3)
    assert autopilots_tick()["started"] == 0, "a cycle is running: no second one"
    assert PipelineRun.objects.count() == 1


def test_one_active_cycle_per_autopilot_is_a_database_constraint(project, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user
    )
    PipelineRun.objects.create(autopilot=autopilot, plan=["reward"])
    with pytest.raises(IntegrityError), transaction.atomic():
        PipelineRun.objects.create(autopilot=autopilot, plan=["reward"], status="paused")
    PipelineRun.objects.create(autopilot=autopilot, plan=["reward"], status="failed")  # ended ones do not count


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_start_exactly_one_cycle(project, labelers, admin_user, monkeypatch):
    monkeypatch.setattr("rlhf_worker.services.jobs.job_enqueue", lambda *, job_id: None)  # no worker in this test
    autopilot_configure(project=project, every_n_rankings=2, include_ppo=False, auto_promote=False, user=admin_user)
    rank(project, labelers, 2)
    barrier, results, errors = threading.Barrier(2), [], []

    def tick():
        try:
            barrier.wait(timeout=10)
            results.append(autopilots_tick()["started"])
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted(results) == [0, 1]
    run = PipelineRun.objects.get()
    assert steps(run) == [("reward", "queued")] and TrainingJob.objects.count() == 1


def test_steps_follow_one_another_as_jobs_end_and_the_last_ends_the_cycle(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=2, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 2)
    run = pipeline_start(autopilot=autopilot)
    reward_job = current_job(run)
    assert reward_job.kind == "reward"
    version = reward_version(reward_job, 0.7)
    succeed(reward_job, version)  # the runner's end of the job moves the cycle on at once
    run.refresh_from_db()
    assert steps(run) == [("reward", "succeeded"), ("score", "queued")] and run.reward_version == version
    assert current_job(run).config["reward_version_id"] == version.pk
    assert "auto-promote is off" in run.promotion_note and not ModelVersion.objects.filter(is_promoted=True).exists()
    succeed(current_job(run))
    run.refresh_from_db()
    generate = current_job(run)
    assert steps(run)[-1] == ("generate", "queued")
    assert generate.config["policy_version_id"] is None and generate.config["create_tasks"] is True
    assert generate.config["project_ids"] == [project.pk]
    succeed(generate)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.finished_at is not None
    assert [k for k, _ in steps(run)] == ["reward", "score", "generate"]

    # The next cycle's reward job continues from the reward model the last one trained.
    rank(project, labelers, 2)
    assert autopilots_tick()["started"] == 1
    latest = PipelineRun.objects.first()
    assert latest != run and current_job(latest).config["base_version_id"] == version.pk


def test_a_failed_step_stops_the_cycle_with_the_jobs_reason(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    job = current_job(run)
    job.refresh_from_db()
    _finish(job, TrainingJob.Status.FAILED, error="ValueError: the backbone folder is empty\n\nTraceback ...")
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.reason == f"Reward model job #{job.pk} failed: ValueError: the backbone folder is empty"
    assert steps(run) == [("reward", "failed")]
    assert autopilots_tick()["started"] == 0, "the next cycle waits for N more rankings"
    rank(project, labelers, 1)
    assert autopilots_tick()["started"] == 1


def test_a_lost_or_cancelled_job_stops_the_cycle(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    job = current_job(run)
    TrainingJob.objects.filter(pk=job.pk).update(status="running")
    job_mark_lost(job_id=job.pk, reason="Lost: no heartbeat from worker w1 since 12:00:00 UTC")
    run.refresh_from_db()
    assert run.status == "failed" and run.reason.endswith("lost: Lost: no heartbeat from worker w1 since 12:00:00 UTC")

    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    job_cancel(job=current_job(run))  # queued: cancelled at once; the cycle sees it on the next tick here
    autopilots_tick()
    run.refresh_from_db()
    assert run.status == "failed" and "cancelled" in run.reason


def test_a_step_that_cannot_start_stops_the_cycle_saying_why(project, labelers, admin_user):
    """PPO optimises against the promoted reward model: with auto-promote off and none promoted, it cannot start."""
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=True, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    assert run.plan == ["reward", "score", "ppo", "generate"]
    reward_job = current_job(run)
    succeed(reward_job, reward_version(reward_job, 0.6))
    run.refresh_from_db()
    succeed(current_job(run))
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.reason.startswith("the PPO step could not start: no reward model is promoted")
    assert steps(run) == [("reward", "succeeded"), ("score", "succeeded"), ("ppo", "-")]


def test_pause_holds_the_next_step_and_new_cycles_resume_continues(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    autopilot_pause(autopilot=autopilot)
    run.refresh_from_db()
    assert run.status == "paused"
    reward_job = current_job(run)
    succeed(reward_job, reward_version(reward_job, 0.6))  # the job that ran goes on and ends
    autopilots_tick()
    run.refresh_from_db()
    assert steps(run) == [("reward", "succeeded")] and run.status == "paused"
    with pytest.raises(ServiceError, match="still paused"):
        pipeline_start(autopilot=autopilot, force=True)

    autopilot_resume(autopilot=autopilot)
    run.refresh_from_db()
    assert run.status == "running" and steps(run) == [("reward", "succeeded"), ("score", "queued")]

    # Paused, no new cycle starts however many rankings come in.
    succeed(current_job(run))
    succeed(current_job(PipelineRun.objects.get(pk=run.pk)))
    run.refresh_from_db()
    assert run.status == "succeeded"
    autopilot_pause(autopilot=autopilot)
    rank(project, labelers, 3)
    assert autopilots_tick()["started"] == 0
    autopilot_resume(autopilot=autopilot)
    assert autopilots_tick()["started"] == 1


def test_changing_n_applies_to_the_next_cycle(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=2, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 2)
    autopilot = autopilot_configure(
        project=project, every_n_rankings=4, include_ppo=True, auto_promote=True, user=admin_user
    )
    assert Autopilot.objects.count() == 1
    assert (autopilot.every_n_rankings, autopilot.include_ppo, autopilot.auto_promote) == (4, True, True)
    assert autopilot.rankings_at_last_cycle == 0, "changing the settings keeps the count"
    assert autopilots_tick()["started"] == 0
    rank(project, labelers, 2)
    assert autopilots_tick()["started"] == 1
    for bad in (0, -3, "5"):
        with pytest.raises(ServiceError) as err:
            autopilot_configure(
                project=project, every_n_rankings=bad, include_ppo=False, auto_promote=False, user=admin_user
            )
        assert err.value.field == "every_n_rankings"
    with pytest.raises(ServiceError) as err:
        autopilot_configure(
            project=project,
            every_n_rankings=3,
            include_ppo=False,
            auto_promote=False,
            presets={"reward": "No such preset"},
            user=admin_user,
        )
    assert err.value.field == "preset_reward" and "No such preset" in str(err.value)


def test_the_chosen_preset_sets_the_jobs_settings(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project,
        every_n_rankings=1,
        include_ppo=False,
        auto_promote=False,
        presets={"reward": "quick cpu demo"},
        user=admin_user,
    )
    assert autopilot.presets == {"reward": "Quick CPU demo"}
    rank(project, labelers, 1)
    job = current_job(pipeline_start(autopilot=autopilot))
    assert (job.config["epochs"], job.config["device"], job.config["max_length"]) == (1, "cpu", 128)


def run_reward_step(project, labelers, autopilot, accuracy):
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    job = current_job(run)
    version = reward_version(job, accuracy)
    succeed(job, version)
    run.refresh_from_db()
    version.refresh_from_db()
    return run, version


def test_auto_promote_promotes_the_reward_model_only_when_held_out_accuracy_does_not_drop(
    project, labelers, admin_user
):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=True, auto_promote=True, user=admin_user
    )
    run, first = run_reward_step(project, labelers, autopilot, 0.70)
    assert first.is_promoted and "none was promoted before" in run.promotion_note
    # PPO (after the score step) optimises against the now promoted reward model, from the promoted policy
    succeed(current_job(run))
    run.refresh_from_db()
    ppo = current_job(run)
    assert ppo.kind == "ppo" and ppo.config["reward_version_id"] is None and ppo.config["base_version_id"] is None
    PipelineRun.objects.filter(pk=run.pk).update(status="failed")  # end it, to start the next

    run, lower = run_reward_step(project, labelers, autopilot, 0.65)
    first.refresh_from_db()
    assert not lower.is_promoted and first.is_promoted
    assert run.promotion_note == (
        f"Not promoted: held-out accuracy of reward model #{lower.pk} is 65.0%, below the "
        f"70.0% of the promoted #{first.pk}."
    )
    assert run.status == "running", "a model not promoted does not stop the cycle"
    PipelineRun.objects.filter(pk=run.pk).update(status="failed")

    run, equal = run_reward_step(project, labelers, autopilot, 0.70)
    assert equal.is_promoted and "not below the 70.0%" in run.promotion_note
    assert not ModelVersion.objects.filter(kind="policy", is_promoted=True).exists(), "policies are never auto-promoted"
    PipelineRun.objects.filter(pk=run.pk).update(status="failed")

    autopilot_configure(project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user)
    run, better = run_reward_step(project, labelers, autopilot, 0.90)
    assert not better.is_promoted and "auto-promote is off" in run.promotion_note


def test_pipeline_advance_does_nothing_while_the_job_runs(project, labelers, admin_user):
    autopilot = autopilot_configure(
        project=project, every_n_rankings=1, include_ppo=False, auto_promote=False, user=admin_user
    )
    rank(project, labelers, 1)
    run = pipeline_start(autopilot=autopilot)
    TrainingJob.objects.filter(pk=current_job(run).pk).update(status="running")
    for _ in range(3):
        assert pipeline_advance(run_id=run.pk).status == "running"
    assert steps(run) == [("reward", "running")]
    with pytest.raises(ServiceError, match="still running"):
        pipeline_start(autopilot=autopilot, force=True)


def test_turning_the_autopilot_on_puts_new_tasks_first_unless_the_researcher_chose_an_order(project, admin_user):
    from labeling_app.models import Project, QueueOrder

    autopilot_configure(project=project, every_n_rankings=3, include_ppo=False, auto_promote=False, user=admin_user)
    assert Project.objects.get(pk=project.pk).queue_order == QueueOrder.NEWEST

    Autopilot.objects.filter(project=project).delete()
    Project.objects.filter(pk=project.pk).update(queue_order=QueueOrder.UNCERTAINTY)
    project.refresh_from_db()
    autopilot_configure(project=project, every_n_rankings=5, include_ppo=False, auto_promote=False, user=admin_user)
    assert Project.objects.get(pk=project.pk).queue_order == QueueOrder.UNCERTAINTY
