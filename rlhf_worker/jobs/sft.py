"""SFT job: fine-tune a policy version on the projects' demonstrations and register the result as a new version."""

from __future__ import annotations

from dataclasses import dataclass, field

from config.errors import ServiceError
from labeling_app.selectors.training_data import demonstrations_for_training, has_demonstrations
from rlhf_worker.jobs.common import (
    check_resume,
    run_training,
    subconfig,
    version_name,
    write_data_snapshot,
)
from rlhf_worker.jobs.policy_common import (
    DataSelection,
    check_policy,
    check_selection,
    fresh_selection,
    resolve_policy,
    resumed_run,
    selection_text,
)
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.training.checkpoint import CHECKPOINT_DIR
from rlhf_worker.training.config_base import ConfigError, config_to_dict
from rlhf_worker.training.sft import SFTConfig


# The start form shows these first; every other setting goes under "Advanced".
COMMON_FIELDS = ("project_ids", "base_version_id", "epochs", "learning_rate", "name", "device")
# The "Quick CPU demo" preset: a run of a minute or two on a laptop CPU (the rest stays at its default).
QUICK_CPU_DEMO = {"epochs": 1, "batch_size": 4, "max_seq_len": 256, "device": "cpu"}


@dataclass(frozen=True)
class Config(SFTConfig, DataSelection):
    """SFT settings plus which demonstrations and which starting policy."""

    base_version_id: int | None = field(
        default=None,
        metadata={"help": "Policy version to start from; empty = the promoted policy, else the default model."},
    )
    resume_job_id: int | None = field(
        default=None,
        metadata={
            "help": "An earlier SFT job (cancelled, failed or lost) whose last checkpoint, starting policy and demonstrations this job continues (with the same settings)."
        },
    )
    name: str = field(default="", metadata={"help": "Name of the new policy version (default: 'SFT (job #N)')."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, or cuda[:N]."})

    def validate(self) -> None:
        self.validate_selection()
        SFTConfig.validate(self)
        if len(self.name) > 200:
            raise ConfigError("name", "must be at most 200 characters")


def check(cfg: Config) -> None:
    """At start: the data selection (projects, dates) holds demonstrations, and the chosen starting policy exists;
    or the job to resume left a checkpoint written with these settings."""
    check_selection(cfg)
    if cfg.resume_job_id is not None:  # it continues from that job's starting policy and demonstrations
        check_resume(TrainingJob.Kind.SFT, cfg.resume_job_id, SFTConfig, cfg)
        return
    check_policy(cfg.base_version_id, field_name="base_version_id")
    if not has_demonstrations(
        project_ids=cfg.project_ids, prompt_ids=cfg.prompt_ids, date_from=cfg.date_from, date_to=cfg.date_to
    ):
        raise ServiceError(
            f"no demonstrations in {selection_text(cfg)}: SFT learns from them; write some on the "
            "prompts' pages (or import them) first, or widen the selection",
            field="project_ids",
        )


def run(job, ctx) -> ModelVersion | None:
    cfg: Config = ctx.config
    resumed = resumed_run(TrainingJob.Kind.SFT, cfg)
    if resumed:  # exactly the starting policy and demonstrations of the interrupted run, in its order
        base, selection = resumed.base, resumed.selection()
        demos = list(
            demonstrations_for_training(project_ids=(), demonstration_ids=resumed.snapshot["demonstration_ids"])
        )
    else:
        base, selection = resolve_policy(cfg.base_version_id, field_name="base_version_id"), fresh_selection(cfg)
        demos = list(
            demonstrations_for_training(
                project_ids=cfg.project_ids, prompt_ids=cfg.prompt_ids, date_from=cfg.date_from, date_to=cfg.date_to
            )
        )
    resume_from = resumed.checkpoint if resumed else None
    if not demos:
        raise ValueError("no demonstrations match the selection: write some on the prompts first")
    snapshot = {
        "demonstration_ids": [d["demonstration_id"] for d in demos],
        "base_version_id": base.pk,
        **selection,
        "resumed_from_job": cfg.resume_job_id,
    }
    write_data_snapshot(ctx.out_dir, snapshot)
    resuming = f"resuming job {cfg.resume_job_id} " if resume_from else ""
    ctx.log(f"SFT {resuming}from {base} on {len(demos)} demonstrations")
    result = run_training(
        "sft",
        subconfig(SFTConfig, cfg),
        {
            "examples": [(d["prompt"], d["completion"]) for d in demos],
            "out_dir": str(ctx.out_dir / "policy"),
            "checkpoint_dir": str(ctx.out_dir / CHECKPOINT_DIR),
            "resume_from": str(resume_from) if resume_from else None,
            "base_path": base.path,
            "device": cfg.device,
        },
        ctx,
    )
    if result.stopped:
        ctx.log(
            f"stopped at step {result.steps}; checkpoint kept: start an SFT job with resume_job_id={job.pk} "
            "(or Resume on its page) to continue"
        )
        return None
    if result.path is None:
        return None
    ctx.log(f"held-out loss {result.eval_loss_before} -> {result.eval_loss}")
    return ctx.db(
        lambda: ModelVersion.objects.create(
            kind=ModelVersion.Kind.POLICY,
            name=version_name(job, cfg.name, "SFT"),
            path=result.path,
            parent=base,
            training_job=job,
            config=config_to_dict(cfg),
            metrics={
                "train/loss": result.train_loss,
                "eval/loss": result.eval_loss,
                "eval/loss_before": result.eval_loss_before,
                "train/steps": result.steps,
                "train/seconds": result.elapsed_s,
            },
            data_snapshot={**snapshot, "num_train": result.num_train, "num_eval": result.num_eval},
        ),
        "registering the model version",
    )
