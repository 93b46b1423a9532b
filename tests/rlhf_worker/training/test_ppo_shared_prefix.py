"""The policy forward that runs a prompt prefix shared by every row once gives the plain pass's results."""
import pytest
import torch

from rlhf_worker.training import ppo
from rlhf_worker.training.generation import encode_queries, sample_tokens
from rlhf_worker.training.policy_models import stop_token_ids, tiny_policy

torch.set_num_threads(1)
SYSTEM = "be brief and kind. "  # 19 characters = 19 tokens of the tiny character tokenizer
PROMPTS = [SYSTEM + "hi", SYSTEM + "hello there", SYSTEM + "abc", SYSTEM + "xyz!"]


def batch(model, tok, prompts=PROMPTS):
    ids, mask = encode_queries(tok, prompts, 64, "cpu")
    out = sample_tokens(model, ids, mask, max_new_tokens=7, temperature=1.0, top_p=1.0, stop_ids=stop_token_ids(tok),
                        pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(3))
    return ids, mask, out


def test_common_prefix_length_counts_shared_tokens_after_left_padding():
    _, tok = tiny_policy()
    ids, mask = encode_queries(tok, PROMPTS, 64, "cpu")
    assert ids.shape[1] == len(SYSTEM) + len("hello there")  # rows really are left-padded differently
    assert ppo.common_prefix_length(ids, mask) == len(SYSTEM)
    ids, mask = encode_queries(tok, ["abcd", "abxy"], 64, "cpu")
    assert ppo.common_prefix_length(ids, mask) == 2
    # every row keeps at least one token of its own, and one row has nothing to share
    ids, mask = encode_queries(tok, ["abc", "abcdef"], 64, "cpu")
    assert ppo.common_prefix_length(ids, mask) == 2
    assert ppo.common_prefix_length(ids[:1], mask[:1]) == 0


@pytest.mark.parametrize("tied", [True, False])
def test_shared_prefix_pass_matches_plain_pass_and_its_gradients(monkeypatch, tied):
    model, tok = tiny_policy(seed=1, num_layers=3, tie_word_embeddings=tied)
    head = ppo.make_value_head(model)
    torch.nn.init.normal_(head.weight)
    ids, mask, out = batch(model, tok)
    m = out.response_mask

    def run(min_prefix):
        monkeypatch.setattr(ppo, "SHARED_PREFIX_MIN", min_prefix)
        model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        logprobs, values, _ = ppo.forward_policy(model, ids, mask, out.response_ids, m, 1.0, head)
        ((logprobs * m).sum() + (values * m).sum()).backward()
        grads = {n: p.grad.to_dense().clone() for n, p in model.named_parameters()}
        return logprobs.detach(), values.detach(), grads

    plain = run(10**6)  # never share
    shared = run(8)
    torch.testing.assert_close(shared[0][m], plain[0][m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1][m], plain[1][m], atol=1e-5, rtol=1e-5)
    assert shared[2].keys() == plain[2].keys()
    for name, grad in plain[2].items():
        # float32 sums in another order: compare as vectors (the tied embedding's entries reach ~500)
        assert float((shared[2][name] - grad).norm()) <= 1e-5 * float(grad.norm()) + 1e-6, name
    # and both agree with the log-probs the sampler recorded
    torch.testing.assert_close(shared[0][m], out.logprobs[m], atol=1e-5, rtol=1e-5)


def test_shared_prefix_pass_runs_the_prefix_once(monkeypatch):
    model, tok = tiny_policy(seed=1)
    ids, mask, out = batch(model, tok)
    seen = []
    hook = model.model.layers[0].register_forward_hook(lambda mod, args, kwargs_out: seen.append(args[0].shape[:2]))
    try:
        with torch.no_grad():
            ppo.forward_policy(model, ids, mask, out.response_ids, out.response_mask, 1.0)
    finally:
        hook.remove()
    prefix = len(SYSTEM)
    assert seen[0] == (1, prefix), "the shared prefix runs as a single row"
    rest = ids.shape[1] - prefix + out.response_ids.shape[1]
    assert seen[1] == (len(PROMPTS), rest), "each row runs only its own tokens"
