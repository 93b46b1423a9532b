"""Reads for the training dashboard: job kinds, metric series, the model registry, connected workers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models.functions import Lower
from django.utils import timezone
from redis.exceptions import RedisError

from rlhf_worker.charts import chart_groups
from rlhf_worker.models import JobMetric, JobNoticesSeen, JobPreset, ModelVersion, TrainingJob

logger = logging.getLogger(__name__)

# The loop's order: generate candidates, SFT, reward model, PPO, score.
KIND_ORDER = ["generate", "sft", "reward", "ppo", "score"]


@dataclass(frozen=True)
class JobKindInfo:
    kind: str
    label: str
    available: bool
    description: str = ""
    reason: str = ""
    config_cls: type | None = None
    common_fields: tuple[str, ...] | None = None  # shown first on the start form; None: every field
    quick_cpu_demo: dict[str, Any] | None = None


def job_kind_info(kind: str) -> JobKindInfo:
    """A job kind, its start form's Config, and whether the registry (`rlhf_worker.jobs.JOB_MODULES`) runs it."""
    # Imported here, not with the URLs: the job modules load torch, which only the jobs pages need.
    from rlhf_worker.jobs import job_module

    label = TrainingJob.Kind(kind).label
    try:
        module = job_module(kind)
    except LookupError:
        return JobKindInfo(
            kind,
            label,
            False,
            reason=f"not installed: no module is registered for {kind} jobs in rlhf_worker.jobs.JOB_MODULES",
        )
    description = ((module.__doc__ or "").strip().splitlines() or [""])[0]
    return JobKindInfo(
        kind,
        label,
        True,
        description=description,
        config_cls=module.Config,
        common_fields=getattr(module, "COMMON_FIELDS", None),
        quick_cpu_demo=getattr(module, "QUICK_CPU_DEMO", None),
    )


DEFAULTS_PRESET, QUICK_CPU_PRESET = "Defaults", "Quick CPU demo"
BUILTIN_PRESETS = (DEFAULTS_PRESET, QUICK_CPU_PRESET)


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict[str, Any]
    builtin: bool
    pk: int | None = None


def job_presets(info: JobKindInfo) -> list[Preset]:
    """The presets of a job kind: "Defaults", "Quick CPU demo" (when the kind defines one), then those the admins saved."""
    presets = [Preset(DEFAULTS_PRESET, {}, True)]
    if info.quick_cpu_demo:
        presets.append(Preset(QUICK_CPU_PRESET, dict(info.quick_cpu_demo), True))
    presets += [
        Preset(p.name, p.config, False, p.pk) for p in JobPreset.objects.filter(kind=info.kind).order_by(Lower("name"))
    ]
    return presets


def job_preset_get(info: JobKindInfo, name: str) -> Preset | None:
    """The preset of that name (case does not matter), or None."""
    wanted = name.strip().casefold()
    return next((p for p in job_presets(info) if p.name.casefold() == wanted), None)


def job_kinds() -> list[JobKindInfo]:
    kinds = [k for k in KIND_ORDER if k in TrainingJob.Kind.values]
    kinds += [k for k in TrainingJob.Kind.values if k not in kinds]
    return [job_kind_info(k) for k in kinds]


def job_list(*, kind: str | None = None, status: str | None = None, limit: int = 100):
    jobs = TrainingJob.objects.select_related("created_by", "result_version").defer("log", "samples")
    if kind:
        jobs = jobs.filter(kind=kind)
    if status:
        jobs = jobs.filter(status=status)
    return jobs[:limit]


@dataclass(frozen=True)
class JobNotices:
    jobs: list  # the newest ended jobs, at most `limit`
    count: int  # how many ended since the user last dismissed the notice
    until: Any  # the newest finished_at among them: dismissing marks everything up to it as seen


def job_notices(*, user, limit: int = 5) -> JobNotices:
    """The user's own jobs that ended since they last dismissed the notice (all their ended jobs if they never did).

    Read-only: only dismissing (a POST) moves the mark, so a job that ends while the page is open is not lost.
    """
    ended = TrainingJob.objects.filter(created_by=user, finished_at__isnull=False).defer("log", "samples", "config")
    seen = JobNoticesSeen.objects.filter(user=user).values_list("seen_until", flat=True).first()
    if seen is not None:
        ended = ended.filter(finished_at__gt=seen)
    jobs = list(ended.order_by("-finished_at", "-pk")[:limit])
    count = len(jobs) if len(jobs) < limit else ended.count()
    return JobNotices(jobs=jobs, count=count, until=jobs[0].finished_at if jobs else None)


def job_get(*, pk: int) -> TrainingJob | None:
    """One job with who started it and the version it registered (None if there is no such job)."""
    return TrainingJob.objects.select_related("created_by", "result_version").filter(pk=pk).first()


RESUMABLE_KINDS = (TrainingJob.Kind.REWARD, TrainingJob.Kind.SFT, TrainingJob.Kind.PPO)
RESUMABLE_STATUSES = (TrainingJob.Status.FAILED, TrainingJob.Status.CANCELLED, TrainingJob.Status.LOST)


def job_resumable(*, job: TrainingJob) -> bool:
    """Whether the job's page offers Resume: a reward, SFT or PPO job that ended unfinished (cancelled, failed or
    lost) and left a checkpoint (a new job with resume_job_id continues it; `services.jobs.job_resume`)."""
    from rlhf_worker.training.checkpoint import find_checkpoint  # torch-free: only the folder is looked at

    return (
        job.kind in RESUMABLE_KINDS and job.status in RESUMABLE_STATUSES and find_checkpoint(job.output_dir) is not None
    )


def job_config_to_copy(*, pk: int, kind: str) -> dict[str, Any] | None:
    """The stored config of job `pk` if it is a `kind` job, to prefill a new start form with."""
    job = TrainingJob.objects.filter(pk=pk, kind=kind).only("config").first()
    return job.config if job else None


def jobs_running() -> list[TrainingJob]:
    """Every running job (without its log and samples), for the workers page."""
    return list(TrainingJob.objects.filter(status=TrainingJob.Status.RUNNING).defer("log", "samples"))


def jobs_lost(*, limit: int = 20) -> list[TrainingJob]:
    """The most recently lost jobs, newest first."""
    return list(
        TrainingJob.objects.filter(status=TrainingJob.Status.LOST)
        .defer("log", "samples")
        .order_by("-finished_at")[:limit]
    )


def job_series(*, job: TrainingJob, after_id: int = 0, limit: int = 20_000) -> dict[str, Any]:
    """The job's metric points with id > after_id, by key, plus how they group into charts.

    The page asks again with the returned `last_id`, so each poll carries only new points.
    """
    rows = list(
        JobMetric.objects.filter(job=job, id__gt=after_id)
        .order_by("id")
        .values_list("id", "key", "step", "value")[:limit]
    )
    series: dict[str, dict[str, list]] = {}
    for _, key, step, value in rows:
        s = series.setdefault(key, {"x": [], "y": []})
        s["x"].append(step)
        s["y"].append(value)
    keys = JobMetric.objects.filter(job=job).order_by().values_list("key", flat=True).distinct()
    return {
        "job": job.pk,
        "status": job.status,
        "finished": job.is_finished,
        "progress": job.progress,
        "step": job.step,
        "total_steps": job.total_steps,
        "last_id": rows[-1][0] if rows else after_id,
        "more": len(rows) == limit,
        "series": series,
        "charts": chart_groups(keys),
    }


def model_version_get(*, pk: int) -> ModelVersion | None:
    """One model version with its lineage (parent, reward model, training job); None if there is none."""
    return ModelVersion.objects.select_related("parent", "reward_model", "training_job").filter(pk=pk).first()


def model_version_lineage(version: ModelVersion) -> dict[str, list[ModelVersion]]:
    """What came from a version: versions trained from it, and (for a reward model) policies optimised against it."""
    return {"children": list(version.children.all()), "policies_trained": list(version.policies_trained.all())}


def promoted_version(kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, is_promoted=True).first()


def promoted_policy() -> ModelVersion | None:
    """The policy generation jobs use when no version is chosen (None: the built-in default model)."""
    return promoted_version(ModelVersion.Kind.POLICY)


def model_version_choices(kind: str) -> list[tuple[int, str]]:
    return [
        (v.pk, f"#{v.pk} {v.name}{' (promoted)' if v.is_promoted else ''}")
        for v in ModelVersion.objects.filter(kind=kind).only("pk", "name", "is_promoted")
    ]


def job_choices(kind: str, *, limit: int = 50) -> list[tuple[int, str]]:
    """Recent jobs of a kind for pickers such as resume_job_id (unfinished runs first in the label)."""
    return [
        (j.pk, f"#{j.pk} {j.get_status_display().lower()}, {j.created_at:%Y-%m-%d %H:%M}, step {j.step}")
        for j in TrainingJob.objects.filter(kind=kind).only("pk", "status", "created_at", "step")[:limit]
    ]


# Metric keys as the job kinds write them, with older/plainer spellings as fallbacks.
METRIC_KEYS = {
    "accuracy": ("eval/accuracy", "held_out_accuracy", "accuracy"),
    "agreement": ("eval/labeler_agreement", "labeler_agreement", "agreement"),
    "eval_loss": ("eval/loss",),
    # A policy's score: its mean reward on a PPO job's eval prompts (also recorded on the starting policy) before
    # the last training step's mean, which a starting policy does not have.
    "score": ("eval/reward_mean", "objective/scores", "eval/score", "score", "mean_score"),
    "base_score": ("eval/base_reward_mean",),
    "eval_cut": ("eval/cut_fraction",),
    "kl": ("objective/kl", "kl"),
}


def metric_value(metrics: dict | None, name: str) -> float | None:
    for key in METRIC_KEYS[name]:
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def policy_evaluation(metrics: dict | None) -> dict[str, Any] | None:
    """Where a policy's score comes from, when a PPO job's evaluation gave it: how many prompts, which reward model,
    and (on the trained policy's row) the other version scored on the same prompts; None otherwise."""
    metrics = metrics or {}
    if not isinstance(metrics.get("eval/reward_mean"), (int, float)):
        return None
    return {
        "prompts": metrics.get("eval/prompts"),
        "reward_model_id": metrics.get("eval/reward_model_id"),
        "job_id": metrics.get("eval/job_id"),
        "compared_with_id": metrics.get("eval/compared_with_id"),
    }


def model_versions_overview() -> dict[str, list[dict[str, Any]]]:
    """Every version with its lineage and the metrics compared side by side, split by kind."""
    versions = ModelVersion.objects.select_related("parent", "reward_model", "training_job").order_by("-created_at")
    out: dict[str, list[dict[str, Any]]] = {"reward": [], "policy": []}
    for v in versions:
        row = {"version": v, "data": data_summary(v.data_snapshot)}
        for name in METRIC_KEYS:
            row[name] = metric_value(v.metrics, name)
        row["evaluation"] = policy_evaluation(v.metrics)
        out.setdefault(v.kind, []).append(row)
    return out


def data_summary(snapshot: dict | None) -> str:
    """One readable line for a version's data snapshot (projects, date range, counts)."""
    snapshot = snapshot or {}
    parts = []
    if snapshot.get("project_ids"):
        parts.append("projects " + ", ".join(f"#{p}" for p in snapshot["project_ids"]))
    if snapshot.get("date_from") or snapshot.get("date_to"):
        parts.append(f"{snapshot.get('date_from') or '…'} → {snapshot.get('date_to') or '…'}")
    for key, value in snapshot.items():
        if key in ("project_ids", "date_from", "date_to") or value in (None, "") or isinstance(value, dict):
            continue
        if isinstance(value, list):
            if key.endswith("_ids"):  # annotation_ids -> "120 annotations"
                parts.append(f"{len(value)} {key[:-4].replace('_', ' ')}s")
            continue
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


# --- workers -----------------------------------------------------------------------------------
WORKERS_CACHE_KEY = "rlhf_worker:workers_overview"
SWEEP_CACHE_KEY = "rlhf_worker:jobs_sweep:last"


def jobs_sweep_age() -> float | None:
    """Seconds since the scheduled job sweep last ran (None: not known, e.g. no scheduler runs, or Redis is down)."""
    try:
        last = cache.get(SWEEP_CACHE_KEY)
    except (RedisError, OSError):
        return None
    return max(0.0, time.time() - last) if last is not None else None


def _queue_device(name: str) -> str:
    return "GPU" if "gpu" in name.lower() else "CPU"


def workers_overview(*, timeout: float = 1.0, cache_seconds: float = 5.0) -> dict[str, Any]:
    """Connected Celery workers, their queues (CPU/GPU) and what each runs, cached for a few seconds.

    One broadcast waits `timeout` for replies; the follow-up ones name the workers that answered,
    so they return as soon as all of them reply.
    """
    cached = cache.get(WORKERS_CACHE_KEY)
    if cached is not None:
        return cached
    from config.celery import app

    result: dict[str, Any] = {"workers": [], "error": "", "checked_at": timezone.now()}
    try:
        queues = app.control.inspect(timeout=timeout).active_queues() or {}
        names = sorted(queues)
        active, stats = {}, {}
        if names:
            targeted = app.control.inspect(timeout=timeout, destination=names, limit=len(names))
            active = targeted.active() or {}
            stats = targeted.stats() or {}
    except Exception as exc:  # broker down: the page says so instead of failing
        logger.warning("could not inspect Celery workers: %s", exc)
        result["error"] = f"Could not reach the Celery broker: {type(exc).__name__}: {exc}"
        cache.set(WORKERS_CACHE_KEY, result, cache_seconds)
        return result

    task_ids = {t.get("id") for tasks in active.values() for t in tasks or []}
    jobs_by_task = {
        j.celery_task_id: j for j in TrainingJob.objects.filter(celery_task_id__in=[t for t in task_ids if t])
    }
    for name in names:
        worker_stats = stats.get(name) or {}
        pool = worker_stats.get("pool") or {}
        running = []
        for task in active.get(name) or []:
            job = jobs_by_task.get(task.get("id"))
            running.append(
                {
                    "task_id": task.get("id"),
                    "name": task.get("name"),
                    "job_id": job.pk if job else None,
                    "job_kind": job.get_kind_display() if job else "",
                    "job_status": job.status if job else "",
                }
            )
        result["workers"].append(
            {
                "name": name,
                "queues": [
                    {
                        "name": q.get("name"),
                        "device": _queue_device(q.get("name", "")),
                        "training": q.get("name") == settings.TRAINING_QUEUE,
                    }
                    for q in queues.get(name) or []
                ],
                "concurrency": pool.get("max-concurrency"),
                "pool": (pool.get("implementation") or "").rsplit(":", 1)[-1],
                "pid": worker_stats.get("pid"),
                "uptime": worker_stats.get("uptime"),
                "running": running,
            }
        )
    cache.set(WORKERS_CACHE_KEY, result, cache_seconds)
    return result


# --- autopilot ---------------------------------------------------------------------------------
def autopilot_for_project(*, project_id: int):
    """The project's autopilot, or None when it has none."""
    from rlhf_worker.models import Autopilot

    return Autopilot.objects.select_related("project", "created_by").filter(project_id=project_id).first()


def autopilot_projects() -> list[dict[str, Any]]:
    """Every project with its autopilot (or None) and its latest cycle, for the autopilot overview (two queries)."""
    from labeling_app.models import Project
    from rlhf_worker.models import Autopilot, PipelineRun

    autopilots = {a.project_id: a for a in Autopilot.objects.all()}
    latest: dict[int, PipelineRun] = {}
    for run in (
        PipelineRun.objects.filter(autopilot__in=list(autopilots.values()))
        .order_by("autopilot_id", "-created_at", "-pk")
        .distinct("autopilot_id")
    ):
        latest[run.autopilot_id] = run
    rows = []
    for project in Project.objects.order_by("name").only("pk", "name"):
        autopilot = autopilots.get(project.pk)
        rows.append(
            {"project": project, "autopilot": autopilot, "latest": latest.get(autopilot.pk) if autopilot else None}
        )
    return rows


def pipeline_step_of_job(*, job_id: int):
    """The autopilot cycle step that started the job (with its cycle and project), or None."""
    from rlhf_worker.models import PipelineStep

    return PipelineStep.objects.select_related("run__autopilot__project").filter(job_id=job_id).first()


def pipeline_runs(*, autopilot, limit: int = 20) -> list[dict[str, Any]]:
    """The autopilot's newest cycles, each with one entry per planned step: the step's job (without log and samples)
    when it started, else None (not reached yet). Three queries whatever the number of cycles."""
    from django.db.models import Prefetch

    from rlhf_worker.models import PipelineStep

    steps = (
        PipelineStep.objects.select_related("job").defer("job__log", "job__samples", "job__config").order_by("position")
    )
    runs = list(
        autopilot.runs.select_related("reward_version").prefetch_related(Prefetch("steps", queryset=steps))[:limit]
    )
    out = []
    for run in runs:
        started = {step.position: step for step in run.steps.all()}
        plan = [
            {
                "position": i,
                "kind": kind,
                "label": TrainingJob.Kind(kind).label,
                "step": started.get(i),
                "job": started[i].job if i in started else None,
            }
            for i, kind in enumerate(run.plan, start=1)
        ]
        generate = next((p["job"] for p in plan if p["kind"] == TrainingJob.Kind.GENERATE and p["job"]), None)
        out.append(
            {
                "run": run,
                "plan": plan,
                "tasks_created": int((generate.summary or {}).get("generate/tasks", 0)) if generate else None,
            }
        )
    return out
