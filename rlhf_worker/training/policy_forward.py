"""The policy's forward pass for PPO: response log-probs and values from one packed pass, a value head on the
policy's trunk, and the frozen-bottom / trainable-top split that lets PPO epochs run only the top layers.

`forward_policy` is what PPO's rollout (reference log-probs) and update (new log-probs and values) call;
the batch runs packed (`packing.pack_rows`): no padding, and a prompt prefix shared by every row computed
once. PPO's algorithm itself (rewards, GAE, losses, the loop) is in `ppo.py`.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F

from .device import autocast_for
from .generation import position_ids_from_mask, trunk_and_head
from .packing import pack_rows


def make_value_head(model) -> torch.nn.Linear:
    """A scalar head on the policy's last hidden state, zero-initialised so it starts neutral."""
    head = torch.nn.Linear(model.config.hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head.to(next(model.parameters()).device)


def freeze_lower_layers(model, trainable_layers: int) -> None:
    """Keep only the top `trainable_layers` blocks, the final norm and an untied LM head trainable (0 = all).

    Backward then stops at the lowest trainable block, and AdamW keeps state for fewer weights.
    """
    if trainable_layers <= 0:
        return
    layers = getattr(model.base_model, "layers", None)
    if layers is None:
        raise ValueError("trainable_layers needs a model whose trunk has `.layers` (Llama-style)")
    model.requires_grad_(False)
    for block in list(layers)[-trainable_layers:]:
        block.requires_grad_(True)
    norm = getattr(model.base_model, "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and head.weight is not embeddings.weight:
        head.requires_grad_(True)  # an untied LM head sits above the trunk: safe to train


def _trunk_view(base: torch.nn.Module, layers: Sequence[torch.nn.Module], norm: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of a Llama-style trunk that runs only `layers` then `norm` (weights shared)."""
    view = copy.copy(base)
    view._modules = dict(base._modules)
    view.layers = torch.nn.ModuleList(layers)
    view.norm = norm
    return view


class TrunkSplit:
    """Frozen bottom / trainable top of the policy trunk, plus the reference policy's top.

    With the bottom frozen, policy and reference share it exactly: its hidden states are computed
    once per rollout and fed (as `inputs_embeds`) to the reference's top for the KL term and to
    the policy's top in every PPO epoch, so updates cost only the top layers.
    """

    def __init__(self, model, ref_model, trainable_layers: int):
        layers = list(model.base_model.layers)
        cut = max(0, len(layers) - trainable_layers)
        self.bottom = _trunk_view(model.base_model, layers[:cut], torch.nn.Identity())
        self.top = _trunk_view(model.base_model, layers[cut:], model.base_model.norm)
        ref_layers = list(ref_model.base_model.layers)
        self.ref_top = _trunk_view(ref_model.base_model, ref_layers[cut:], ref_model.base_model.norm)

    @torch.no_grad()
    def bottom_hidden(self, query_ids, query_mask, response_ids, response_mask) -> torch.Tensor:
        input_ids = torch.cat([query_ids, response_ids], dim=1)
        attention_mask = torch.cat([query_mask.long(), response_mask.long()], dim=1)
        with autocast_for(input_ids.device):
            return self.bottom(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).last_hidden_state


def _embed(model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Trunk inputs for `input_ids`; with a tied LM head the embedding lookup's gradient is sparse.

    A tied weight gets a dense gradient from the LM head anyway; the lookup's own part then
    scatters into it instead of building (and adding) a second dense vocab x hidden matrix.
    """
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    plain_lookup = type(emb) is torch.nn.Embedding and emb.max_norm is None  # a subclass may scale the lookup
    if (
        plain_lookup
        and torch.is_grad_enabled()
        and emb.weight.requires_grad
        and head is not None
        and head.weight is emb.weight
    ):
        return {"inputs_embeds": F.embedding(input_ids, emb.weight, padding_idx=emb.padding_idx, sparse=True)}
    return {"input_ids": input_ids}


PACK_ROWS = True  # module switch, so tests can compare the packed pass with the padded one


def response_hidden(
    model,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    trunk: torch.nn.Module | None = None,
    trunk_inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last hidden states at the positions that predict each response token: [B, T, H] (0 past a response's end).

    The batch runs packed (`packing.pack_rows`): no padding tokens, and a prompt prefix shared by every
    row (a chat template's system turn) once per bin. With `trunk` + `trunk_inputs` (a `TrunkSplit`
    top and the cached bottom hidden states, in the padded layout) only the top layers run. Attention
    implementations that take no custom mask (e.g. flash-attention) get the padded batch instead.
    """
    backbone = trunk if trunk is not None else trunk_and_head(model)[0]
    query_len = query_ids.shape[1]
    implementation = getattr(model.config, "_attn_implementation", None)
    if not PACK_ROWS or implementation not in ("sdpa", "eager"):
        input_ids = torch.cat([query_ids, response_ids], dim=1)
        attention_mask = torch.cat([query_mask.long(), response_mask.long()], dim=1)
        inputs = _embed(model, input_ids) if trunk_inputs is None else {"inputs_embeds": trunk_inputs}
        hidden = backbone(
            **inputs,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state
        return hidden[:, query_len - 1 : -1]
    packed = pack_rows(query_ids, query_mask, response_mask)
    if trunk_inputs is None:
        inputs = _embed(model, torch.cat([query_ids, response_ids], dim=1).reshape(-1)[packed.source])
    else:
        inputs = {"inputs_embeds": trunk_inputs.reshape(-1, trunk_inputs.shape[-1])[packed.source]}
    mask_dtype = model.get_input_embeddings().weight.dtype if implementation == "eager" else None  # eager adds it
    hidden = backbone(
        **inputs, attention_mask=packed.attention_mask(mask_dtype), position_ids=packed.position_ids, use_cache=False
    ).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1])[packed.out_index]
    return hidden * packed.out_valid[..., None].to(hidden.dtype)


def forward_policy(
    model,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float,
    value_head: torch.nn.Module | None = None,
    with_entropy: bool = False,
    *,
    trunk: torch.nn.Module | None = None,
    trunk_inputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probs of the response tokens under log_softmax(logits / temperature), values, entropy.

    Position ids count real tokens only, so a left-padded query sees the same positions as
    unpadded; the LM head runs on the response positions only. With `trunk` + `trunk_inputs`
    (a `TrunkSplit` top and the cached bottom hidden states) only the top layers run. The batch
    runs packed, without padding and with a shared prompt prefix once (`response_hidden`).
    """
    if (trunk is None) != (trunk_inputs is None):
        raise ValueError("give both trunk and trunk_inputs, or neither")
    _, lm_head = trunk_and_head(model)
    with autocast_for(query_ids.device):
        hidden = response_hidden(
            model, query_ids, query_mask, response_ids, response_mask, trunk=trunk, trunk_inputs=trunk_inputs
        )
        logits = lm_head(hidden).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logprobs = logp_all.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    values = value_head(hidden.float()).squeeze(-1) if value_head is not None else None
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logprobs, values, entropy
