"""The decoder reward model's last block runs only at the score positions and computes the same function."""

import pytest
import torch
from transformers import AutoModel, LlamaConfig, Qwen2Config

from rlhf_worker.training.last_block import pooled_at_scores, supports_last_block_at_scores
from rlhf_worker.training.packing import block_attention_mask, pack_groups
from rlhf_worker.training.reward_model import DECODER, RewardModel, tiny_backbone

torch.set_num_threads(1)


def _backbone(model_type: str, attention: str, seed: int = 3):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as SmolLM2
        intermediate_size=64,
        max_position_embeddings=256,
    )
    config = LlamaConfig(**common) if model_type == "llama" else Qwen2Config(**common)
    config._attn_implementation = attention
    return AutoModel.from_config(config).eval()


def _packed():
    g = torch.Generator().manual_seed(0)
    prompt_a = torch.randint(1, 97, (40,), generator=g).tolist()
    prompt_b = torch.randint(1, 97, (9,), generator=g).tolist()
    groups = [
        [prompt_a + [5, 6, 7], prompt_a + [8, 9]],  # K = 2 behind a long shared prompt
        [prompt_b + [11], prompt_b + [12, 13, 14, 15], prompt_b + [16, 17]],  # K = 3, shorter: padding after it
    ]
    return pack_groups(groups, pad_token_id=0)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_last_block_at_scores_equals_the_whole_forward_in_values_and_every_gradient(model_type, attention):
    backbone = _backbone(model_type, attention)
    assert supports_last_block_at_scores(backbone)
    packed = _packed()
    dtype = torch.float32 if attention == "eager" else None
    mask = block_attention_mask(packed.segment, dtype)

    def run(fast: bool):
        backbone.zero_grad()
        if fast:
            pooled = pooled_at_scores(backbone, packed.input_ids, packed.position_ids, mask, packed.last_index)
        else:
            hidden = backbone(
                input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids, use_cache=False
            ).last_hidden_state
            pooled = hidden.reshape(-1, hidden.shape[-1])[packed.last_index]
        # a loss that weighs every feature of every score position differently
        weights = torch.linspace(-1.0, 1.0, pooled.numel()).reshape(pooled.shape)
        (pooled * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in backbone.named_parameters() if p.grad is not None}
        return pooled.detach(), grads

    fast, fast_grads = run(True)
    whole, whole_grads = run(False)
    assert fast.shape == (5, 32)
    torch.testing.assert_close(fast, whole, atol=1e-5, rtol=1e-4)
    assert fast_grads.keys() == whole_grads.keys()
    assert any(".layers.2." in name or name.startswith("layers.2.") for name in fast_grads)
    for name in whole_grads:
        torch.testing.assert_close(fast_grads[name], whole_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_reward_model_runs_its_last_blocks_mlp_at_the_score_positions_only():
    backbone = _backbone("llama", "sdpa")
    model = RewardModel(backbone, kind=DECODER).eval()
    packed = _packed()
    rows = []
    hooks = [
        backbone.layers[-1].mlp.register_forward_hook(lambda m, args, out: rows.append(("last", args[0].shape))),
        backbone.layers[0].mlp.register_forward_hook(lambda m, args, out: rows.append(("first", args[0].shape))),
    ]
    try:
        rewards = model(
            packed.input_ids,
            position_ids=packed.position_ids,
            segment=packed.segment,
            score_index=packed.last_index,
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert rewards.shape == (5,)
    assert dict(rows)["last"][:-1] == (5,)  # five score positions, not the 2 x 48 packed positions
    assert dict(rows)["first"][:-1] == tuple(packed.input_ids.shape)


def test_other_layouts_run_the_whole_forward():
    bert, _ = tiny_backbone("bert")
    assert not supports_last_block_at_scores(bert)
    windowed = _backbone("qwen2", "sdpa")
    windowed.config.use_sliding_window = True
    assert not supports_last_block_at_scores(windowed)
    flash = _backbone("llama", "sdpa")
    flash.config._attn_implementation = "flash_attention_2"
    assert not supports_last_block_at_scores(flash)
