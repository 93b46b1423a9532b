"""Score job: every completion of the chosen projects scored by a reward ModelVersion, stored as CompletionScore rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from config.errors import ServiceError
from labeling_app.selectors.training_data import completion_count, completions_to_score
from labeling_app.services.uncertainty import task_margins_update
from rlhf_worker.jobs.common import check_projects, model_version
from rlhf_worker.jobs.policy_common import selection_text
from rlhf_worker.models import CompletionScore, ModelVersion, TrainingJob
from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.device import device_problem
from rlhf_worker.training.reward_model import RewardScorer, reward_prompt_text

CHUNK = 512  # completions per database round trip (and per progress report)


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

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError("batch_size", f"must be between 1 and 4096, got {self.batch_size}")
        if problem := device_problem(self.device):
            raise ConfigError("device", problem)


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

    def flush_chunk() -> None:
        nonlocal done, score_sum
        scores = scorer.score(
            [reward_prompt_text(c["prompt"]) for c in chunk], [c["text"] for c in chunk], batch_size=cfg.batch_size
        )
        now = timezone.now()
        with transaction.atomic():
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
            # The queue order "uncertainty" reads each task's margin between its two best scores.
            task_margins_update(completion_ids=[c["completion_id"] for c in chunk])
        done += len(chunk)
        score_sum += float(scores.sum())
        ctx.report(done, total, {"score/mean": score_sum / done})
        chunk.clear()

    for completion in completions_to_score(project_ids=cfg.project_ids):
        chunk.append(completion)
        if len(chunk) == CHUNK:
            flush_chunk()
            if ctx.should_stop():
                ctx.log(f"stopped after {done} of {total} completions")
                return None
    if chunk:
        flush_chunk()
    ctx.log(f"scored {done} completions")
    return None
