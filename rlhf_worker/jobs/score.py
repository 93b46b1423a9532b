"""Score job: every completion of the chosen projects scored by a reward ModelVersion, stored as CompletionScore rows."""
from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from labeling_app.models import Completion
from rlhf_worker.models import CompletionScore, ModelVersion, TrainingJob
from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.reward_model import RewardScorer

from .reward import prompt_as_text, validate_data_selection

CHUNK = 512  # completions per database round trip (and per progress report)


@dataclass(frozen=True)
class Config:
    """Which completions to score and with which reward model."""

    project_ids: list[int] = field(default_factory=list, metadata={"help": "Projects whose completions are scored."})
    reward_version_id: int | None = field(default=None, metadata={"help": "Reward ModelVersion to score with; empty = the newest reward model."})
    batch_size: int = field(default=32, metadata={"help": "Completions per forward pass."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, or cuda[:N]."})

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError("batch_size", f"must be between 1 and 4096, got {self.batch_size}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        validate_data_selection(self.project_ids, "", "")
        rewards = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)
        if self.reward_version_id is not None and not rewards.filter(pk=self.reward_version_id).exists():
            raise ConfigError("reward_version_id", f"no reward model version with id {self.reward_version_id}")
        if self.reward_version_id is None and not rewards.exists():
            raise ConfigError("reward_version_id", "there is no reward model yet: train one with a reward job first")


def reward_version_for(cfg: Config) -> ModelVersion:
    rewards = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)
    if cfg.reward_version_id is not None:
        return rewards.get(pk=cfg.reward_version_id)
    return rewards.order_by("-created_at", "-pk").first()


def run(job: TrainingJob, ctx) -> None:
    cfg: Config = ctx.config
    version = reward_version_for(cfg)
    scorer = RewardScorer.from_pretrained(version.path, device=cfg.device)
    completions = Completion.objects.filter(prompt__project_id__in=cfg.project_ids).select_related("prompt").order_by("pk")
    total = completions.count()
    ctx.log(f"scoring {total} completions of projects {cfg.project_ids} with reward model {version.pk} ({version.name})")
    done, score_sum = 0, 0.0
    ctx.report(0, total, {})
    chunk: list[Completion] = []

    def flush_chunk() -> None:
        nonlocal done, score_sum
        scores = scorer.score([prompt_as_text(c.prompt) for c in chunk], [c.text for c in chunk], batch_size=cfg.batch_size)
        now = timezone.now()
        CompletionScore.objects.bulk_create(
            [CompletionScore(completion=c, model_version=version, score=float(s), job=job, scored_at=now)
             for c, s in zip(chunk, scores.tolist())],
            update_conflicts=True, unique_fields=["completion", "model_version"], update_fields=["score", "job", "scored_at"],
        )
        done += len(chunk)
        score_sum += float(scores.sum())
        ctx.report(done, total, {"score/mean": score_sum / done})
        chunk.clear()

    for completion in completions.iterator(chunk_size=CHUNK):
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
