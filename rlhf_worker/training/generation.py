"""Batched sampling from a causal LM: left padding, KV cache, temperature / top-p, stop tokens, per-row seeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from .callbacks import ProgressFn, StopFn
from .config_base import ConfigError, config_from_dict
from .device import autocast_for
from .policy_models import format_prompt, stop_token_ids


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings; stored with every Completion so a sample can be reproduced."""

    num_samples: int = field(default=4, metadata={"help": "Completions sampled per prompt (K)."})
    temperature: float = field(default=0.7, metadata={"help": "Softmax temperature; 0 means greedy decoding."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling: keep the smallest token set with this much probability (1 = off)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest response, in tokens."})
    max_prompt_tokens: int = field(default=512, metadata={"help": "Longer prompts keep only their last tokens."})
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives the same samples."})
    use_chat_template: bool = field(default=True, metadata={"help": "Wrap each prompt in the tokenizer's chat template."})

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "GenerationConfig":
        return config_from_dict(cls, d)

    def validate(self) -> None:
        if not 1 <= self.num_samples <= 64:
            raise ConfigError("num_samples", "must be between 1 and 64")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError("temperature", "must be between 0 (greedy) and 5")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p", "must be above 0 and at most 1")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError("max_new_tokens", "must be between 1 and 4096")
        if not 1 <= self.max_prompt_tokens <= 32768:
            raise ConfigError("max_prompt_tokens", "must be between 1 and 32768")
        if self.seed < 0:
            raise ConfigError("seed", "must be 0 or more")


@dataclass
class SampleOutput:
    """Token-level result of `sample_tokens` for a batch of left-padded queries."""

    response_ids: torch.Tensor  # [B, T]; positions after the stop token hold the pad id
    response_mask: torch.Tensor  # [B, T] bool; True up to and including the stop token
    logprobs: torch.Tensor  # [B, T] float32; log_softmax(logits / temperature) of the sampled token
    entropy: torch.Tensor  # [B, T] float32; entropy of the temperature-scaled distribution
    values: torch.Tensor | None  # [B, T] from `value_head` on the same hidden states, if given
    has_stop: torch.Tensor  # [B] bool; False when the response ran to max_new_tokens without a stop


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """Seed for one (prompt, sample) row: results do not depend on how rows are batched."""
    return ((seed * 1_000_003 + prompt_index) * 1_009 + sample_index) % (2**63 - 1)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the nucleus and renormalise (always keeps the top token)."""
    if top_p >= 1.0:
        return probs
    sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)
    sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs > top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs)
    return filtered / filtered.sum(-1, keepdim=True)


def _draw(probs: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generator)])


def trunk_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(backbone returning hidden states, LM head): lets us project only the positions we need."""
    return model.base_model, model.get_output_embeddings()


@torch.no_grad()
def sample_tokens(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    value_head: torch.nn.Module | None = None,
) -> SampleOutput:
    """Sample responses for left-padded queries with a KV cache.

    The log-probs (and values, when `value_head` is given) come from the same forward passes
    that chose the tokens, so a PPO rollout needs no extra policy pass; they are computed at the
    sampling temperature (before top-p), matching what `policy_forward.forward_policy` recomputes.
    """
    device = input_ids.device
    backbone, lm_head = trunk_and_head(model)
    batch = input_ids.shape[0]
    stop = torch.tensor(list(stop_ids), device=device)
    attention_mask = attention_mask.long()
    position_ids = position_ids_from_mask(attention_mask)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, logprobs, entropies, values, masks = [], [], [], [], []
    with autocast_for(device):
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    cache = out.past_key_values
    hidden = out.last_hidden_state[:, -1]
    next_position = position_ids[:, -1]
    for _ in range(max_new_tokens):
        with autocast_for(device):
            logits = lm_head(hidden).float()
        scaled = logits / temperature if temperature > 0 else logits
        logp_all = torch.log_softmax(scaled, dim=-1)
        probs = logp_all.exp()
        if temperature > 0:
            token = _draw(top_p_filter(probs, top_p), generator)
        else:
            token = scaled.argmax(-1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        masks.append(~done)
        logprobs.append(logp_all.gather(-1, token[:, None]).squeeze(-1))
        entropies.append(-(probs * logp_all).sum(-1))
        if value_head is not None:
            values.append(value_head(hidden.float()).squeeze(-1))
        done = done | torch.isin(token, stop)
        if bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        next_position = next_position + 1
        with autocast_for(device):
            out = backbone(
                input_ids=token[:, None],
                attention_mask=attention_mask,
                position_ids=next_position[:, None],
                past_key_values=cache,
                use_cache=True,
            )
        cache = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
    response_ids = torch.stack(tokens, 1)
    response_mask = torch.stack(masks, 1)
    has_stop = (torch.isin(response_ids, stop) & response_mask).any(1)
    return SampleOutput(
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=torch.stack(logprobs, 1).float(),
        entropy=torch.stack(entropies, 1).float(),
        values=torch.stack(values, 1).float() if values else None,
        has_stop=has_stop,
    )


def truncate_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """Tokens before the first stop token, and whether a stop token was found."""
    stops = set(int(s) for s in stop_ids)
    for i, t in enumerate(ids):
        if int(t) in stops:
            return [int(x) for x in ids[:i]], True
    return [int(x) for x in ids], False


def decode_responses(tokenizer, response_ids: torch.Tensor, stop_ids: Sequence[int]) -> list[str]:
    """Response texts cut at the first stop token (the stop token itself is not shown)."""
    texts = []
    for row in response_ids.tolist():
        kept, _ = truncate_at_stop(row, stop_ids)
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


def encode_queries(tokenizer, texts: Sequence[str], max_prompt_tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask); over-long prompts keep their last tokens."""
    rows = [tokenizer(t, add_special_tokens=False).input_ids[-max_prompt_tokens:] for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            input_ids[i, width - len(r):] = torch.tensor(r)
            attention_mask[i, width - len(r):] = 1
    return input_ids.to(device), attention_mask.to(device)


@dataclass
class GenerationBatch:
    """Prompts whose K samples are all finished after one batch (yielded by `generate_stream`)."""

    prompt_indices: list[int]
    completions: list[list[str]]  # completions[j] are the K samples of prompts[prompt_indices[j]]
    new_tokens: int  # response tokens generated in this batch (for throughput)
    finished_without_stop: int  # responses that hit max_new_tokens
    # stopped[j][k]: sample k of prompts[prompt_indices[j]] ended at a stop token (False: cut at max_new_tokens)
    stopped: list[list[bool]] = field(default_factory=list)


def generate_stream(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[dict]],
    cfg: GenerationConfig,
    *,
    batch_size: int = 16,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    prompt_keys: Sequence[int] | None = None,
) -> Iterator[GenerationBatch]:
    """Yield each prompt's K completions as soon as its rows are done, batch by batch.

    Rows (prompt, sample) are ordered by prompt length to keep padding small. Each row has its
    own generator seeded from (cfg.seed, prompt key, sample index), so the samples do not depend
    on `batch_size`; pass stable `prompt_keys` (e.g. database ids) to make them independent of
    which other prompts are in the call too.
    """
    device = next(model.parameters()).device
    stop_ids = stop_token_ids(tokenizer)
    keys = list(prompt_keys) if prompt_keys is not None else list(range(len(prompts)))
    if len(keys) != len(prompts):
        raise ValueError("prompt_keys must have one key per prompt")
    texts = [format_prompt(tokenizer, p) if cfg.use_chat_template else str(p) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
    rows = [(i, k) for i in order for k in range(cfg.num_samples)]
    total = (len(rows) + batch_size - 1) // batch_size
    pending: dict[int, list[str | None]] = {}
    pending_stopped: dict[int, list[bool]] = {}
    for step, start in enumerate(range(0, len(rows), batch_size), start=1):
        if should_stop is not None and should_stop():
            return
        chunk = rows[start:start + batch_size]
        input_ids, attention_mask = encode_queries(tokenizer, [texts[i] for i, _ in chunk], cfg.max_prompt_tokens, device)
        generators = [torch.Generator(device=device).manual_seed(row_seed(cfg.seed, keys[i], k)) for i, k in chunk]
        out = sample_tokens(
            model, input_ids, attention_mask,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            stop_ids=stop_ids, pad_id=tokenizer.pad_token_id, generator=generators,
        )
        decoded = decode_responses(tokenizer, out.response_ids, stop_ids)
        finished: list[int] = []
        for (i, k), text, has_stop in zip(chunk, decoded, out.has_stop.tolist()):
            slots = pending.setdefault(i, [None] * cfg.num_samples)
            slots[k] = text
            pending_stopped.setdefault(i, [False] * cfg.num_samples)[k] = has_stop
            if all(s is not None for s in slots):
                finished.append(i)
        batch = GenerationBatch(
            prompt_indices=finished,
            completions=[[str(s) for s in pending.pop(i)] for i in finished],
            new_tokens=int(out.response_mask.sum()),
            finished_without_stop=int((~out.has_stop).sum()),
            stopped=[pending_stopped.pop(i) for i in finished],
        )
        if on_progress is not None:
            metrics = {"generation/new_tokens": float(batch.new_tokens), "generation/no_stop": float(batch.finished_without_stop)}
            samples = [{"prompt": str(prompts[i]), "completion": c[0]} for i, c in zip(finished[:2], batch.completions[:2])]
            on_progress(step, total, metrics, samples)
        yield batch


def generate(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[dict]],
    cfg: GenerationConfig,
    *,
    batch_size: int = 16,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    prompt_keys: Sequence[int] | None = None,
) -> list[list[str]]:
    """K completions per prompt, in prompt order (prompts not reached before a stop get [])."""
    results: list[list[str]] = [[] for _ in prompts]
    for batch in generate_stream(
        model, tokenizer, prompts, cfg, batch_size=batch_size, on_progress=on_progress, should_stop=should_stop, prompt_keys=prompt_keys
    ):
        for i, completions in zip(batch.prompt_indices, batch.completions):
            results[i] = completions
    return results
