"""Supervised fine-tuning of the policy on demonstrations: loss on answer tokens only, held-out loss, resumable
checkpoints (`checkpoint.py`)."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .adapters import AdapterSettings, prepare_for_training, update_mode
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
from .device import autocast_for, resolve_device
from .distributed import SINGLE, Dist, ProcessSettings
from .policy_models import disable_dropout, format_prompt, load_policy, save_trained_policy

IGNORE_INDEX = -100
Prompt = str | Sequence[dict]


@dataclass(frozen=True)
class SFTConfig(ProcessSettings, AdapterSettings):
    """SFT settings; defaults suit a few hundred demonstrations on SmolLM2-135M."""

    epochs: int = field(default=2, metadata={"help": "Passes over the training demonstrations."})
    learning_rate: float = field(
        default=2e-5, metadata={"help": "AdamW learning rate (linear warm-up, then constant)."}
    )
    warmup_steps: int = field(default=5, metadata={"help": "Optimiser steps of linear learning-rate warm-up."})
    batch_size: int = field(default=8, metadata={"help": "Demonstrations per optimiser step."})
    max_seq_len: int = field(
        default=512,
        metadata={"help": "Longest prompt + answer in tokens; longer prompts keep their end, answers their start."},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Share of demonstrations held out for the held-out loss (at least one when there are two or more)."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap each prompt in the tokenizer's chat template."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed (split and shuffling)."})
    save_every: int = field(
        default=100, metadata={"help": "Write a resumable checkpoint every N optimisation steps; 0 = only on cancel."}
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SFTConfig":
        return config_from_dict(cls, d)

    def validate(self) -> None:
        self.validate_adapter()
        self.validate_processes()
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be 1 or more")
        if self.epochs > 100:
            raise ConfigError("epochs", "must be at most 100")
        if not 0 < self.learning_rate <= 1e-2:
            raise ConfigError("learning_rate", "must be above 0 and at most 0.01")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", "must be 0 or more")
        if not 8 <= self.max_seq_len <= 32768:
            raise ConfigError("max_seq_len", "must be between 8 and 32768")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError("eval_fraction", "must be at least 0 and below 1")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", "must be 0 or more")
        if self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm", "must be above 0")
        if self.seed < 0:
            raise ConfigError("seed", "must be 0 or more")
        if self.save_every < 0:
            raise ConfigError("save_every", "must be 0 or more (0 = only on cancel)")


@dataclass
class SFTResult:
    path: str | None  # the trained policy (None when stopped early, and on ranks other than 0)
    steps: int
    stopped: bool
    train_loss: float
    eval_loss_before: float | None
    eval_loss: float | None
    num_train: int
    num_eval: int
    history: list[dict[str, float]]
    elapsed_s: float
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str | None = None  # resumable state (kept when stopped early)
    resumed_from_step: int = 0  # the checkpoint's step when this run resumed one


def end_of_answer_id(tokenizer) -> int:
    """The token that closes an assistant turn: <|im_end|> for ChatML models, else EOS."""
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        return vocab["<|im_end|>"]
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has neither <|im_end|> nor an EOS token to end an answer")
    return int(tokenizer.eos_token_id)


def build_example(
    tokenizer, prompt: Prompt, completion: str, *, max_seq_len: int, use_chat_template: bool = True
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the prompt masked (labels = -100), the answer + end-of-turn token learned."""
    prompt_text = format_prompt(tokenizer, prompt) if use_chat_template else str(prompt)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    answer_ids = tokenizer(completion, add_special_tokens=False).input_ids + [end_of_answer_id(tokenizer)]
    if len(prompt_ids) + len(answer_ids) > max_seq_len:
        # keep the whole answer if the prompt's tail (at least half the budget) still fits, else cut the answer
        keep_prompt = min(len(prompt_ids), max(max_seq_len // 2, max_seq_len - len(answer_ids)))
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :]
        answer_ids = answer_ids[: max_seq_len - keep_prompt]
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded batch; padding is masked by attention_mask and ignored by the labels."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": attention_mask.to(device)}


def answer_loss(model, batch: dict[str, torch.Tensor], num_tokens: float | None = None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over answer tokens (labels != -100) and how many there were.

    num_tokens: divide by this count instead of the batch's own (a rank's shard divides by the global batch's).
    """
    with autocast_for(batch["input_ids"].device):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = batch["labels"][:, 1:]
    n = int((shift_labels != IGNORE_INDEX).sum())
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss / max(num_tokens if num_tokens is not None else n, 1), n


@torch.no_grad()
def evaluate(model, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int) -> float | None:
    """Token-weighted mean answer loss over `rows` (None when there are none)."""
    if not rows:
        return None
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        loss, n = answer_loss(model, collate(rows[start : start + batch_size], pad_id, device))
        total += float(loss) * n
        count += n
    return total / max(count, 1)


def _shard_step(
    model,
    cfg: SFTConfig,
    dist: Dist,
    rows: list[tuple[list[int], list[int]]],
    pad_id: int,
    device,
    params: list[torch.nn.Parameter],
) -> torch.Tensor:
    """One rank's share of an optimiser step: its rows' answer-token loss sum over the batch's GLOBAL answer-token
    count, backward, then the ranks' gradients added (= the gradient of the whole batch's mean). Returns the
    whole batch's mean loss (the same on every rank)."""
    mine = dist.shard(rows)
    own_tokens = sum(sum(1 for label in labels[1:] if label != IGNORE_INDEX) for _, labels in mine)
    (global_tokens,) = dist.sum([own_tokens])
    loss_sum = 0.0
    if mine:
        with update_mode(model, cfg):
            loss, n = answer_loss(model, collate(mine, pad_id, device), num_tokens=global_tokens)
            loss.backward()
        loss_sum = float(loss.detach()) * global_tokens
    dist.sum_gradients(params)
    (total,) = dist.sum([loss_sum])
    return torch.tensor(total / max(global_tokens, 1))


def split_examples(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices), deterministic for a seed."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = 0 if n < 2 or eval_fraction <= 0 else max(1, round(n * eval_fraction))
    return order[n_eval:], order[:n_eval]


def train(
    cfg: SFTConfig,
    examples: Sequence[tuple[Prompt, str]],
    *,
    out_dir: str,
    base_path: str | None = None,
    policy: tuple[Any, Any] | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: str | torch.device | None = None,
    resume_from: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    dist: Dist = SINGLE,
) -> SFTResult:
    """Fine-tune on (prompt, completion) pairs and save a loadable policy folder to `out_dir`.

    Every `cfg.save_every` steps, and when stopped, a resumable checkpoint goes to `checkpoint_dir` (default
    out_dir/checkpoint); it is deleted once the policy is saved. `resume_from` (a checkpoint, or a folder holding
    one) continues such a run: the same settings and examples are required, and the run goes on from the
    checkpoint's step with the same data order, weights, optimizer state and history.

    dist: this process's rank in a data-parallel run (`distributed.py`): each rank takes its shard of every batch
    and the ranks add their gradients; rank 0 alone evaluates, reports and saves (path is None on the others);
    every rank loads the checkpoint it resumes from.
    """
    if not examples:
        raise ValueError("SFT needs at least one (prompt, completion) example")
    if policy is not None:
        model, tokenizer = policy
        if device is not None:
            model.to(resolve_device(device))
    elif base_path is not None:
        model, tokenizer = load_policy(base_path, device)
    else:
        raise ValueError("give base_path or policy=(model, tokenizer)")
    torch.manual_seed(cfg.seed)
    disable_dropout(model)
    peft_model = prepare_for_training(model, cfg)  # LoRA adapters and/or gradient checkpointing, when asked
    model.eval()
    dist.broadcast_module(model)
    should_stop = dist.stop_check(should_stop)
    if not dist.is_main:
        on_progress = None
    rows = [
        build_example(tokenizer, p, c, max_seq_len=cfg.max_seq_len, use_chat_template=cfg.use_chat_template)
        for p, c in examples
    ]
    train_idx, eval_idx = split_examples(len(rows), cfg.eval_fraction, cfg.seed)
    train_rows, eval_rows = [rows[i] for i in train_idx], [rows[i] for i in eval_idx]
    pad_id = tokenizer.pad_token_id
    device_ = next(model.parameters()).device
    trained_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained_params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path(out_dir) / CHECKPOINT_DIR
    config = config_to_dict(cfg)
    digest = data_digest([list(e) for e in examples])
    history: list[dict[str, float]] = []
    train_loss = math.nan
    resumed_from_step = 0
    if resume_from is not None:
        checkpoint = require_checkpoint(resume_from)
        state = load_trainer_state(checkpoint)
        check_resumable(state, config, digest)
        load_trained_weights(checkpoint, {"policy": model})
        optimizer.load_state_dict(state["optimizer"])
        restore_torch_rng_states(state["rng"])
        resumed_from_step = int(state["step"])
        history = list(state["history"])
        eval_before, eval_loss, train_loss = state["eval_loss_before"], state["eval_loss"], state["train_loss"]
    else:
        eval_before = evaluate(model, eval_rows, pad_id, cfg.batch_size) if dist.is_main else None
        eval_loss = eval_before

    def save() -> None:
        if not dist.is_main:  # one writer; every rank holds the same weights and optimizer state
            return
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": torch_rng_states(),
            "config": config,
            "data_digest": digest,
            "history": history,
            "eval_loss_before": eval_before,
            "eval_loss": eval_loss,
            "train_loss": train_loss,
        }
        save_checkpoint(checkpoint_dir, state, lambda folder: save_trained_weights(folder, {"policy": model}))

    rng = random.Random(cfg.seed)
    start_time = time.perf_counter()
    step, stopped = resumed_from_step, False
    for epoch in range(cfg.epochs):
        # Epochs before a resumed checkpoint are shuffled too (and their steps skipped), so the data order is the
        # one the interrupted run had: a function of the seed alone.
        order = list(range(len(train_rows)))
        rng.shuffle(order)
        for position, start in enumerate(range(0, len(order), cfg.batch_size)):
            if epoch * steps_per_epoch + position < resumed_from_step:
                continue
            if should_stop is not None and should_stop():
                stopped = True
                break
            step += 1
            lr = cfg.learning_rate * min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else cfg.learning_rate
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows_in_step = [train_rows[i] for i in order[start : start + cfg.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            if dist.distributed:
                loss = _shard_step(model, cfg, dist, rows_in_step, pad_id, device_, trained_params)
            else:
                batch = collate(rows_in_step, pad_id, device_)
                with update_mode(model, cfg):
                    loss, _ = answer_loss(model, batch)
                    loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            train_loss = float(loss.detach())
            metrics = {
                "train/loss": train_loss,
                "train/grad_norm": float(grad_norm),
                "train/lr": lr,
                "train/epoch": epoch + (start + cfg.batch_size) / max(len(order), 1),
            }
            if dist.is_main and start + cfg.batch_size >= len(order):  # end of epoch: held-out loss
                eval_loss = evaluate(model, eval_rows, pad_id, cfg.batch_size)
                if eval_loss is not None:
                    metrics["eval/loss"] = eval_loss
            history.append(metrics)
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                save()
            if on_progress is not None:
                on_progress(step, total, metrics, None)
        if stopped:
            break
    path = None
    if stopped:
        save()
    elif step > 0 and dist.is_main:
        path = save_trained_policy(model, tokenizer, out_dir, peft_model)
        remove_dir(checkpoint_dir)  # the run is complete; its optimizer state is dead weight
    dist.barrier()  # the run ends when the saved policy (or the checkpoint) is on disk
    return SFTResult(
        path=path,
        steps=step,
        stopped=stopped,
        train_loss=train_loss,
        eval_loss_before=eval_before,
        eval_loss=eval_loss,
        num_train=len(train_rows),
        num_eval=len(eval_rows),
        history=history,
        elapsed_s=time.perf_counter() - start_time,
        config=config,
        checkpoint_dir=str(checkpoint_dir) if stopped else None,
        resumed_from_step=resumed_from_step,
    )
