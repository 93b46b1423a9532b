"""Batched sampling from a causal LM: left padding, KV cache, temperature / top-k / top-p, stop tokens, per-row seeds."""

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
    top_p: float = field(
        default=0.9,
        metadata={"help": "Nucleus sampling: keep the smallest token set with this much probability (1 = off)."},
    )
    top_k: int = field(
        default=0, metadata={"help": "Sample among the k most likely tokens only, before top-p (0 = off)."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest response, in tokens."})
    max_prompt_tokens: int = field(default=512, metadata={"help": "Longer prompts keep only their last tokens."})
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives the same samples."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap each prompt in the tokenizer's chat template."}
    )

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
        if self.top_k < 0:
            raise ConfigError("top_k", "must be 0 (off) or more")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError("max_new_tokens", "must be between 1 and 4096")
        if not 1 <= self.max_prompt_tokens <= 32768:
            raise ConfigError("max_prompt_tokens", "must be between 1 and 32768")
        if self.seed < 0:
            raise ConfigError("seed", "must be 0 or more")


NUCLEUS_CANDIDATES = (
    64  # top-p first looks at this many most likely tokens; a row whose nucleus is wider sorts its whole vocabulary
)


@dataclass
class SampleOutput:
    """Token-level result of `sample_tokens` for a batch of left-padded queries."""

    response_ids: torch.Tensor  # [B, T]; positions after the stop token hold the pad id
    response_mask: torch.Tensor  # [B, T] bool; True up to and including the stop token
    logprobs: torch.Tensor  # [B, T] float32; log_softmax(logits / temperature) of the sampled token (0 past the end)
    entropy: torch.Tensor | None  # [B, T] float32; entropy of the temperature-scaled distribution (None unless asked)
    values: torch.Tensor | None  # [B, T] from `value_head` on the same hidden states, if given (0 past the end)
    has_stop: torch.Tensor  # [B] bool; False when the response ran to max_new_tokens without a stop


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """Seed for one (prompt, sample) row: results do not depend on how rows are batched."""
    return ((seed * 1_000_003 + prompt_index) * 1_009 + sample_index) % (2**63 - 1)


def row_uniforms(
    generator: torch.Generator | Sequence[torch.Generator] | torch.Tensor | None,
    rows: int,
    steps: int,
    device: torch.device | str,
) -> torch.Tensor:
    """[rows, steps] uniforms in [0, 1), one per (row, step), drawn before decoding starts.

    A tensor is taken as those uniforms, drawn by the caller (a rank of a multi-process PPO run draws the whole
    batch's and keeps its rows, so its rows sample what they would in one process).

    With one generator per row, row i's draws come from its own generator only, so its sample does
    not depend on the other rows of the batch. The generators may live on any device (a CPU
    generator gives the same draws on a GPU run); the result is moved to `device`.
    """
    if generator is None:
        return torch.rand(rows, steps, device=device)
    if isinstance(generator, torch.Tensor):
        if tuple(generator.shape) != (rows, steps):
            raise ValueError(f"got uniforms of shape {tuple(generator.shape)} for {rows} rows x {steps} steps")
        return generator.to(device)
    if isinstance(generator, torch.Generator):
        return torch.rand(rows, steps, generator=generator, device=generator.device).to(device)
    generators = list(generator)
    if len(generators) != rows:
        raise ValueError(f"got {len(generators)} generators for {rows} rows: pass one per row, or a single one")
    return torch.stack([torch.rand(steps, generator=g, device=g.device) for g in generators]).to(device)


def _invert_cdf(probs: torch.Tensor, u: torch.Tensor, last: torch.Tensor | int) -> torch.Tensor:
    """Index of the token whose cumulative-probability interval holds u·total (inverse-CDF sampling), per row."""
    cdf = probs.cumsum(-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    position = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # first index whose cdf exceeds the target
    return torch.minimum(position, torch.as_tensor(last, device=position.device))  # float rounding at the top end


def _sample_sorted(
    sorted_logits: torch.Tensor, sorted_idx: torch.Tensor, log_norm: torch.Tensor, u: torch.Tensor, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw from candidates sorted most likely first (probabilities exp(logit − log_norm)) after the top-p cut.

    Returns (tokens, wider): `wider` marks rows where every candidate is inside the nucleus, so tokens
    beyond the candidates might be too and the draw must be redone over a wider set.
    """
    probs = (sorted_logits - log_norm).exp()
    cumulative = probs.cumsum(-1)
    keep = (cumulative - probs) <= top_p  # the mass before a token is within top_p: a prefix, always the first
    wider = cumulative[:, -1] <= top_p  # the next token (not a candidate) would be kept as well
    kept = probs * keep
    position = _invert_cdf(kept, u, keep.sum(-1) - 1)
    return sorted_idx.gather(-1, position[:, None]).squeeze(-1), wider


def sample_next(
    scaled: torch.Tensor, log_norm: torch.Tensor, u: torch.Tensor, *, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """One token per row from temperature-scaled logits [B, V] with top-k then top-p, by inverse CDF of u [B].

    Each row's token depends only on its own logits and its own u. `log_norm` is logsumexp(scaled)
    [B, 1]. Top-k renormalises over the k most likely tokens and top-p cuts that distribution (as
    transformers' warpers do). The nucleus is found among the `NUCLEUS_CANDIDATES` most likely
    tokens (a partial top-k instead of a sort of the whole vocabulary); only rows whose nucleus is
    wider sort everything.
    """
    vocab = scaled.shape[-1]
    if top_k > 0 and top_k < vocab:
        top_logits, top_idx = scaled.topk(top_k, dim=-1)
        tokens, _ = _sample_sorted(top_logits, top_idx, top_logits.logsumexp(-1, keepdim=True), u, top_p)
        return tokens
    if top_p >= 1.0:
        return _invert_cdf((scaled - log_norm).exp(), u, vocab - 1)  # any order works without a cut: no sort
    width = min(NUCLEUS_CANDIDATES, vocab)
    top_logits, top_idx = scaled.topk(width, dim=-1)
    tokens, wider = _sample_sorted(top_logits, top_idx, log_norm, u, top_p)
    if width < vocab and bool(wider.any()):
        rows = wider.nonzero().squeeze(1)
        all_logits, all_idx = scaled[rows].sort(dim=-1, descending=True)
        tokens[rows], _ = _sample_sorted(all_logits, all_idx, log_norm[rows], u[rows], top_p)
    return tokens


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
    top_k: int = 0,
    generator: torch.Generator | Sequence[torch.Generator] | torch.Tensor | None = None,
    value_head: torch.nn.Module | None = None,
    compute_entropy: bool = True,
) -> SampleOutput:
    """Sample responses for left-padded queries with a KV cache, the whole batch at once.

    Each row draws with its own pre-drawn uniforms (`row_uniforms`): with one generator per row a
    row's sample depends on its seed only, whatever else is in the batch. A row that emits a stop
    token leaves the batch (its KV-cache rows are dropped), so the remaining steps cost only what
    is still running.

    The log-probs (and values, when `value_head` is given) come from the same forward passes
    that chose the tokens, so a PPO rollout needs no extra policy pass; they are computed at the
    sampling temperature (before top-k/top-p), matching what `policy_forward.forward_policy` recomputes.
    """
    device = input_ids.device
    backbone, lm_head = trunk_and_head(model)
    batch = input_ids.shape[0]
    stop = torch.tensor(list(stop_ids), device=device)
    uniforms = row_uniforms(generator, batch, max_new_tokens, device) if temperature > 0 else None
    response_ids = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    response_mask = torch.zeros((batch, max_new_tokens), dtype=torch.bool, device=device)
    logprobs = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
    entropy = torch.zeros_like(logprobs) if compute_entropy else None
    values = torch.zeros_like(logprobs) if value_head is not None else None
    rows = torch.arange(batch, device=device)  # original index of each row still running
    attention_mask = attention_mask.long()
    position_ids = position_ids_from_mask(attention_mask)
    with autocast_for(device):
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    cache = out.past_key_values
    hidden = out.last_hidden_state[:, -1]
    next_position = position_ids[:, -1]
    steps = 0
    for t in range(max_new_tokens):
        with autocast_for(device):
            logits = lm_head(hidden).float()
        scaled = logits / temperature if temperature > 0 else logits
        log_norm = scaled.logsumexp(-1, keepdim=True)
        if uniforms is not None:
            token = sample_next(scaled, log_norm, uniforms[rows, t], top_p=top_p, top_k=top_k)
        else:
            token = scaled.argmax(-1)
        response_ids[rows, t] = token
        response_mask[rows, t] = True
        logprobs[rows, t] = scaled.gather(-1, token[:, None]).squeeze(-1) - log_norm.squeeze(-1)
        if entropy is not None:
            entropy[rows, t] = log_norm.squeeze(-1) - ((scaled - log_norm).exp() * scaled).sum(-1)
        if values is not None:
            values[rows, t] = value_head(hidden.float()).squeeze(-1)
        steps = t + 1
        running = ~torch.isin(token, stop)
        if t == max_new_tokens - 1:
            break
        still = int(running.sum())
        if still == 0:
            break
        if still < rows.shape[0]:  # drop finished rows from the batch and the cache
            keep = running.nonzero().squeeze(1)
            rows, token, attention_mask, next_position = (
                rows[keep],
                token[keep],
                attention_mask[keep],
                next_position[keep],
            )
            cache.batch_select_indices(keep)
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
    response_ids, response_mask = response_ids[:, :steps], response_mask[:, :steps]
    has_stop = (torch.isin(response_ids, stop) & response_mask).any(1)
    return SampleOutput(
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=logprobs[:, :steps],
        entropy=entropy[:, :steps] if entropy is not None else None,
        values=values[:, :steps] if values is not None else None,
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


def encode_queries(
    tokenizer, texts: Sequence[str], max_prompt_tokens: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask); over-long prompts keep their last tokens."""
    rows = [tokenizer(t, add_special_tokens=False).input_ids[-max_prompt_tokens:] for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attention_mask[i, width - len(r) :] = 1
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
        chunk = rows[start : start + batch_size]
        input_ids, attention_mask = encode_queries(
            tokenizer, [texts[i] for i, _ in chunk], cfg.max_prompt_tokens, device
        )
        # CPU generators: the same seed gives the same draws on a GPU (row_uniforms moves them there)
        generators = [torch.Generator().manual_seed(row_seed(cfg.seed, keys[i], k)) for i, k in chunk]
        out = sample_tokens(
            model,
            input_ids,
            attention_mask,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            stop_ids=stop_ids,
            pad_id=tokenizer.pad_token_id,
            generator=generators,
            compute_entropy=False,
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
            metrics = {
                "generation/new_tokens": float(batch.new_tokens),
                "generation/no_stop": float(batch.finished_without_stop),
            }
            samples = [
                {"prompt": str(prompts[i]), "completion": c[0]} for i, c in zip(finished[:2], batch.completions[:2])
            ]
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
        model,
        tokenizer,
        prompts,
        cfg,
        batch_size=batch_size,
        on_progress=on_progress,
        should_stop=should_stop,
        prompt_keys=prompt_keys,
    ):
        for i, completions in zip(batch.prompt_indices, batch.completions):
            results[i] = completions
    return results
