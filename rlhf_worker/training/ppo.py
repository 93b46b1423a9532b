"""PPO for language-model policies (InstructGPT / lm-human-preferences), readable in the CleanRL manner.

One PPO step = `rollout` (sample responses, score them, reference log-probs) -> `compute_rewards`
(score at the last response token, per-token KL penalty) -> `compute_gae` (γ=1, λ=0.95) ->
`ppo_update` (several epochs of shuffled minibatches, clipped ratio and clipped value loss). The file
reads in that order: config, rollout, advantages, losses, update, the training loop.

Unlike TRL, which trains two separate networks (policy and a value model), the value head sits
on the policy's own trunk: one forward/backward serves both losses, and the rollout's log-probs
and values come from the very forward passes that sampled the tokens. The model side of that
(the packed forward, the value head, the trunk split) is `policy_forward.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .adapters import AdapterSettings, prepare_for_training, reference_mode, update_mode
from .atomic_dir import remove_dir
from .callbacks import ProgressFn, StopFn
from .checkpoint import (
    CHECKPOINT_DIR,
    check_resumable,
    data_digest,
    load_trained_weights,
    load_trainer_state,
    require_checkpoint,
    restore_torch_rng_states,
    save_checkpoint,
    save_trained_weights,
    torch_rng_states,
)
from .config_base import ConfigError, config_from_dict, config_to_dict
from .device import resolve_device
from .distributed import SINGLE, Dist, ProcessSettings
from .generation import decode_responses, encode_queries, sample_tokens
from .policy_forward import TrunkSplit, forward_policy, freeze_lower_layers, make_value_head
from .policy_models import disable_dropout, format_prompt, load_policy, save_trained_policy, stop_token_ids

RewardFn = Callable[[list[str], list[str]], torch.Tensor]


# ------------------------------------------------------------------------------------------
# Config.


@dataclass(frozen=True)
class PPOConfig(ProcessSettings, AdapterSettings):
    """PPO settings. Defaults fit SmolLM2-135M on a 2-core CPU within the demo loop's budget (reward job, PPO,
    generation in 15 minutes: `benchmarks/loop_15min.py`): answers of up to 96 tokens, so SmolLM2 ends its answers
    to the demo's short-answer prompts instead of being cut, and 320 episodes as 4 answers to each of 4 prompts per
    step, each answer's score taken relative to the other three's mean: with one answer per prompt, 320 episodes
    did not raise the reward model's score reliably (numbers in benchmarks/RESULTS.md)."""

    total_episodes: int = field(
        default=320, metadata={"help": "Responses sampled over the whole run (steps = total_episodes / batch_size)."}
    )
    batch_size: int = field(
        default=16,
        metadata={"help": "Responses per rollout batch, i.e. per PPO step (batch_size / samples_per_prompt prompts)."},
    )
    samples_per_prompt: int = field(
        default=4,
        metadata={
            "help": "Responses sampled for each prompt of a batch (batch_size / this prompts per step). Above 1, each response's score is taken relative to the mean score of the other responses to its prompt (the leave-one-out baseline of RLOO), so a step learns which answer was better, not which prompt is easier."
        },
    )
    mini_batch_size: int = field(default=8, metadata={"help": "Responses per gradient step inside a PPO epoch."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate of the trained policy weights."})
    value_learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the value head."})
    max_new_tokens: int = field(
        default=96, metadata={"help": "Longest response, in tokens (an answer cut here is scored as it stands)."}
    )
    max_prompt_tokens: int = field(default=256, metadata={"help": "Longer prompts keep only their last tokens."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; log-probs use the same temperature."}
    )
    kl_coef: float = field(
        default=0.02,
        metadata={"help": "β of the per-token KL penalty against the reference policy (initial value when adaptive)."},
    )
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt β towards kl_target (Ziegler et al. 2019)."})
    kl_target: float = field(
        default=6.0, metadata={"help": "Target KL per response (nats) for the adaptive controller."}
    )
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (episodes) of the adaptive KL controller."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE."})
    lam: float = field(default=0.95, metadata={"help": "λ of GAE."})
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value prediction."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss (it shares the policy's trunk)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalise advantages to mean 0, std 1 per batch."})
    missing_stop_penalty: float = field(
        default=0.0,
        metadata={
            "help": "Subtracted from the score of a response that never emits a stop token within max_new_tokens (0 = off; e.g. 1 pushes towards answers that end in time)."
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip."})
    trainable_layers: int = field(
        default=8,
        metadata={
            "help": "Train only the top N transformer layers and final norm (0 = every weight); embeddings then stay frozen. Fewer layers = faster steps."
        },
    )
    seed: int = field(default=0, metadata={"help": "Random seed (prompt order, sampling, minibatch shuffling)."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap each prompt in the tokenizer's chat template."}
    )
    samples_per_step: int = field(default=2, metadata={"help": "Sample generations streamed to the job per step."})
    save_every: int = field(
        default=10, metadata={"help": "Write a resumable checkpoint every N PPO steps; 0 = only on cancel."}
    )
    eval_prompts: int = field(
        default=36,
        metadata={
            "help": "Before and after training, one answer to each of the first N prompts is sampled (the same seeds for both policies) and scored by the reward model: the starting and the trained policy's mean reward on the same prompts (0 = no evaluation)."
        },
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PPOConfig":
        return config_from_dict(cls, d)

    def validate(self) -> None:
        self.validate_adapter()
        self.validate_processes()
        if self.uses_lora and self.lora_dropout:
            raise ConfigError("lora_dropout", "must be 0 for PPO: the policy ratio compares the same function twice")
        positive_ints = (
            "total_episodes",
            "batch_size",
            "mini_batch_size",
            "ppo_epochs",
            "max_new_tokens",
            "max_prompt_tokens",
            "kl_horizon",
        )
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be 1 or more")
        if self.samples_per_prompt < 1:
            raise ConfigError("samples_per_prompt", "must be 1 or more")
        if self.batch_size % self.samples_per_prompt:
            raise ConfigError(
                "samples_per_prompt", f"must divide batch_size ({self.batch_size}): each prompt gets that many answers"
            )
        if self.mini_batch_size > self.batch_size:
            raise ConfigError("mini_batch_size", f"must be at most batch_size ({self.batch_size})")
        if self.batch_size % self.mini_batch_size:
            raise ConfigError("mini_batch_size", f"must divide batch_size ({self.batch_size})")
        if self.total_episodes < self.batch_size:
            raise ConfigError("total_episodes", f"must be at least batch_size ({self.batch_size})")
        for name in ("learning_rate", "value_learning_rate"):
            if not 0 < getattr(self, name) <= 1e-2:
                raise ConfigError(name, "must be above 0 and at most 0.01")
        if not 0 < self.temperature <= 5:
            raise ConfigError("temperature", "must be above 0 and at most 5 (PPO needs sampling)")
        if self.kl_coef < 0:
            raise ConfigError("kl_coef", "must be 0 or more")
        if self.kl_target <= 0:
            raise ConfigError("kl_target", "must be above 0")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(name, "must be between 0 and 1")
        for name in ("cliprange", "cliprange_value"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(name, "must be between 0 and 1 (exclusive)")
        if self.vf_coef < 0:
            raise ConfigError("vf_coef", "must be 0 or more")
        if self.missing_stop_penalty < 0:
            raise ConfigError("missing_stop_penalty", "must be 0 or more")
        if self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm", "must be above 0")
        if self.trainable_layers < 0:
            raise ConfigError("trainable_layers", "must be 0 (train everything) or more")
        if self.eval_prompts < 0:
            raise ConfigError("eval_prompts", "must be 0 (no evaluation) or more")
        if self.samples_per_step < 0:
            raise ConfigError("samples_per_step", "must be 0 or more")
        if self.save_every < 0:
            raise ConfigError("save_every", "must be 0 or more (0 = only on cancel)")
        if self.seed < 0:
            raise ConfigError("seed", "must be 0 or more")
        if self.num_processes > self.batch_size:
            raise ConfigError(
                "num_processes",
                f"must be at most batch_size ({self.batch_size}): each process rolls "
                "out at least one prompt of every batch",
            )

    @property
    def num_steps(self) -> int:
        return self.total_episodes // self.batch_size


# ------------------------------------------------------------------------------------------
# Rollout: sample, score, reference log-probs.


@dataclass
class Rollout:
    prompts: list[str]
    responses: list[str]
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    scores: torch.Tensor  # raw reward_fn scores
    penalised_scores: torch.Tensor  # minus missing_stop_penalty where no stop token
    has_stop: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)
    bottom_hidden: torch.Tensor | None = None  # [B, Lq+T, H] frozen-bottom states when training the top only


@torch.no_grad()
def rollout(
    model,
    value_head,
    ref_model,
    tokenizer,
    prompts: list[str],
    prompt_texts: list[str],
    reward_fn: RewardFn,
    cfg: PPOConfig,
    generator: torch.Generator,
    split: TrunkSplit | None = None,
    peft_model=None,
) -> Rollout:
    """Sample one response per prompt, score it, and get reference log-probs.

    With LoRA (`peft_model` given), `ref_model` is the policy itself and its reference log-probs are computed
    with the adapter switched off: the base weights' own function, without a second copy of them.
    """
    device = next(model.parameters()).device
    stop_ids = stop_token_ids(tokenizer)
    query_ids, query_mask = encode_queries(tokenizer, prompt_texts, cfg.max_prompt_tokens, device)
    t0 = time.perf_counter()
    out = sample_tokens(
        model,
        query_ids,
        query_mask,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=1.0,
        stop_ids=stop_ids,
        pad_id=tokenizer.pad_token_id,
        generator=generator,
        value_head=value_head,
    )
    t1 = time.perf_counter()
    bottom = None
    with reference_mode(peft_model):
        if split is not None:
            bottom = split.bottom_hidden(query_ids, query_mask, out.response_ids, out.response_mask)
            ref_logprobs, _, _ = forward_policy(
                ref_model,
                query_ids,
                query_mask,
                out.response_ids,
                out.response_mask,
                cfg.temperature,
                trunk=split.ref_top,
                trunk_inputs=bottom,
            )
        else:
            ref_logprobs, _, _ = forward_policy(
                ref_model, query_ids, query_mask, out.response_ids, out.response_mask, cfg.temperature
            )
    t2 = time.perf_counter()
    responses = decode_responses(tokenizer, out.response_ids, stop_ids)
    scores = torch.as_tensor(reward_fn(list(prompts), responses), dtype=torch.float32).reshape(-1).to(device)
    timings = {"time/sample_s": t1 - t0, "time/ref_s": t2 - t1, "time/reward_s": time.perf_counter() - t2}
    if scores.shape[0] != len(prompts):
        raise ValueError(f"reward_fn returned {scores.shape[0]} scores for {len(prompts)} responses")
    penalised = torch.where(out.has_stop, scores, scores - cfg.missing_stop_penalty)
    return Rollout(
        prompts=list(prompts),
        responses=responses,
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=out.response_ids,
        response_mask=out.response_mask,
        logprobs=out.logprobs,
        ref_logprobs=ref_logprobs * out.response_mask,
        values=out.values,
        entropy=out.entropy,
        scores=scores,
        penalised_scores=penalised,
        has_stop=out.has_stop,
        timings=timings,
        bottom_hidden=bottom,
    )


# ------------------------------------------------------------------------------------------
# Advantages: per-token rewards with the KL penalty, then GAE (tested against hand-computed values).


def masked_mean(x: torch.Tensor, mask: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """Mean of x over the unmasked entries; `count` replaces their number (a rank's shard divides by the global one)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / (mask.sum().clamp(min=1) if count is None else max(count, 1.0))


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the unmasked entries (unbiased variance); masked entries become 0."""
    mean = masked_mean(x, mask)
    centred = (x - mean) * mask
    n = mask.sum().clamp(min=2)
    var = (centred**2).sum() / (n - 1)
    return centred * torch.rsqrt(var + eps) * mask


def masked_whiten_across(x: torch.Tensor, mask: torch.Tensor, dist: Dist, eps: float = 1e-8) -> torch.Tensor:
    """`masked_whiten` over the whole batch when each rank holds some of its rows (mean and variance summed
    over the ranks)."""
    if not dist.distributed:
        return masked_whiten(x, mask, eps)
    mask = mask.to(x.dtype)
    total, count = dist.sum([float((x * mask).sum()), float(mask.sum())])
    centred = (x - total / max(count, 1.0)) * mask
    (squares,) = dist.sum([float((centred**2).sum())])
    var = squares / (max(count, 2.0) - 1)
    return centred * (var + eps) ** -0.5 * mask


def compute_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards −β·(logπ − logπ_ref), plus the score on each response's last token.

    Returns (rewards [B,T], per-token kl [B,T]); both are 0 past the end of a response.
    """
    mask = response_mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (response_mask.long().sum(1) - 1).clamp(min=0)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores
    return rewards * mask, kl


def leave_one_out_baseline(
    scores: torch.Tensor, rows: Sequence[int], batch_size: int, group_size: int, dist: Dist
) -> torch.Tensor:
    """For each of this rank's `rows` (global row indices, groups of `group_size` consecutive rows answering one
    prompt), the mean score of the other answers to the same prompt (RLOO, Ahmadian et al. 2024). The ranks add
    their rows into the whole batch's scores first, so a group may span ranks."""
    full = [0.0] * batch_size
    for row, score in zip(rows, scores.tolist()):
        full[row] = score
    groups = torch.tensor(dist.sum(full), dtype=torch.float64).view(-1, group_size)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return others.reshape(-1)[list(rows)].to(scores.dtype).to(scores.device)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens: (advantages, returns), 0 past the end."""
    mask = response_mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    steps = rewards.shape[1]
    lastgaelam = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(steps)):
        nextvalues = values[:, t + 1] if t < steps - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask
    returns = advantages + values
    return advantages, returns


class AdaptiveKLController:
    """β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon), Ziegler et al. 2019."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value *= 1 + proportional_error * n_steps / self.horizon


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


# ------------------------------------------------------------------------------------------
# Losses: clipped surrogate and clipped value loss.


def ppo_losses(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    count: float | None = None,
) -> dict[str, torch.Tensor]:
    """Clipped surrogate policy loss and clipped value loss (both masked means), plus diagnostics.

    count: the minibatch's response tokens over every rank (a rank's shard then gives its part of each mean)."""
    vpredclipped = old_values + torch.clamp(new_values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (new_values - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask, count)
    vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), mask, count)

    logratio = new_logprobs - old_logprobs
    ratio = torch.exp(logratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask, count)
    clipfrac = masked_mean((pg_loss2 > pg_loss1).float(), mask, count)
    approx_kl = 0.5 * masked_mean(logratio**2, mask, count)
    return {
        "pg_loss": pg_loss,
        "vf_loss": vf_loss,
        "clipfrac": clipfrac,
        "vf_clipfrac": vf_clipfrac,
        "approx_kl": approx_kl,
    }


# ------------------------------------------------------------------------------------------
# Update: PPO epochs over shuffled minibatches of one rollout.


def _trim(query_ids, query_mask, response_ids, response_mask, bottom_hidden, *rest):
    """Drop columns that are padding for every row of a minibatch (positions come from the mask)."""
    first = int(query_mask.any(0).long().argmax())
    last = int(response_mask.any(0).long().cumsum(0).argmax()) + 1
    if bottom_hidden is not None:
        bottom_hidden = bottom_hidden[:, first : query_ids.shape[1] + last]
    return (
        query_ids[:, first:],
        query_mask[:, first:],
        response_ids[:, :last],
        response_mask[:, :last],
        bottom_hidden,
        *[r[:, :last] for r in rest],
    )


def ppo_update(
    model,
    value_head,
    optimizer,
    batch: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    generator: torch.Generator,
    split: TrunkSplit | None = None,
    dist: Dist = SINGLE,
) -> dict[str, float]:
    """`ppo_epochs` passes of shuffled minibatches; returns the mean of each loss statistic.

    With several ranks, `batch` holds this rank's rows of the global batch (`Dist.shard`): the permutation is of
    the global rows, each rank takes the minibatch rows it holds, divides by the minibatch's global token count
    and the ranks add their gradients."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats: dict[str, list[float]] = {}
    n = cfg.batch_size if dist.distributed else batch.query_ids.shape[0]
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(n, generator=generator).to(batch.query_ids.device)
        for start in range(0, n, cfg.mini_batch_size):
            idx = perm[start : start + cfg.mini_batch_size]
            if dist.distributed:
                _distributed_minibatch(
                    model,
                    value_head,
                    optimizer,
                    batch,
                    advantages,
                    returns,
                    cfg,
                    split,
                    dist,
                    idx.tolist(),
                    params,
                    stats,
                )
                continue
            optimizer.zero_grad(set_to_none=True)
            losses = _minibatch_backward(model, value_head, batch, advantages, returns, idx, cfg, split)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            for key, value in losses.items():
                stats.setdefault(key, []).append(float(value.detach()))
    return {key: sum(v) / len(v) for key, v in stats.items()}


def _minibatch_backward(
    model,
    value_head,
    batch: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    rows: torch.Tensor,
    cfg: PPOConfig,
    split: TrunkSplit | None,
    count: float | None = None,
) -> dict[str, torch.Tensor]:
    """The policy and value head on rows `rows` of `batch`, and the backward pass of their PPO loss; the loss parts.

    `count`: the minibatch's response tokens over every rank (see `ppo_losses`); None on one process."""
    bottom = batch.bottom_hidden[rows] if batch.bottom_hidden is not None else None
    (mb_query, mb_qmask, mb_resp, mb_rmask, mb_bottom, mb_logprobs, mb_values, mb_advantages, mb_returns) = _trim(
        batch.query_ids[rows],
        batch.query_mask[rows],
        batch.response_ids[rows],
        batch.response_mask[rows],
        bottom,
        batch.logprobs[rows],
        batch.values[rows],
        advantages[rows],
        returns[rows],
    )
    with update_mode(model, cfg):
        new_logprobs, new_values, _ = forward_policy(
            model,
            mb_query,
            mb_qmask,
            mb_resp,
            mb_rmask,
            cfg.temperature,
            value_head,
            trunk=split.top if split is not None else None,
            trunk_inputs=mb_bottom,
        )
        parts = ppo_losses(
            new_logprobs,
            mb_logprobs,
            mb_advantages,
            new_values,
            mb_values,
            mb_returns,
            mb_rmask,
            cfg.cliprange,
            cfg.cliprange_value,
            count=count,
        )
        (parts["pg_loss"] + cfg.vf_coef * parts["vf_loss"]).backward()
    return parts


def _distributed_minibatch(
    model,
    value_head,
    optimizer,
    batch: Rollout,
    advantages,
    returns,
    cfg: PPOConfig,
    split: TrunkSplit | None,
    dist: Dist,
    global_rows: list[int],
    params,
    stats,
) -> None:
    """One gradient step on a minibatch of global rows, of which this rank holds some (maybe none)."""
    local = torch.tensor(
        [dist.owner(i)[1] for i in global_rows if dist.owner(i)[0] == dist.rank],
        dtype=torch.long,
        device=batch.query_ids.device,
    )
    (count,) = dist.sum([float(batch.response_mask[local].sum())])
    optimizer.zero_grad(set_to_none=True)
    losses: dict[str, float] = dict.fromkeys(("pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl"), 0.0)
    if len(local):
        parts = _minibatch_backward(model, value_head, batch, advantages, returns, local, cfg, split, count=count)
        losses = {key: float(value.detach()) for key, value in parts.items()}
    dist.sum_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    for key, value in zip(losses, dist.sum(list(losses.values()))):
        stats.setdefault(key, []).append(value)


# ------------------------------------------------------------------------------------------
# The training loop.


def step_metrics(
    batch: Rollout, kl: torch.Tensor, kl_coef: float, update_stats: dict[str, float], dist: Dist = SINGLE
) -> dict[str, float]:
    mask = batch.response_mask.float()
    kl_per_response = kl.sum(1)
    if dist.distributed:  # means over the global batch from the ranks' sums
        rows, scores, penalised, kl_sum, entropy, tokens, no_stop = dist.sum(
            [
                len(batch.scores),
                batch.scores.sum(),
                batch.penalised_scores.sum(),
                kl_per_response.sum(),
                (batch.entropy * mask).sum(),
                mask.sum(),
                (~batch.has_stop).sum(),
            ]
        )
        return {
            "objective/scores": scores / rows,
            "objective/scores_with_penalty": penalised / rows,
            "objective/kl": kl_sum / rows,
            "objective/rlhf_reward": (penalised - kl_coef * kl_sum) / rows,
            "objective/entropy": entropy / max(tokens, 1.0),
            "objective/kl_coef": float(kl_coef),
            "policy/clipfrac": update_stats["clipfrac"],
            "policy/approxkl": update_stats["approx_kl"],
            "loss/policy": update_stats["pg_loss"],
            "loss/value": update_stats["vf_loss"],
            "val/clipfrac": update_stats["vf_clipfrac"],
            "response/length": tokens / rows,
            "response/no_stop_fraction": no_stop / rows,
            **batch.timings,
        }
    return {
        "objective/scores": float(batch.scores.mean()),
        "objective/scores_with_penalty": float(batch.penalised_scores.mean()),
        "objective/kl": float(kl_per_response.mean()),
        "objective/rlhf_reward": float((batch.penalised_scores - kl_coef * kl_per_response).mean()),
        "objective/entropy": float(masked_mean(batch.entropy, mask)),
        "objective/kl_coef": float(kl_coef),
        "policy/clipfrac": update_stats["clipfrac"],
        "policy/approxkl": update_stats["approx_kl"],
        "loss/policy": update_stats["pg_loss"],
        "loss/value": update_stats["vf_loss"],
        "val/clipfrac": update_stats["vf_clipfrac"],
        "response/length": float(mask.sum(1).mean()),
        "response/no_stop_fraction": float((~batch.has_stop).float().mean()),
        **batch.timings,
    }


# ------------------------------------------------------------------------------------------
# Evaluation: the starting and the trained policy answer the same prompts, the reward model scores both.

EVAL_SEED_OFFSET = 7_919  # eval draws never reuse the rollouts' random numbers
EVAL_BATCH = 64  # rows sampled together: answers that stop leave the batch, so a wide batch costs little


@dataclass
class PolicyEval:
    """One sampled answer per eval prompt, scored: the mean is the policy's reward on these prompts."""

    prompt_indices: list[int]  # positions in train()'s prompt list
    scores: list[float]
    cut: list[bool]  # ran to max_new_tokens without a stop token
    lengths: list[int]  # response tokens
    seconds: float

    @property
    def mean_score(self) -> float:
        return sum(self.scores) / len(self.scores)

    @property
    def cut_fraction(self) -> float:
        return sum(self.cut) / len(self.cut)

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}reward_mean": self.mean_score,
            f"{prefix}cut_fraction": self.cut_fraction,
            f"{prefix}response_length": sum(self.lengths) / len(self.lengths),
            f"{prefix}seconds": self.seconds,
        }


@torch.no_grad()
def evaluate_policy(
    model, tokenizer, prompt_texts: Sequence[str], reward_prompts: Sequence[str], reward_fn: RewardFn, cfg: PPOConfig
) -> PolicyEval | None:
    """Sample one answer to each of the first `cfg.eval_prompts` prompts (PPO's sampling settings, a seed per
    prompt, so a prompt's draws do not depend on batching) and score them with `reward_fn`. None when off."""
    count = min(cfg.eval_prompts, len(prompt_texts))
    if count == 0:
        return None
    device = next(model.parameters()).device
    stop_ids = stop_token_ids(tokenizer)
    t0 = time.perf_counter()
    scores: list[float] = []
    cut: list[bool] = []
    lengths: list[int] = []
    for start in range(0, count, EVAL_BATCH):
        rows = range(start, min(count, start + EVAL_BATCH))
        query_ids, query_mask = encode_queries(
            tokenizer, [prompt_texts[i] for i in rows], cfg.max_prompt_tokens, device
        )
        generators = [torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET + i) for i in rows]
        out = sample_tokens(
            model,
            query_ids,
            query_mask,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=1.0,
            stop_ids=stop_ids,
            pad_id=tokenizer.pad_token_id,
            generator=generators,
            compute_entropy=False,
        )
        responses = decode_responses(tokenizer, out.response_ids, stop_ids)
        scores += [
            float(x) for x in torch.as_tensor(reward_fn([reward_prompts[i] for i in rows], responses)).reshape(-1)
        ]
        cut += (~out.has_stop).tolist()
        lengths += out.response_mask.long().sum(1).tolist()
    return PolicyEval(
        prompt_indices=list(range(count)), scores=scores, cut=cut, lengths=lengths, seconds=time.perf_counter() - t0
    )


@dataclass
class PPOResult:
    path: str | None  # saved policy folder (None when stopped early, and on ranks other than 0)
    steps: int
    episodes: int
    stopped: bool
    metrics: dict[str, float]  # last step's metrics
    history: list[dict[str, float]]
    elapsed_s: float
    config: dict[str, Any] = field(default_factory=dict)
    eval_before: PolicyEval | None = None  # the starting policy on the eval prompts
    eval_after: PolicyEval | None = None  # the trained policy on the same prompts, with the same seeds
    checkpoint_dir: str | None = None  # resumable state (kept when stopped early)
    resumed_from_step: int = 0  # the checkpoint's step when this run resumed one

    def __post_init__(self):
        # Read back from a multi-process run's result.json (training/launch.py), the evaluations are plain dicts.
        for name in ("eval_before", "eval_after"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, PolicyEval(**value))


def train(
    cfg: PPOConfig,
    prompts: Sequence[str | Sequence[dict]],
    reward_fn: RewardFn,
    *,
    out_dir: str,
    base_path: str | None = None,
    policy: tuple[Any, Any] | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device | None = None,
    reward_prompts: Sequence[str] | None = None,
    resume_from: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    dist: Dist = SINGLE,
) -> PPOResult:
    """Run PPO on `prompts` against `reward_fn(prompts, responses) -> scores [B]`; save to `out_dir`.

    The policy comes from `base_path` (a saved policy folder) or `policy=(model, tokenizer)`.
    The frozen reference policy is a copy of the starting policy; with `adapter="lora"` it is the same
    weights with the adapter switched off (no copy), and the adapters sit in the top `trainable_layers` blocks. `reward_fn` gets
    `reward_prompts[i]` for prompt i (default: the prompt text, or a chat prompt's last message).

    dist: this process's rank in a data-parallel run (`distributed.py`). Every rank draws the same prompts and
    the same sampling uniforms for the whole batch, then rolls out only its rows (rank r: rows r, r+N, ...), so
    each row samples what it would in one process; advantages are whitened over the whole batch and each
    minibatch's gradient is the ranks' sum. Rank 0 reports (its rows are the samples shown) and saves.

    Every `cfg.save_every` steps, and when stopped, rank 0 writes a resumable checkpoint to `checkpoint_dir`
    (default out_dir/checkpoint; deleted once the policy is saved): the trained policy weights and value head,
    the optimizer, the prompt-order and sampling generators, the rest of the current prompt permutation, the KL
    coefficient, the history and the starting policy's evaluation. `resume_from` (a checkpoint, or a folder
    holding one; every rank loads it) continues such a run with the same settings and prompts, exactly as if it
    had not stopped.
    """
    cfg.validate()  # a direct caller gets the start form's ConfigError, not a failure mid-run
    if not prompts:
        raise ValueError("PPO needs at least one prompt")
    if policy is not None:
        model, tokenizer = policy
        if device is not None:
            model.to(resolve_device(device))
    elif base_path is not None:
        model, tokenizer = load_policy(base_path, device)
    else:
        raise ValueError("give base_path or policy=(model, tokenizer)")
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    disable_dropout(model)
    model.eval()  # dropout off in rollouts and updates: the ratio compares the same function
    if cfg.uses_lora:
        num_layers = len(model.base_model.layers) if cfg.trainable_layers > 0 else 0
        layers = list(range(max(0, num_layers - cfg.trainable_layers), num_layers)) if num_layers else None
        peft_model = prepare_for_training(model, cfg, layers=layers)
        ref_model = model  # the reference: these very weights, adapter off (see rollout)
    else:
        ref_model = copy.deepcopy(model).requires_grad_(False)
        freeze_lower_layers(model, cfg.trainable_layers)
        peft_model = prepare_for_training(model, cfg)  # gradient checkpointing, if asked
    split = TrunkSplit(model, ref_model, cfg.trainable_layers) if cfg.trainable_layers > 0 else None
    value_head = make_value_head(model)
    dist.broadcast_module(model)
    dist.broadcast_module(value_head)
    should_stop = dist.stop_check(should_stop)
    if not dist.is_main:
        on_progress = None
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.learning_rate},
            {"params": list(value_head.parameters()), "lr": cfg.value_learning_rate},
        ],
        eps=1e-5,
        fused=True,  # fused AdamW: one kernel per step, ~10x faster than foreach on this CPU
    )
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        if cfg.adaptive_kl
        else FixedKLController(cfg.kl_coef)
    )
    texts = [format_prompt(tokenizer, p) if cfg.use_chat_template else str(p) for p in prompts]
    plain = (
        list(reward_prompts)
        if reward_prompts is not None
        else [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    )
    if len(plain) != len(prompts):
        raise ValueError("reward_prompts must have one entry per prompt")
    generator = torch.Generator().manual_seed(cfg.seed)
    sample_generator = torch.Generator().manual_seed(cfg.seed)  # on the CPU: a seed draws the same on any device
    history: list[dict[str, float]] = []
    order: list[int] = []
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path(out_dir) / CHECKPOINT_DIR
    config = config_to_dict(cfg)
    digest = data_digest([[p if isinstance(p, str) else list(p) for p in prompts], plain])
    trained = {"policy": model, "value_head": value_head}
    resumed_from_step = 0
    if resume_from is not None:
        checkpoint = require_checkpoint(resume_from)
        state = load_trainer_state(checkpoint)
        check_resumable(state, config, digest)
        load_trained_weights(checkpoint, trained)
        optimizer.load_state_dict(state["optimizer"])
        restore_torch_rng_states(state["rng"])
        generator.set_state(state["generator"])
        sample_generator.set_state(state["sample_generator"])
        order = list(state["order"])
        kl_ctl.value = float(state["kl_coef"])
        history = list(state["history"])
        resumed_from_step = int(state["step"])
        eval_before = PolicyEval(**state["eval_before"]) if state["eval_before"] is not None else None
    else:
        # The starting policy on the eval prompts: rank 0 alone reports it (and the trained one's, below).
        eval_before = evaluate_policy(model, tokenizer, texts, plain, reward_fn, cfg) if dist.is_main else None

    def save() -> None:
        if not dist.is_main:  # one writer; every rank holds the same weights, optimizer and generators
            return
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": torch_rng_states(),
            "generator": generator.get_state(),
            "sample_generator": sample_generator.get_state(),
            "order": list(order),
            "kl_coef": float(kl_ctl.value),
            "history": history,
            "eval_before": dataclasses.asdict(eval_before) if eval_before is not None else None,
            "config": config,
            "data_digest": digest,
        }
        save_checkpoint(checkpoint_dir, state, lambda folder: save_trained_weights(folder, trained))

    start_time = time.perf_counter()
    stopped = False
    step = resumed_from_step
    for step in range(resumed_from_step + 1, cfg.num_steps + 1):
        if should_stop is not None and should_stop():
            stopped = True
            step -= 1
            break
        idx = []
        while len(idx) < cfg.batch_size:
            if not order:
                order = torch.randperm(len(texts), generator=generator).tolist()
            idx += [order.pop()] * cfg.samples_per_prompt  # a prompt's answers sit next to each other
        rows = dist.shard(list(range(len(idx))))  # this rank's rows of the global batch
        t0 = time.perf_counter()
        sampling = sample_generator
        if dist.distributed:  # the whole batch's uniforms, as one process draws them; this rank's rows of them
            uniforms = torch.rand(len(idx), cfg.max_new_tokens, generator=sample_generator)
            sampling = uniforms[dist.rank :: dist.world_size]
            idx = dist.shard(idx)
        batch = rollout(
            model,
            value_head,
            ref_model,
            tokenizer,
            [plain[i] for i in idx],
            [texts[i] for i in idx],
            reward_fn,
            cfg,
            sampling,
            split,
            peft_model,
        )
        with torch.no_grad():
            scores = batch.penalised_scores
            if cfg.samples_per_prompt > 1:
                scores = scores - leave_one_out_baseline(scores, rows, cfg.batch_size, cfg.samples_per_prompt, dist)
            rewards, kl = compute_rewards(scores, batch.logprobs, batch.ref_logprobs, batch.response_mask, kl_ctl.value)
            advantages, returns = compute_gae(rewards, batch.values, batch.response_mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = masked_whiten_across(advantages, batch.response_mask.float(), dist)
        t1 = time.perf_counter()
        update_stats = ppo_update(model, value_head, optimizer, batch, advantages, returns, cfg, generator, split, dist)
        metrics = step_metrics(batch, kl, kl_ctl.value, update_stats, dist)
        metrics["time/rollout_s"] = t1 - t0
        metrics["time/update_s"] = time.perf_counter() - t1
        kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        elapsed = time.perf_counter() - start_time
        metrics["time/episodes_per_s"] = (step - resumed_from_step) * cfg.batch_size / elapsed
        metrics["train/episodes"] = float(step * cfg.batch_size)
        history.append(metrics)
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.num_steps:
            save()
        if on_progress is not None:
            samples = [
                {"prompt": p, "response": r, "score": round(float(s), 4)}
                for p, r, s in list(zip(batch.prompts, batch.responses, batch.scores.tolist()))[: cfg.samples_per_step]
            ]
            on_progress(step, cfg.num_steps, metrics, samples or None)
    path = eval_after = None
    if stopped:
        save()
    elif step > 0 and dist.is_main:
        # the trained policy on the same prompts, with the same seeds, as eval_before
        eval_after = evaluate_policy(model, tokenizer, texts, plain, reward_fn, cfg)
        path = save_trained_policy(model, tokenizer, out_dir, peft_model)
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()},
            str(Path(out_dir) / "value_head.safetensors"),
        )
        remove_dir(checkpoint_dir)  # the run is complete; its optimizer state is dead weight
    dist.barrier()  # the run ends when the saved policy (or the checkpoint) is on disk
    return PPOResult(
        path=path,
        steps=step,
        episodes=step * cfg.batch_size,
        stopped=stopped,
        metrics=history[-1] if history else {},
        history=history,
        elapsed_s=time.perf_counter() - start_time,
        config=config,
        eval_before=eval_before,
        eval_after=eval_after,
        checkpoint_dir=str(checkpoint_dir) if stopped else None,
        resumed_from_step=resumed_from_step,
    )


def mean_score_rise(history: list[dict[str, float]], window: int = 3) -> float:
    """Mean 'objective/scores' of the last `window` steps minus that of the first `window` steps."""
    window = max(1, min(window, len(history) // 2 or 1))
    first = [h["objective/scores"] for h in history[:window]]
    last = [h["objective/scores"] for h in history[-window:]]
    return sum(last) / len(last) - sum(first) / len(first) if history else math.nan
