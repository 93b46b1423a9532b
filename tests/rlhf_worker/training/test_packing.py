"""The packed policy forward (no padding, a shared prompt prefix once) gives the padded pass's results."""

import copy

import pytest
import torch

from rlhf_worker.training import policy_forward
from rlhf_worker.training.generation import encode_queries, sample_tokens
from rlhf_worker.training.packing import PAD_SEGMENT, PREFIX_SEGMENT, common_prefix_length, pack_rows
from rlhf_worker.training.policy_models import stop_token_ids, tiny_policy

torch.set_num_threads(1)
SYSTEM = "be brief and kind. "  # 19 characters = 19 tokens of the tiny character tokenizer
PROMPTS = [SYSTEM + "hi", SYSTEM + "hello there", SYSTEM + "abc", SYSTEM + "xyz!"]


def batch(model, tok, prompts=PROMPTS, steps=7, seed=3):
    ids, mask = encode_queries(tok, prompts, 64, "cpu")
    out = sample_tokens(
        model,
        ids,
        mask,
        max_new_tokens=steps,
        temperature=1.0,
        top_p=1.0,
        stop_ids=stop_token_ids(tok),
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    return ids, mask, out


def test_common_prefix_length_counts_shared_tokens_after_left_padding():
    _, tok = tiny_policy()
    ids, mask = encode_queries(tok, PROMPTS, 64, "cpu")
    assert ids.shape[1] == len(SYSTEM) + len("hello there")  # rows really are left-padded differently
    assert common_prefix_length(ids, mask) == len(SYSTEM)
    ids, mask = encode_queries(tok, ["abcd", "abxy"], 64, "cpu")
    assert common_prefix_length(ids, mask) == 2
    # every row keeps at least one token of its own; a single row shares nothing
    ids, mask = encode_queries(tok, ["abc", "abcdef"], 64, "cpu")
    assert common_prefix_length(ids, mask) == 2
    assert common_prefix_length(ids[:1], mask[:1]) == 0


def test_pack_rows_layout():
    _, tok = tiny_policy()
    ids, mask = encode_queries(tok, PROMPTS, 64, "cpu")
    response_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    packed = pack_rows(ids, mask, response_mask, bin_tokens=10_000)
    prefix = len(SYSTEM)
    own = [len(p) - prefix + int(r.sum()) - 1 for p, r in zip(PROMPTS, response_mask)]
    assert packed.prefix == prefix and packed.source.shape == (1, prefix + sum(own))
    assert packed.tokens == prefix + sum(own), "no padding in a single bin"
    seg = packed.segment[0].tolist()
    assert seg[:prefix] == [PREFIX_SEGMENT] * prefix
    assert seg[prefix:] == [row for row, n in enumerate(own) for _ in range(n)]
    # each row's positions continue after the prefix, as in the padded layout
    row1 = packed.position_ids[0][packed.segment[0] == 1].tolist()
    assert row1 == list(range(prefix, prefix + own[1]))
    mask4d = packed.attention_mask()[0, 0]
    first_of_row2 = seg.index(2)
    visible = mask4d[first_of_row2].nonzero().flatten().tolist()
    assert visible == list(range(prefix)) + [first_of_row2], "a row sees the prefix and itself, never another row"
    # small bins: the prefix is repeated per bin, rows never split, padding marked
    small = pack_rows(ids, mask, response_mask, bin_tokens=prefix + 1)
    assert small.source.shape[0] == len(PROMPTS)
    assert all(small.segment[g, :prefix].eq(PREFIX_SEGMENT).all() for g in range(len(PROMPTS)))
    assert int((small.segment == PAD_SEGMENT).sum()) == sum(max(own) - n for n in own)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_pass_matches_padded_pass_and_its_gradients(monkeypatch, tied, attention):
    model, tok = tiny_policy(seed=1, num_layers=3, tie_word_embeddings=tied)
    model.config._attn_implementation = attention
    head = policy_forward.make_value_head(model)
    torch.nn.init.normal_(head.weight)
    ids, mask, out = batch(model, tok)
    # responses of different lengths (as if each had stopped): what follows the end is padding
    m = torch.arange(out.response_ids.shape[1])[None] < torch.tensor([7, 4, 2, 6])[:, None]
    out.response_ids[~m] = tok.pad_token_id

    def run(pack):
        monkeypatch.setattr(policy_forward, "PACK_ROWS", pack)
        model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        logprobs, values, _ = policy_forward.forward_policy(model, ids, mask, out.response_ids, m, 1.0, head)
        ((logprobs * m).sum() + (values * m).sum()).backward()
        grads = {n: p.grad.to_dense().clone() for n, p in [*model.named_parameters(), *head.named_parameters()]}
        return logprobs.detach(), values.detach(), grads

    padded, packed = run(False), run(True)
    torch.testing.assert_close(packed[0][m], padded[0][m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1][m], padded[1][m], atol=1e-5, rtol=1e-5)
    assert packed[2].keys() == padded[2].keys()
    for name, grad in padded[2].items():
        # float32 sums in another order: compare as vectors (the tied embedding's entries reach ~500)
        assert float((packed[2][name] - grad).norm()) <= 1e-5 * float(grad.norm()) + 1e-6, name
    sampled = m & out.response_mask  # the sampler records nothing past a row's stop token
    torch.testing.assert_close(
        packed[0][sampled], out.logprobs[sampled], atol=1e-5, rtol=1e-5
    )  # = what the sampler recorded


def test_packed_top_layers_on_cached_bottom_states_match(monkeypatch):
    model, tok = tiny_policy(seed=2, num_layers=3)
    ref = copy.deepcopy(model)
    ids, mask, out = batch(model, tok)
    monkeypatch.setattr(policy_forward, "PACK_ROWS", False)
    full_lp, _, _ = policy_forward.forward_policy(model, ids, mask, out.response_ids, out.response_mask, 1.0)
    monkeypatch.setattr(policy_forward, "PACK_ROWS", True)
    policy_forward.freeze_lower_layers(model, 1)
    split = policy_forward.TrunkSplit(model, ref, 1)
    bottom = split.bottom_hidden(ids, mask, out.response_ids, out.response_mask)
    top_lp, _, _ = policy_forward.forward_policy(
        model, ids, mask, out.response_ids, out.response_mask, 1.0, trunk=split.top, trunk_inputs=bottom
    )
    m = out.response_mask
    torch.testing.assert_close(top_lp[m], full_lp[m].detach(), atol=1e-5, rtol=1e-5)


def test_packed_pass_runs_the_prefix_once_per_bin_and_no_padding():
    model, tok = tiny_policy(seed=1)
    ids, mask, out = batch(model, tok)
    seen = []
    hook = model.model.layers[0].register_forward_hook(lambda mod, args, result: seen.append(tuple(args[0].shape[:2])))
    try:
        with torch.no_grad():
            policy_forward.forward_policy(model, ids, mask, out.response_ids, out.response_mask, 1.0)
    finally:
        hook.remove()
    prefix = len(SYSTEM)
    own = sum(len(p) - prefix + int(n) - 1 for p, n in zip(PROMPTS, out.response_mask.sum(1)))
    assert seen == [(1, prefix + own)], "one packed sequence: the prefix once plus each row's own tokens"
    assert prefix + own < ids.shape[0] * (ids.shape[1] + out.response_ids.shape[1])
