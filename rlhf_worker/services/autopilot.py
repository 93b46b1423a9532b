"""Writes on the autopilot: a project's training cycle run on a schedule, as one pipeline of jobs.

A cycle (`PipelineRun`) is started by the scheduler (`autopilots_tick`, Celery beat every AUTOPILOT_TICK_SECONDS) once
a project has `every_n_rankings` new human rankings since its last cycle, or by an admin ("Run a cycle now"). Its
steps run one after another, each a job started through the one start service (`services.jobs.job_start`):

1. reward: the project's rankings, continuing from the newest reward model trained on the project (if any);
2. score: the project's completions scored by that new reward model;
3. PPO (when `include_ppo`): the promoted policy against the promoted reward model;
4. generate: new ranking tasks from the promoted policy (they are the project's newest tasks; turning the autopilot on
   moves a project on the default queue order, oldest first, to newest first, so they are labeled first).

A step starts when the previous one's job ends: at once from the job runner (`pipeline_job_ended`, called where
the runner records a job's end), and in any case on the scheduler's next tick (which also covers jobs marked lost
by the sweep and starts a step again whose job the broker refused). A failed, cancelled or lost job stops the
cycle with that job's reason. Pausing stops new cycles and new steps; the job that runs goes on.

What auto-promote promotes (opt-in, `Autopilot.auto_promote`): only the cycle's reward model, and only when its
held-out accuracy (`eval/accuracy`) is at least that of the reward model promoted before (or no reward model was
promoted). Policies are never promoted by the autopilot: PPO and generation use the policy a person promoted.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.models import QueueOrder
from labeling_app.selectors.training_data import human_ranking_counts
from rlhf_worker.broker import BrokerUnavailable
from rlhf_worker.models import Autopilot, ModelVersion, PipelineRun, PipelineStep, TrainingJob
from rlhf_worker.selectors import DEFAULTS_PRESET, job_kind_info, job_preset_get, metric_value
from rlhf_worker.services.jobs import job_start
from rlhf_worker.services.models import model_version_promote

logger = logging.getLogger(__name__)

STEP_KINDS = (TrainingJob.Kind.REWARD, TrainingJob.Kind.SCORE, TrainingJob.Kind.PPO, TrainingJob.Kind.GENERATE)
MAX_EVERY_N = 1_000_000


def cycle_plan(*, include_ppo: bool) -> list[str]:
    """The job kinds of a cycle, in order."""
    return [k.value for k in STEP_KINDS if include_ppo or k != TrainingJob.Kind.PPO]


# --- settings -----------------------------------------------------------------------------------
def autopilot_configure(
    *,
    project,
    every_n_rankings: int,
    include_ppo: bool,
    auto_promote: bool,
    presets: dict[str, str] | None = None,
    user,
) -> Autopilot:
    """Set up (or change) the project's autopilot. Set up now, it counts the rankings from now on: the first cycle
    starts after `every_n_rankings` new ones. Raises ServiceError naming the wrong field."""
    if not isinstance(every_n_rankings, int) or not 1 <= every_n_rankings <= MAX_EVERY_N:
        raise ServiceError(
            f"must be a whole number from 1 to {MAX_EVERY_N:,}, got {every_n_rankings!r}", field="every_n_rankings"
        )
    chosen = {}
    for kind, name in (presets or {}).items():
        if kind not in STEP_KINDS:
            raise ServiceError(
                f"{kind!r} is not a step of a cycle; the steps are {', '.join(STEP_KINDS)}", field=f"preset_{kind}"
            )
        name = (name or "").strip() or DEFAULTS_PRESET
        preset = job_preset_get(job_kind_info(kind), name)
        if preset is None:
            raise ServiceError(
                f"there is no {kind} preset called {name!r}; choose one of the list", field=f"preset_{kind}"
            )
        chosen[kind] = preset.name
    with transaction.atomic():
        autopilot = Autopilot.objects.select_for_update().filter(project=project).first()
        if autopilot is None:
            counted = human_ranking_counts(project_ids=[project.pk])[project.pk]
            autopilot = Autopilot(project=project, rankings_at_last_cycle=counted, created_by=user)
            # Each cycle's generated tasks go to the front of the queue: a project still on the default order
            # (oldest first) hands out newest first from now on. A researcher's own choice of order is kept.
            if project.queue_order == QueueOrder.OLDEST:
                project.queue_order = QueueOrder.NEWEST
                project.save(update_fields=["queue_order"])
        autopilot.every_n_rankings, autopilot.include_ppo, autopilot.auto_promote = (
            every_n_rankings,
            include_ppo,
            auto_promote,
        )
        autopilot.presets = {**(autopilot.presets or {}), **chosen}
        autopilot.save()
    logger.info("%s set up by %s", autopilot, getattr(user, "username", user))
    return autopilot


def autopilot_pause(*, autopilot: Autopilot) -> Autopilot:
    """No cycle starts, and a running cycle starts no next step (its running job goes on); resume to continue."""
    with transaction.atomic():
        autopilot = Autopilot.objects.select_for_update().get(pk=autopilot.pk)
        autopilot.paused = True
        autopilot.save(update_fields=["paused", "updated_at"])
        autopilot.runs.filter(status=PipelineRun.Status.RUNNING).update(status=PipelineRun.Status.PAUSED)
    return autopilot


def autopilot_resume(*, autopilot: Autopilot) -> Autopilot:
    """Cycles start again; a paused cycle continues with its next step (at once if its job has ended)."""
    with transaction.atomic():
        autopilot = Autopilot.objects.select_for_update().get(pk=autopilot.pk)
        autopilot.paused = False
        autopilot.save(update_fields=["paused", "updated_at"])
        resumed = list(autopilot.runs.filter(status=PipelineRun.Status.PAUSED).values_list("pk", flat=True))
        autopilot.runs.filter(pk__in=resumed).update(status=PipelineRun.Status.RUNNING)
    for run_id in resumed:
        pipeline_advance(run_id=run_id)
    return autopilot


# --- cycles -------------------------------------------------------------------------------------
def pipeline_start(*, autopilot: Autopilot, user=None, force: bool = False) -> PipelineRun | None:
    """Start a cycle of the autopilot if one is due (`every_n_rankings` new human rankings) or `force`d by an admin;
    None when none is due. Never two at once: the autopilot row is locked while deciding, and a partial unique
    index allows one running or paused cycle per autopilot. An admin's start of a paused autopilot, or while a
    cycle runs, is refused with a ServiceError saying so."""
    with transaction.atomic():
        autopilot = Autopilot.objects.select_for_update().get(pk=autopilot.pk)
        active = autopilot.runs.filter(status__in=PipelineRun.ACTIVE).first()
        if active is not None or autopilot.paused:
            if force:
                raise ServiceError(
                    f"cycle #{active.pk} is still {active.status}: wait until it ends"
                    if active
                    else "the autopilot is paused: resume it first",
                    status=409,
                )
            return None
        counted = human_ranking_counts(project_ids=[autopilot.project_id])[autopilot.project_id]
        if not force and counted - autopilot.rankings_at_last_cycle < autopilot.every_n_rankings:
            return None
        try:
            with transaction.atomic():
                run = PipelineRun.objects.create(
                    autopilot=autopilot,
                    plan=cycle_plan(include_ppo=autopilot.include_ppo),
                    rankings_at_start=counted,
                    started_by=user,
                )
        except IntegrityError:  # another tick's cycle won the race (the partial unique index)
            return None
        autopilot.rankings_at_last_cycle = counted
        autopilot.save(update_fields=["rankings_at_last_cycle", "updated_at"])
    logger.info("%s: cycle #%s started (%s rankings)", autopilot, run.pk, counted)
    pipeline_advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def job_ended_notify(*, job_id: int) -> None:
    """Called where a job's end is recorded (the runner, a cancel, the sweep's lost mark): its cycle moves on now.
    The job's end is already written, so a failure here is only logged: the scheduler's next tick moves it on."""
    try:
        pipeline_job_ended(job_id=job_id)
    except Exception:
        logger.exception("job %s ended, but its autopilot cycle could not be moved on; the scheduler will", job_id)


def pipeline_job_ended(*, job_id: int) -> None:
    """A job ended: the cycle whose current step it is starts its next step (or stops, when the job failed)."""
    for run_id in PipelineStep.objects.filter(job_id=job_id, run__status=PipelineRun.Status.RUNNING).values_list(
        "run_id", flat=True
    ):
        pipeline_advance(run_id=run_id)


def pipeline_advance(*, run_id: int) -> PipelineRun:
    """Move a running cycle on: nothing while its current job runs; the next step once it succeeded (the last step
    ends the cycle); the cycle fails with the job's reason once it failed, was cancelled or lost. Safe to call any
    number of times, from any process: the cycle's row is locked while deciding."""
    starting = None
    try:
        with transaction.atomic():
            run = PipelineRun.objects.select_for_update().select_related("autopilot").get(pk=run_id)
            if run.status != PipelineRun.Status.RUNNING:
                return run
            step = run.steps.select_related("job").order_by("-position").first()
            if step is not None and step.job is None:  # its job was never queued (broker down): start it again
                starting = step
            elif step is not None and not step.job.is_finished:
                return run
            elif step is not None and step.job.status != TrainingJob.Status.SUCCEEDED:
                job = step.job
                return _run_fail(
                    run,
                    f"{job.get_kind_display()} job #{job.pk} {job.status}: "
                    f"{job.error_first_line or 'no reason recorded'}",
                )
            else:
                if step is not None and step.kind == TrainingJob.Kind.REWARD:
                    failed = _after_reward(run, step.job)
                    if failed:
                        return _run_fail(run, failed)
                position = step.position if step else 0
                if position >= len(run.plan):
                    run.status, run.finished_at, run.reason = PipelineRun.Status.SUCCEEDED, timezone.now(), ""
                    run.save(update_fields=["status", "finished_at", "reason"])
                    return run
                starting = PipelineStep.objects.create(run=run, position=position + 1, kind=run.plan[position])
            try:
                config = _step_config(run, starting.kind)
                with transaction.atomic():
                    job = job_start(kind=starting.kind, config=config, user=run.autopilot.created_by)
            except BrokerUnavailable:
                raise
            except ServiceError as exc:
                return _run_fail(run, f"the {TrainingJob.Kind(starting.kind).label} step could not start: {exc}")
            starting.job = job
            starting.save(update_fields=["job"])
            if run.reason:
                run.reason = ""
                run.save(update_fields=["reason"])
        # the job's message is sent once this commits (job_start's on_commit): BrokerUnavailable surfaces here
    except BrokerUnavailable as exc:
        # job_start withdrew the job row, so the step has no job: the next tick starts it again
        PipelineRun.objects.filter(pk=run_id).update(reason=f"Waiting: {exc} The scheduler tries again.")
        logger.warning("cycle #%s: could not queue its %s job: %s", run_id, starting.kind if starting else "next", exc)
    return PipelineRun.objects.get(pk=run_id)


def _run_fail(run: PipelineRun, reason: str) -> PipelineRun:
    run.status, run.reason, run.finished_at = PipelineRun.Status.FAILED, reason, timezone.now()
    run.save(update_fields=["status", "reason", "finished_at"])
    logger.warning("cycle #%s failed: %s", run.pk, reason)
    return run


def _after_reward(run: PipelineRun, job: TrainingJob) -> str:
    """Note the cycle's new reward model and apply auto-promote; a reason to stop the cycle, or ""."""
    version = job.result_version
    if version is None:
        return f"reward job #{job.pk} succeeded but registered no reward model"
    run.reward_version = version
    run.promotion_note = reward_auto_promote(
        version=version, enabled=run.autopilot.auto_promote, who=f"autopilot of project {run.autopilot.project_id}"
    )
    run.save(update_fields=["reward_version", "promotion_note"])
    return ""


def reward_auto_promote(*, version: ModelVersion, enabled: bool, who: str = "autopilot") -> str:
    """Promote the reward model `version` if `enabled` and its held-out accuracy does not drop below the promoted
    reward model's (or none is promoted); returns what was decided, in one sentence."""
    accuracy = metric_value(version.metrics, "accuracy")
    if not enabled:
        return (
            f"Not promoted: auto-promote is off, so promoting reward model #{version.pk} stays a person's decision "
            "(Models page)."
        )
    if accuracy is None:
        return f"Not promoted: reward model #{version.pk} has no held-out accuracy to compare."
    before = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, is_promoted=True).exclude(pk=version.pk).first()
    before_accuracy = metric_value(before.metrics, "accuracy") if before else None
    if before is not None and before_accuracy is not None and accuracy < before_accuracy:
        return (
            f"Not promoted: held-out accuracy of reward model #{version.pk} is {accuracy:.1%}, below the "
            f"{before_accuracy:.1%} of the promoted #{before.pk}."
        )
    model_version_promote(version=version, user=who)
    if before is None:
        return f"Promoted reward model #{version.pk} (held-out accuracy {accuracy:.1%}): none was promoted before."
    if before_accuracy is None:
        return (
            f"Promoted reward model #{version.pk} (held-out accuracy {accuracy:.1%}): the promoted #{before.pk} "
            "had no held-out accuracy."
        )
    return (
        f"Promoted reward model #{version.pk}: held-out accuracy {accuracy:.1%}, not below the {before_accuracy:.1%} "
        f"of #{before.pk}."
    )


def latest_reward_version_of_project(project_id: int) -> ModelVersion | None:
    """The newest reward model trained on the project's rankings (alone or with other projects')."""
    return (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, data_snapshot__project_ids__contains=[project_id])
        .order_by("-created_at", "-pk")
        .first()
    )


def _step_config(run: PipelineRun, kind: str) -> dict[str, Any]:
    """The config of a step's job: the autopilot's preset for the kind, with the data and models the cycle decides."""
    name = (run.autopilot.presets or {}).get(kind) or DEFAULTS_PRESET
    preset = job_preset_get(job_kind_info(kind), name)
    if preset is None:
        raise ServiceError(
            f"the {kind} preset {name!r} no longer exists: choose another one in the autopilot's settings"
        )
    project = [run.autopilot.project_id]
    config = dict(preset.config)
    if kind == TrainingJob.Kind.REWARD:
        base = latest_reward_version_of_project(run.autopilot.project_id)
        config.update(
            project_ids=project,
            date_from="",
            date_to="",
            resume_job_id=None,
            base_version_id=base.pk if base else None,
            name="",
        )
    elif kind == TrainingJob.Kind.SCORE:
        config.update(project_ids=project, reward_version_id=run.reward_version_id)
    elif kind == TrainingJob.Kind.PPO:
        config.update(
            project_ids=project,
            prompt_ids=[],
            date_from="",
            date_to="",
            resume_job_id=None,
            base_version_id=None,
            reward_version_id=None,
            name="",
        )
    elif kind == TrainingJob.Kind.GENERATE:
        config.update(
            project_ids=project, prompt_ids=[], date_from="", date_to="", policy_version_id=None, create_tasks=True
        )
    return config


# --- the scheduler ------------------------------------------------------------------------------
def autopilots_tick() -> dict[str, int]:
    """The scheduled check (Celery beat, every AUTOPILOT_TICK_SECONDS): start the cycles that are due, and move on
    every running cycle whose current job ended (or whose job the broker refused). Returns how many cycles started
    and how many running ones it looked at."""
    started = 0
    idle = list(
        Autopilot.objects.filter(paused=False)
        .exclude(runs__status__in=PipelineRun.ACTIVE)
        .only("pk", "project_id", "rankings_at_last_cycle", "every_n_rankings")
    )
    counts = human_ranking_counts(project_ids=[a.project_id for a in idle]) if idle else {}
    for autopilot in idle:
        if counts[autopilot.project_id] - autopilot.rankings_at_last_cycle >= autopilot.every_n_rankings:
            started += pipeline_start(autopilot=autopilot) is not None
    checked = 0
    for run_id in PipelineRun.objects.filter(status=PipelineRun.Status.RUNNING).values_list("pk", flat=True):
        pipeline_advance(run_id=run_id)
        checked += 1
    return {"started": started, "checked": checked}
