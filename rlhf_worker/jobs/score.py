"""Score job: every completion of the chosen projects scored by a reward ModelVersion, stored as CompletionScore rows,
and each task's uncertainty margin (for the queue order "uncertainty") from the same forward pass."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from django.utils import timezone

from config.errors import ServiceError
from labeling_app.selectors.training_data import (
    completion_count,
    completions_to_score,
    ranked_completion_ids,
    task_completion_ids,
)
from labeling_app.services.uncertainty import task_margins_write
from rlhf_worker.jobs.common import check_projects, model_version
from rlhf_worker.jobs.policy_common import selection_text
from rlhf_worker.models import CompletionScore, ModelVersion, TrainingJob
from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.device import device_problem
from rlhf_worker.training.reward import pairs_from_ranks
from rlhf_worker.training.reward_model import RewardScorer, reward_prompt_text
from rlhf_worker.training.uncertainty import DEFAULT_PRIOR_PRECISION, laplace_precision, task_margins

CHUNK = 512  # completions per database round trip (and per progress report)
MARGIN_CHUNK = 5000  # tasks per margin write


# The start form shows these first; every other setting goes under "Advanced".
COMMON_FIELDS = ("project_ids", "reward_version_id", "device")
# The "Quick CPU demo" preset: a run of a minute or two on a laptop CPU (the rest stays at its default).
QUICK_CPU_DEMO = {"batch_size": 16, "device": "cpu"}


@dataclass(frozen=True)
class Config:
    """Which completions to score and with which reward model."""

    project_ids: list[int] = field(default_factory=list, metadata={"help": "Projects whose completions are scored."})
    reward_version_id: int | None = field(
        default=None, metadata={"help": "Reward ModelVersion to score with; empty = the newest reward model."}
    )
    batch_size: int = field(default=32, metadata={"help": "Completions per forward pass."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, or cuda[:N]."})
    prior_precision: float = field(
        default=DEFAULT_PRIOR_PRECISION,
        metadata={
            "help": "λ of the task margins' Laplace approximation: the prior precision (inverse variance) of the "
            "score head's weights. Larger = the labels narrow the reward model's uncertainty less."
        },
    )

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError("batch_size", f"must be between 1 and 4096, got {self.batch_size}")
        if problem := device_problem(self.device):
            raise ConfigError("device", problem)
        if not 0 < self.prior_precision <= 1e6:
            raise ConfigError("prior_precision", f"must be above 0 and at most 1e6, got {self.prior_precision}")


def check(cfg: Config) -> None:
    """At start: the projects exist and hold completions, and there is a reward model to score with."""
    check_projects(cfg.project_ids)
    reward_version_for(cfg)
    if not completion_count(project_ids=cfg.project_ids):
        raise ServiceError(
            f"no completions in {selection_text(cfg)} to score: run a Generate job (or import completions) first",
            field="project_ids",
        )


def reward_version_for(cfg: Config) -> ModelVersion:
    """The chosen reward model version, else the newest one."""
    if cfg.reward_version_id is not None:
        return model_version(cfg.reward_version_id, kind=ModelVersion.Kind.REWARD, field="reward_version_id")
    newest = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at", "-pk").first()
    if newest is None:
        raise ServiceError("there is no reward model yet: train one with a reward job first", field="reward_version_id")
    return newest


def run(job: TrainingJob, ctx) -> None:
    cfg: Config = ctx.config
    version = reward_version_for(cfg)
    scorer = RewardScorer.from_pretrained(version.path, device=cfg.device)
    total = completion_count(project_ids=cfg.project_ids)
    ctx.log(
        f"scoring {total} completions of projects {cfg.project_ids} with reward model {version.pk} ({version.name})"
    )
    done, score_sum = 0, 0.0
    ctx.report(0, total, {})
    chunk: list[dict] = []
    # Per scored completion, its row in these: the raw score and the features the score head read, kept for the
    # task margins at the end (memory: completions × hidden size × 4 bytes, e.g. 100,000 × 384 = 154 MB).
    rows: dict[int, int] = {}
    raw_parts: list[torch.Tensor] = []
    feature_parts: list[torch.Tensor] = []

    def flush_chunk() -> None:
        nonlocal done, score_sum
        raw, features = scorer.raw_scores_and_features(
            [reward_prompt_text(c["prompt"]) for c in chunk], [c["text"] for c in chunk], batch_size=cfg.batch_size
        )
        scores = scorer.normalize(raw)
        now = timezone.now()
        CompletionScore.objects.bulk_create(
            [
                CompletionScore(
                    completion_id=c["completion_id"], model_version=version, score=float(s), job=job, scored_at=now
                )
                for c, s in zip(chunk, scores.tolist())
            ],
            update_conflicts=True,
            unique_fields=["completion", "model_version"],
            update_fields=["score", "job", "scored_at"],
        )
        for c in chunk:
            rows[c["completion_id"]] = len(rows)
        raw_parts.append(raw)
        feature_parts.append(features)
        done += len(chunk)
        score_sum += float(scores.sum())
        ctx.report(done, total, {"score/mean": score_sum / done})
        chunk.clear()

    for completion in completions_to_score(project_ids=cfg.project_ids):
        chunk.append(completion)
        if len(chunk) == CHUNK:
            flush_chunk()
            if ctx.should_stop():
                ctx.log(f"stopped after {done} of {total} completions; task margins not updated")
                return None
    if chunk:
        flush_chunk()
    ctx.log(f"scored {done} completions")
    if rows:
        write_margins(cfg, version, rows, torch.cat(raw_parts), torch.cat(feature_parts), ctx)
    return None


def write_margins(
    cfg: Config, version: ModelVersion, rows: dict[int, int], raw: torch.Tensor, features: torch.Tensor, ctx
) -> None:
    """Each task's uncertainty margin (`training.uncertainty`) from this job's raw scores and features, the
    score head's posterior built on the projects' usable rankings; stored through the uncertainty service."""
    better, worse = [], []
    for completion_ids, ranks in ranked_completion_ids(project_ids=cfg.project_ids):
        if all(c in rows for c in completion_ids):  # a completion added since the scoring started is left out
            for b, w in pairs_from_ranks(ranks):
                better.append(rows[completion_ids[b]])
                worse.append(rows[completion_ids[w]])
    precision = laplace_precision(features, raw, better, worse, prior_precision=cfg.prior_precision)
    tasks = {
        task_id: [rows[c] for c in completion_ids]
        for task_id, completion_ids in task_completion_ids(project_ids=cfg.project_ids).items()
        if len(completion_ids) >= 2 and all(c in rows for c in completion_ids)
    }
    margins = dict(zip(tasks, task_margins(features, raw, list(tasks.values()), precision).tolist()))
    items, changed = list(margins.items()), 0
    for start in range(0, len(items), MARGIN_CHUNK):
        changed += task_margins_write(model_version=version, margins=dict(items[start : start + MARGIN_CHUNK]))
    median = statistics.median(margins.values()) if margins else float("nan")
    ctx.log(
        f"task margins of {len(margins)} tasks written ({changed} changed; median {median:.3g} posterior standard "
        f"deviations), the score head's uncertainty from {len(better)} labelled pairs, prior precision "
        f"{cfg.prior_precision:g}"
    )
