"""A decoder reward model's last transformer block, run only at the positions whose output is read.

A reward model reads one hidden state per sequence: the last token's. Every block below the last must run at
every position (later positions attend to their keys and values), but the last block's output is read only at
those score positions; elsewhere it needs only its keys and values. So the last block computes, for every
position, the input norm and the key/value projections (about 6% of a SmolLM2 block's work), and the query,
attention, output projection and MLP only at the score positions. On a packed ranking (`packing.pack_groups`)
that is two or K positions of a few hundred, forward and backward.

What it saves is about one block's work in L: a quarter with a 4-layer backbone, 3% with SmolLM2's 30. The
result is the same function (`tests/rlhf_worker/training/test_last_block.py` compares scores and gradients with
the whole forward). Only for the block layout this file computes: Llama-family blocks (pre-norm, rotary, grouped
query attention without query/key norms or sliding windows); any other backbone runs its whole forward.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

# Model types whose decoder block is exactly: x + attn(input_layernorm(x)), then h + mlp(post_attention_layernorm(h)),
# with rotary embeddings applied as q * cos + rotate_half(q) * sin, and whose base model is embed_tokens ->
# rotary_emb -> layers -> norm.
SUPPORTED_MODEL_TYPES = frozenset({"llama", "qwen2"})


def supports_last_block_at_scores(backbone: nn.Module) -> bool:
    """Whether `pooled_at_scores` computes exactly what `backbone`'s own forward does."""
    config = getattr(backbone, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "use_sliding_window", False) or getattr(config, "layer_types", None) not in (
        None,
        ["full_attention"] * getattr(config, "num_hidden_layers", 0),
    ):
        return False
    if getattr(config, "attention_dropout", 0.0) and backbone.training:
        return False  # the whole forward would drop attention weights at random
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if not all(hasattr(backbone, name) for name in needed) or len(backbone.layers) < 1:
        return False
    block = backbone.layers[-1]
    attn = getattr(block, "self_attn", None)
    parts = ("input_layernorm", "post_attention_layernorm", "mlp")
    projections = ("q_proj", "k_proj", "v_proj", "o_proj")
    if attn is None or not all(hasattr(block, name) for name in parts):
        return False
    if not all(hasattr(attn, name) for name in projections) or hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        return False
    if _model_rotate_half(attn) is None:
        return False
    return getattr(config, "_attn_implementation", None) in ("sdpa", "eager")


def _model_rotate_half(attn: nn.Module):
    """The `rotate_half` of the transformers file that defines this attention (its rotary embedding's own)."""
    return getattr(sys.modules.get(type(attn).__module__), "rotate_half", None)


def pooled_at_scores(
    backbone: nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    score_index: torch.Tensor,
) -> torch.Tensor:
    """Final-norm hidden states at `score_index` (flat indices into [G * N]) of a packed batch: [S, hidden].

    `attention_mask` is the block mask the whole forward gets (`packing.block_attention_mask`, [G, 1, N, N],
    boolean or additive); the last block's score positions use their rows of it.
    """
    groups, n = input_ids.shape
    hidden = backbone.embed_tokens(input_ids)
    position_embeddings = backbone.rotary_emb(hidden, position_ids=position_ids)
    for block in backbone.layers[:-1]:
        hidden = block(
            hidden,
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            position_ids=position_ids,
            use_cache=False,
        )

    block = backbone.layers[-1]
    attn = block.self_attn
    rotate_half = _model_rotate_half(attn)
    head_dim = attn.head_dim
    cos, sin = position_embeddings  # [G, N, head_dim]
    normed = block.input_layernorm(hidden)
    # Keys and values at every position: [G, kv_heads, N, head_dim].
    keys = attn.k_proj(normed).view(groups, n, -1, head_dim).transpose(1, 2)
    values = attn.v_proj(normed).view(groups, n, -1, head_dim).transpose(1, 2)
    keys = keys * cos[:, None] + rotate_half(keys) * sin[:, None]

    # Queries at the score positions only, one query per row: [S, heads, 1, head_dim].
    group = torch.div(score_index, n, rounding_mode="floor")
    position = score_index - group * n
    flat_normed = normed.reshape(groups * n, -1)[score_index]
    queries = attn.q_proj(flat_normed).view(score_index.shape[0], -1, 1, head_dim)
    cos_s = cos.reshape(groups * n, head_dim)[score_index][:, None, None]
    sin_s = sin.reshape(groups * n, head_dim)[score_index][:, None, None]
    queries = queries * cos_s + rotate_half(queries) * sin_s

    # Each score position attends as its row of the block mask says: the shared prefix and its own sequence.
    out = F.scaled_dot_product_attention(
        queries,
        keys[group],
        values[group],
        attn_mask=attention_mask[group, :, position][:, :, None, :],
        scale=attn.scaling,
        enable_gqa=keys.shape[1] != queries.shape[1],
    )  # [S, heads, 1, head_dim]
    out = attn.o_proj(out.reshape(score_index.shape[0], -1))
    residual = hidden.reshape(groups * n, -1)[score_index] + out
    residual = residual + block.mlp(block.post_attention_layernorm(residual))
    return backbone.norm(residual)
