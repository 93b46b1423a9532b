"""Reward-model job: submitted rankings from PostgreSQL -> training.reward.train -> a registered reward ModelVersion."""
from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import Prefetch

from labeling_app.models import Annotation, Demonstration, Project, Prompt, Rating
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.training.config_base import ConfigError, config_to_dict
from rlhf_worker.training.reward import CHECKPOINT_DIR, TRAINER_STATE_FILE, Ranking, RewardConfig, train

DATA_SNAPSHOT_FILE = "data_snapshot.json"


def parse_day(name: str, value: str) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(name, f"must be a date like 2026-01-31 (YYYY-MM-DD) or empty, got {value!r}") from None


def validate_data_selection(project_ids: list[int], date_from: str, date_to: str) -> None:
    """Shared by the reward and score jobs: projects exist, dates parse and are in order."""
    if not project_ids:
        raise ConfigError("project_ids", "choose at least one project")
    missing = sorted(set(project_ids) - set(Project.objects.filter(pk__in=project_ids).values_list("pk", flat=True)))
    if missing:
        raise ConfigError("project_ids", f"no project with id {', '.join(map(str, missing))}")
    first, last = parse_day("date_from", date_from), parse_day("date_to", date_to)
    if first and last and first > last:
        raise ConfigError("date_to", f"must not be before date_from ({date_from})")


@dataclass(frozen=True)
class Config(RewardConfig):
    """A reward job: which labels (projects, date range), where to start from, and the training settings."""

    project_ids: list[int] = field(default_factory=list, metadata={"help": "Projects whose submitted rankings train the model."})
    date_from: str = field(default="", metadata={"help": "Only rankings submitted on or after this day (YYYY-MM-DD); empty = no lower bound."})
    date_to: str = field(default="", metadata={"help": "Only rankings submitted on or before this day (YYYY-MM-DD); empty = no upper bound."})
    base_version_id: int | None = field(default=None, metadata={"help": "Reward ModelVersion to continue training from (it becomes the parent); empty = start from the backbone."})
    resume_job_id: int | None = field(default=None, metadata={"help": "An earlier reward job (cancelled, failed or lost) whose last checkpoint and data this job continues."})
    name: str = field(default="", metadata={"help": "Name of the registered model version; empty = reward-<job id>."})

    def validate(self) -> None:
        super().validate()
        validate_data_selection(self.project_ids, self.date_from, self.date_to)
        if self.base_version_id is not None and not ModelVersion.objects.filter(
                pk=self.base_version_id, kind=ModelVersion.Kind.REWARD).exists():
            raise ConfigError("base_version_id", f"no reward model version with id {self.base_version_id}")
        if self.resume_job_id is not None:
            if not TrainingJob.objects.filter(pk=self.resume_job_id, kind=TrainingJob.Kind.REWARD).exists():
                raise ConfigError("resume_job_id", f"no reward job with id {self.resume_job_id}")
            if not (job_dir(self.resume_job_id) / CHECKPOINT_DIR / TRAINER_STATE_FILE).is_file():
                raise ConfigError("resume_job_id", f"reward job {self.resume_job_id} left no checkpoint to resume from")

    def training_config(self, **overrides) -> RewardConfig:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(RewardConfig)}
        values.update(overrides)
        return RewardConfig(**values)


def job_dir(job_id: int) -> Path:
    """Where the runner puts a reward job's outputs (JobContext.out_dir)."""
    return Path(settings.MODEL_STORE) / "jobs" / f"{TrainingJob.Kind.REWARD}-{job_id}"


def prompt_as_text(prompt: Prompt) -> str:
    """The prompt the reward model reads: the text, or a chat prompt's turns one per line."""
    if prompt.messages:
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt.messages)
    return prompt.text


def submitted_annotations(*, project_ids: list[int], date_from: str = "", date_to: str = "",
                          annotation_ids: list[int] | None = None):
    """Submitted annotations of the projects in the date range (or exactly `annotation_ids`), with their ratings."""
    annotations = Annotation.objects.filter(status=Annotation.Status.SUBMITTED)
    if annotation_ids is not None:
        annotations = annotations.filter(pk__in=annotation_ids)
    else:
        annotations = annotations.filter(task__project_id__in=project_ids)
        first, last = parse_day("date_from", date_from), parse_day("date_to", date_to)
        if first:
            annotations = annotations.filter(submitted_at__date__gte=first)
        if last:
            annotations = annotations.filter(submitted_at__date__lte=last)
    return (annotations.select_related("task__prompt")
            .prefetch_related(Prefetch("ratings", queryset=Rating.objects.select_related("completion").order_by("completion_id")))
            .order_by("pk"))


def annotation_ranking(annotation: Annotation) -> Ranking:
    ratings = list(annotation.ratings.all())
    labeler = f"user:{annotation.labeler_id}" if annotation.labeler_id else f"import:{annotation.import_source_id}"
    return Ranking(prompt=prompt_as_text(annotation.task.prompt), completions=[r.completion.text for r in ratings],
                   ranks=[r.rank for r in ratings], labeler=labeler, group=f"prompt:{annotation.task.prompt_id}")


def run(job: TrainingJob, ctx) -> ModelVersion | None:
    cfg: Config = ctx.config
    resume_from = None
    if cfg.resume_job_id is not None:
        previous = job_dir(cfg.resume_job_id)
        resume_from = previous / CHECKPOINT_DIR
        # Same rows as the interrupted run, so the step count and data order line up with its checkpoint.
        annotation_ids = json.loads((previous / DATA_SNAPSHOT_FILE).read_text())["annotation_ids"]
        annotations = submitted_annotations(project_ids=cfg.project_ids, annotation_ids=annotation_ids)
    else:
        annotations = submitted_annotations(project_ids=cfg.project_ids, date_from=cfg.date_from, date_to=cfg.date_to)

    rankings, used_ids = [], []
    for annotation in annotations.iterator(chunk_size=2000):
        if len(annotation.ratings.all()) >= 2:
            rankings.append(annotation_ranking(annotation))
            used_ids.append(annotation.pk)
    if not rankings:
        raise ValueError(
            f"no submitted rankings in projects {cfg.project_ids} between {cfg.date_from or 'the start'} and "
            f"{cfg.date_to or 'now'}: label some tasks first, or widen the date range")
    demonstrations = list(Demonstration.objects.filter(prompt__project_id__in=cfg.project_ids)
                          .select_related("prompt").order_by("pk"))
    references = [(prompt_as_text(d.prompt), d.text) for d in demonstrations] or None
    snapshot = {
        "annotation_ids": used_ids,
        "project_ids": list(cfg.project_ids),
        "date_from": cfg.date_from,
        "date_to": cfg.date_to,
        "demonstration_ids": [d.pk for d in demonstrations],
        "normalised_on": "demonstrations" if references else "all ranked completions",
        "resumed_from_job": cfg.resume_job_id,
    }
    (ctx.out_dir / DATA_SNAPSHOT_FILE).write_text(json.dumps(snapshot))

    base = ModelVersion.objects.get(pk=cfg.base_version_id) if cfg.base_version_id is not None else None
    training_cfg = cfg.training_config(backbone=base.path) if base else cfg.training_config()
    ctx.log(f"{len(rankings)} rankings from {len(set(r.labeler for r in rankings))} labelers; "
            f"{'resuming job ' + str(cfg.resume_job_id) if resume_from else 'starting'} from "
            f"{'version ' + str(base.pk) if base else (cfg.backbone or 'all-MiniLM-L6-v2')}")
    result = train(training_cfg, rankings, out_dir=ctx.out_dir, on_progress=ctx.report, should_stop=ctx.should_stop,
                   resume_from=resume_from, reference_completions=references)
    if result.stopped:
        ctx.log(f"stopped at step {result.step}/{result.total_steps}; checkpoint kept: start a reward job with "
                f"resume_job_id={job.pk} to continue")
        return None

    metrics = dict(result.metrics)
    metrics.update({
        "reward/bias": result.bias, "reward/scale": result.scale, "data/train_rankings": result.num_train_rankings,
        "data/eval_rankings": result.num_eval_rankings, "data/train_pairs": result.num_train_pairs,
        "data/eval_pairs": result.num_eval_pairs, "data/truncated_completions": result.num_truncated,
        "time/train_seconds": result.train_seconds,
    })
    ctx.log(f"done: eval accuracy {metrics.get('eval/accuracy', float('nan')):.3f}, labeler agreement "
            f"{metrics.get('eval/labeler_agreement', float('nan')):.3f}")
    return ModelVersion.objects.create(
        kind=ModelVersion.Kind.REWARD, name=cfg.name or f"reward-{job.pk}", path=result.model_dir, parent=base,
        training_job=job, metrics=metrics, config=config_to_dict(cfg), data_snapshot=snapshot,
    )
