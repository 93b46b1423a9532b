"""Shared by every job kind: the checks of what a config names (projects, model versions), and small helpers.

`check_projects` and `model_version` raise ServiceError naming the config field, so the start form shows
the message beside it. A job's `check(cfg)` calls them when the job is started; `run` calls
`model_version` again when it needs the row, because a version can be deleted while the job waits.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from django.conf import settings

from config.errors import ServiceError
from labeling_app.selectors.training_data import missing_project_ids
from rlhf_worker.models import ModelVersion, TrainingJob, job_output_dir
from rlhf_worker.training.checkpoint import config_mismatch, find_checkpoint
from rlhf_worker.training.config_base import config_to_dict

# What a training job read (label, demonstration or prompt ids; the versions it started from), written beside its
# checkpoint when it starts: a job resuming it reads exactly that again.
DATA_SNAPSHOT_FILE = "data_snapshot.json"
KIND_NAMES = {TrainingJob.Kind.REWARD: "reward", TrainingJob.Kind.SFT: "SFT", TrainingJob.Kind.PPO: "PPO"}


def check_projects(project_ids: Sequence[int]) -> None:
    """Every id names a project."""
    missing = missing_project_ids(project_ids)
    if missing:
        raise ServiceError(f"no project with id {', '.join(map(str, missing))}", field="project_ids")


def model_version(version_id: int, *, kind: str, field: str) -> ModelVersion:
    """The model version `version_id` of `kind` ("policy" or "reward"); ServiceError naming `field` if there is none."""
    version = ModelVersion.objects.filter(pk=version_id, kind=kind).first()
    if version is None:
        raise ServiceError(f"no {kind} model version with id {version_id}", field=field)
    return version


def resumable_job_dir(kind: str, job_id: int) -> Path:
    """The output folder of an earlier `kind` job that left a checkpoint and its data snapshot to continue from;
    ServiceError naming resume_job_id when there is no such job, it has not ended, or it left no checkpoint."""
    name = KIND_NAMES.get(kind, kind)
    previous = TrainingJob.objects.filter(pk=job_id, kind=kind).only("status").first()
    if previous is None:
        raise ServiceError(f"no {name} job with id {job_id}", field="resume_job_id")
    if not previous.is_finished:
        # Its checkpoint is still being rewritten; two runs would also train on one folder's state at once.
        raise ServiceError(
            f"{name} job {job_id} is still {previous.status}: cancel it, or wait until it ends, then resume from it",
            field="resume_job_id",
        )
    folder = job_output_dir(kind, job_id)
    if find_checkpoint(folder) is None or not (folder / DATA_SNAPSHOT_FILE).is_file():
        raise ServiceError(f"{name} job {job_id} left no checkpoint to resume from", field="resume_job_id")
    return folder


def check_resume(kind: str, job_id: int, training_cls: type, cfg: Any) -> None:
    """At start: the job to resume left a checkpoint (`resumable_job_dir`), and this job's training settings are
    the ones it ran with (only where and how wide it runs, and how often it saves, may change)."""
    resumable_job_dir(kind, job_id)
    previous = TrainingJob.objects.only("config").get(pk=job_id).config or {}
    current = config_to_dict(cfg)
    names = [f.name for f in dataclasses.fields(training_cls) if f.name in previous]  # an older job lacks newer ones
    differences = config_mismatch({n: previous[n] for n in names}, {n: current.get(n) for n in names})
    if differences:
        raise ServiceError(
            f"{KIND_NAMES.get(kind, kind)} job {job_id}'s checkpoint was trained with other settings ({differences}): "
            "resume it with the settings it ran with (start from its page's settings)",
            field="resume_job_id",
        )


def write_data_snapshot(out_dir: Path, snapshot: dict[str, Any]) -> None:
    (Path(out_dir) / DATA_SNAPSHOT_FILE).write_text(json.dumps(snapshot))


def read_data_snapshot(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / DATA_SNAPSHOT_FILE).read_text())


def subconfig(cls: type, cfg: Any, **overrides: Any):
    """The training config `cls` from the fields of a job Config that extends it (plus `overrides`)."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}
    values.update(overrides)
    return cls(**values)


def version_name(job, requested: str, default_prefix: str) -> str:
    """The name a new version gets: the one asked for, else e.g. "SFT (job #12)"."""
    return requested or f"{default_prefix} (job #{job.pk})"


def training_processes(cfg: Any) -> int:
    """How many processes the job trains in: its num_processes, else the worker's TRAINING_NUM_PROCESSES, else one
    per GPU this worker sees (1 without a GPU)."""
    from rlhf_worker.training.distributed import resolve_num_processes

    return resolve_num_processes(cfg.num_processes, settings.TRAINING_NUM_PROCESSES)


def run_training(kind: str, cfg: Any, args: dict[str, Any], ctx) -> Any:
    """Train `kind` with the training config `cfg` in as many processes as the job's num_processes (0: the worker's
    TRAINING_NUM_PROCESSES, else one per visible GPU) asks; progress and cancel go through `ctx` as in one process.

    One process runs in this one (as always); several run under torchrun (training/launch.py), whose rank 0 reports
    through a file this process reads: only this process writes to the database.
    """
    from rlhf_worker.training import launch

    processes = training_processes(cfg)
    if processes > 1:
        ctx.log(f"training in {processes} processes, each on 1/{processes} of every batch")
    return launch.run_training(
        kind,
        cfg,
        args,
        num_processes=processes,
        run_dir=ctx.out_dir / "processes",
        on_progress=ctx.report,
        should_stop=ctx.should_stop,
        log=ctx.log,
        stop_grace_s=settings.TRAINING_STOP_GRACE_SECONDS,
    )
