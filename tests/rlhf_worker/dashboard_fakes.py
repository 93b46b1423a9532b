"""Test doubles for the dashboard: an honest fake reward-model job kind and seeded ranking labels.

The fake kind trains a real (tiny) Bradley-Terry model on hand-made text features with numpy, from the
submitted rankings in PostgreSQL, reports real loss/accuracy points through ctx.report, and registers a
ModelVersion, so the pages show what a real job would, deterministically and in seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
import types

import numpy as np
import pytest
from django.utils import timezone

from labeling_app.selectors.labels import DateRange
from rlhf_worker.models import ModelVersion
from rlhf_worker.training.config_base import ConfigError


@dataclasses.dataclass(frozen=True)
class FakeRewardConfig:
    project_ids: list[int] = dataclasses.field(
        default_factory=list, metadata={"help": "Projects whose rankings to train on (empty: all)."}
    )
    date_from: str = dataclasses.field(default="", metadata={"help": "Only labels submitted on or after this day."})
    date_to: str = dataclasses.field(default="", metadata={"help": "Only labels submitted on or before this day."})
    base_version_id: int | None = dataclasses.field(default=None, metadata={"help": "Reward model to continue from."})
    steps: int = dataclasses.field(default=20, metadata={"help": "Optimisation steps."})
    learning_rate: float = dataclasses.field(default=0.5, metadata={"help": "Gradient-descent step size."})
    step_seconds: float = dataclasses.field(default=0.0, metadata={"help": "Pause per step (to watch it live)."})
    normalize: bool = dataclasses.field(default=True, metadata={"help": "Standardise the features."})
    fail_at: int = dataclasses.field(default=-1, metadata={"help": "Raise at this step (tests)."})

    def validate(self):
        if self.steps < 1:
            raise ConfigError("steps", "must be at least 1")
        if not 0 < self.learning_rate <= 10:
            raise ConfigError("learning_rate", "must be in (0, 10]")
        if self.step_seconds < 0:
            raise ConfigError("step_seconds", "must not be negative")


def fake_reward_check(cfg) -> None:
    """What a real job checks at start that this double can: the dates read as a range."""
    DateRange.parse(cfg.date_from, cfg.date_to)


def text_features(text: str) -> list[float]:
    words = text.split()
    return [
        math.log1p(len(words)),
        text.count(".") + text.count("\n"),
        float("?" in text),
        float(any(c.isdigit() for c in text)),
    ]


def load_rankings(cfg) -> list[dict]:
    """Submitted annotations as {task, labeler, order: [(text, rank)]}."""
    from labeling_app.models import Annotation

    annotations = Annotation.objects.filter(status="submitted").prefetch_related("ratings__completion")
    if cfg.project_ids:
        annotations = annotations.filter(task__project_id__in=cfg.project_ids)
    if cfg.date_from:
        annotations = annotations.filter(submitted_at__date__gte=cfg.date_from)
    if cfg.date_to:
        annotations = annotations.filter(submitted_at__date__lte=cfg.date_to)
    return [
        {"task": a.task_id, "labeler": a.labeler_id, "ranks": {r.completion.text: r.rank for r in a.ratings.all()}}
        for a in annotations.order_by("id")
    ]


def pairs_of(ranking: dict) -> list[tuple[str, str]]:
    return [
        (a, b) if ra < rb else (b, a)
        for (a, ra), (b, rb) in itertools.combinations(ranking["ranks"].items(), 2)
        if ra != rb
    ]


def labeler_agreement(rankings: list[dict]) -> float | None:
    """Share of pairs two labelers of the same task ordered the same way."""
    by_task: dict[int, list[dict]] = {}
    for r in rankings:
        by_task.setdefault(r["task"], []).append(r)
    agree = total = 0
    for group in by_task.values():
        for r1, r2 in itertools.combinations(group, 2):
            for a, b in itertools.combinations(r1["ranks"], 2):
                d1 = r1["ranks"][a] - r1["ranks"][b]
                d2 = r2["ranks"].get(a, 0) - r2["ranks"].get(b, 0)
                if d1 and d2:
                    total += 1
                    agree += (d1 > 0) == (d2 > 0)
    return agree / total if total else None


def fake_reward_run(job, ctx):
    cfg = ctx.config
    rankings = load_rankings(cfg)
    if not rankings:
        raise ValueError("no submitted rankings match the data selection")
    held_out = [r for i, r in enumerate(rankings) if i % 4 == 3]
    train = [r for i, r in enumerate(rankings) if i % 4 != 3] or rankings
    ctx.log(f"{len(train)} training rankings, {len(held_out)} held out")

    def design(rs):
        ps = [p for r in rs for p in pairs_of(r)]
        return np.array([np.subtract(text_features(a), text_features(b)) for a, b in ps]).reshape(len(ps), 4)

    agreement = labeler_agreement(rankings)
    x_train, x_eval = design(train), design(held_out)
    scale = (np.abs(x_train).max(axis=0) + 1e-6) if cfg.normalize else np.ones(4)
    x_train, x_eval = x_train / scale, x_eval / scale
    w = np.zeros(4)

    def loss_acc(x):
        if not len(x):
            return float("nan"), float("nan")
        margin = x @ w
        return float(np.mean(np.logaddexp(0, -margin))), float(np.mean(margin > 0))

    for step in range(1, cfg.steps + 1):
        if ctx.should_stop():
            return None
        if step == cfg.fail_at:
            raise RuntimeError(f"boom at step {step}")
        margin = x_train @ w
        grad = -(x_train * (1 / (1 + np.exp(margin)))[:, None]).mean(axis=0)
        w -= cfg.learning_rate * grad
        loss, acc = loss_acc(x_train)
        metrics = {"train/loss": loss, "train/accuracy": acc, "train/learning_rate": cfg.learning_rate}
        if step % 5 == 0 or step == cfg.steps:
            metrics["eval/loss"], metrics["eval/accuracy"] = loss_acc(x_eval)
            if agreement is not None:
                metrics["eval/labeler_agreement"] = agreement
        ctx.report(step, cfg.steps, metrics)
        time.sleep(cfg.step_seconds)

    (ctx.out_dir / "weights.json").write_text(json.dumps({"w": w.tolist(), "scale": scale.tolist()}))
    eval_loss, eval_acc = loss_acc(x_eval)
    metrics = {"eval/accuracy": eval_acc, "eval/loss": eval_loss}
    if agreement is not None:
        metrics["eval/labeler_agreement"] = agreement
    return ModelVersion.objects.create(
        kind="reward",
        name=f"bt-reward-{job.pk}",
        path=str(ctx.out_dir),
        training_job=job,
        parent_id=cfg.base_version_id,
        metrics=metrics,
        config=job.config,
        data_snapshot={
            "project_ids": list(cfg.project_ids),
            "date_from": cfg.date_from,
            "date_to": cfg.date_to,
            "rankings": len(rankings),
            "train_pairs": int(len(x_train)),
            "held_out_pairs": int(len(x_eval)),
        },
    )


FAKE_REWARD = types.ModuleType("fake_reward")
FAKE_REWARD.__doc__ = "Reward model (test double): Bradley-Terry on text features, trained on the rankings."
FAKE_REWARD.Config = FakeRewardConfig
FAKE_REWARD.check = fake_reward_check
FAKE_REWARD.run = fake_reward_run


def install_fake_kinds(monkeypatch, kinds: dict[str, types.ModuleType | None]) -> None:
    """Put these modules in the job registry (`rlhf_worker.jobs.JOB_MODULES`) for one test; a kind mapped to
    None is taken out of it ('not installed'). Other kinds keep their real modules."""
    from rlhf_worker.jobs import JOB_MODULES

    for kind, module in kinds.items():
        if module is None:
            monkeypatch.delitem(JOB_MODULES, kind)
        else:
            monkeypatch.setitem(JOB_MODULES, kind, module)


@pytest.fixture
def fake_reward_kind(monkeypatch):
    install_fake_kinds(monkeypatch, {"reward": FAKE_REWARD})
    return FAKE_REWARD


def seed_rankings(project, labelers, *, n_prompts: int = 8):
    """Prompts from the demo data with four completions each, ranked by every labeler (careful >
    terse > flawed > off-task, the second labeler swapping the middle two on odd prompts)."""
    from labeling_app.demo_data import DEMO_PROMPTS, demo_completions
    from labeling_app.models import Annotation, Completion, Prompt, Rating
    from labeling_app.services.projects import task_create

    now = timezone.now()
    for i, (prompt_text, careful, flawed) in enumerate(DEMO_PROMPTS[:n_prompts]):
        prompt = Prompt.objects.create(project=project, text=prompt_text)
        completions = [
            Completion.objects.create(prompt=prompt, text=t, source=Completion.Source.IMPORTED)
            for t in demo_completions(careful, flawed)
        ]
        task = task_create(project=project, prompt=prompt, completions=completions)
        for j, labeler in enumerate(labelers[: task.overlap]):
            ranks = [1, 2, 3, 4] if (j == 0 or i % 2 == 0) else [1, 3, 2, 4]
            annotation = Annotation.objects.create(
                task=task,
                labeler=labeler,
                status="submitted",
                submitted_at=now,
                shown_order=[c.pk for c in completions],
            )
            Rating.objects.bulk_create(
                Rating(annotation=annotation, completion=c, rank=r, likert=8 - 2 * r + 1 if r < 4 else 1)
                for c, r in zip(completions, ranks)
            )
