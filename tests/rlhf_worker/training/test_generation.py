"""Batched generation: left padding + position ids, temperature-consistent log-probs, stop tokens, seeds, K per prompt."""

import pytest
import torch

from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.generation import (
    GenerationConfig,
    decode_responses,
    encode_queries,
    generate,
    generate_stream,
    NUCLEUS_CANDIDATES,
    position_ids_from_mask,
    row_uniforms,
    sample_next,
    sample_tokens,
    truncate_at_stop,
)
from rlhf_worker.training.policy_models import format_prompt, stop_token_ids, tiny_policy
from rlhf_worker.training.policy_forward import forward_policy, make_value_head

torch.set_num_threads(1)
PROMPTS = ["hi", "tell me a long story about cats", "2+2?"]


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(seed=0)


def test_left_padding_with_position_ids_gives_unpadded_logits(policy):
    model, tok = policy
    texts = [format_prompt(tok, p) for p in PROMPTS]
    ids, mask = encode_queries(tok, texts, 512, "cpu")
    assert mask[0, 0] == 0, "shorter prompts must be left-padded"
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        for i, t in enumerate(texts):
            single = torch.tensor([tok(t, add_special_tokens=False).input_ids])
            alone = model(input_ids=single).logits[0]
            n = single.shape[1]
            torch.testing.assert_close(padded[i, -n:], alone, atol=1e-4, rtol=1e-4)


def test_pad_token_is_not_end_of_turn_and_real_im_end_is_attended(policy):
    _, tok = policy
    assert tok.pad_token != "<|im_end|>"
    ids, mask = encode_queries(tok, [format_prompt(tok, "a"), format_prompt(tok, "a much longer prompt")], 512, "cpu")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert bool(mask[ids == im_end].all()), "every real <|im_end|> in a prompt must be unmasked"


def test_sampled_logprobs_equal_log_softmax_of_tempered_logits(policy):
    model, tok = policy
    ids, mask = encode_queries(tok, [format_prompt(tok, p) for p in PROMPTS], 512, "cpu")
    value_head = make_value_head(model)
    torch.nn.init.normal_(value_head.weight)
    for temperature in (0.7, 1.3):
        out = sample_tokens(
            model,
            ids,
            mask,
            max_new_tokens=10,
            temperature=temperature,
            top_p=0.9,
            stop_ids=stop_token_ids(tok),
            pad_id=tok.pad_token_id,
            generator=torch.Generator().manual_seed(1),
            value_head=value_head,
        )
        # independent recomputation from the full (unpadded) sequence with plain model logits
        for i in range(len(PROMPTS)):
            n = int(out.response_mask[i].sum())
            q = ids[i][mask[i].bool()]
            full = torch.cat([q, out.response_ids[i, :n]])
            with torch.no_grad():
                logits = model(input_ids=full[None]).logits[0, len(q) - 1 : -1]
            expected = torch.log_softmax(logits / temperature, -1).gather(-1, out.response_ids[i, :n, None]).squeeze(-1)
            torch.testing.assert_close(out.logprobs[i, :n], expected, atol=1e-4, rtol=1e-4)
        # the PPO update's forward gives the same log-probs and values as the sampling pass
        with torch.no_grad():
            logprobs, values, _ = forward_policy(
                model, ids, mask, out.response_ids, out.response_mask, temperature, value_head
            )
        m = out.response_mask
        torch.testing.assert_close(logprobs[m], out.logprobs[m], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(values[m], out.values[m], atol=1e-4, rtol=1e-4)


def test_truncate_at_stop_and_decoding():
    assert truncate_at_stop([5, 6, 2, 7, 0], [2, 0]) == ([5, 6], True)
    assert truncate_at_stop([5, 6, 7], [2, 0]) == ([5, 6, 7], False)
    assert truncate_at_stop([0, 5], [2, 0]) == ([], True)
    _, tok = tiny_policy()
    a, b, im_end, pad = (tok.convert_tokens_to_ids(t) for t in ("a", "b", "<|im_end|>", "<|endoftext|>"))
    texts = decode_responses(
        tok, torch.tensor([[a, b, im_end, a], [b, b, b, b], [a, pad, pad, pad]]), stop_token_ids(tok)
    )
    assert texts == ["ab", "bbbb", "a"]


def test_responses_stop_at_stop_token_and_mask_after_it(policy):
    model, tok = policy
    stop = stop_token_ids(tok)
    ids, mask = encode_queries(tok, [format_prompt(tok, p) for p in PROMPTS * 4], 512, "cpu")
    # a high temperature on a random tiny model: some rows hit a stop token, others run to the limit
    out = sample_tokens(
        model,
        ids,
        mask,
        max_new_tokens=40,
        temperature=3.0,
        top_p=1.0,
        stop_ids=stop,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    for row, m, has_stop in zip(out.response_ids.tolist(), out.response_mask.tolist(), out.has_stop.tolist()):
        kept, found = truncate_at_stop(row, stop)
        assert found == has_stop
        assert sum(m) == (len(kept) + 1 if found else len(row)), "mask covers the response up to and including the stop"
        assert m == sorted(m, reverse=True), "mask is a prefix"
    assert out.has_stop.any() and not out.has_stop.all()


def test_k_samples_per_prompt_and_batching_does_not_change_samples(policy):
    model, tok = policy
    cfg = GenerationConfig(num_samples=3, temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7)
    batched = generate(model, tok, PROMPTS, cfg, batch_size=4)
    assert [len(c) for c in batched] == [3, 3, 3]
    one_by_one = [generate(model, tok, [p], cfg, batch_size=1, prompt_keys=[i])[0] for i, p in enumerate(PROMPTS)]
    assert batched == one_by_one
    assert len({c for cs in batched for c in cs}) > 3, "samples differ between prompts and draws"
    other_seed = generate(model, tok, PROMPTS, GenerationConfig(**{**cfg.__dict__, "seed": 8}), batch_size=4)
    assert other_seed != batched


def test_greedy_batched_equals_unbatched(policy):
    model, tok = policy
    cfg = GenerationConfig(num_samples=1, temperature=0.0, max_new_tokens=10)
    batched = generate(model, tok, PROMPTS, cfg, batch_size=3)
    assert batched == [generate(model, tok, [p], cfg, batch_size=1)[0] for p in PROMPTS]


def test_stream_yields_each_prompt_once_with_progress_and_stops(policy):
    model, tok = policy
    cfg = GenerationConfig(num_samples=2, max_new_tokens=5)
    calls = []
    batches = list(generate_stream(model, tok, PROMPTS * 2, cfg, batch_size=3, on_progress=lambda *a: calls.append(a)))
    seen = [i for b in batches for i in b.prompt_indices]
    assert sorted(seen) == list(range(6))
    assert all(len(c) == 2 for b in batches for c in b.completions)
    assert [c[0] for c in calls] == [1, 2, 3, 4] and all(c[1] == 4 for c in calls)
    stopped = list(generate_stream(model, tok, PROMPTS * 2, cfg, batch_size=3, should_stop=lambda: True))
    assert stopped == []


def test_generation_config_validation_names_field():
    with pytest.raises(ConfigError) as e:
        GenerationConfig.from_dict({"top_p": 0})
    assert e.value.field == "top_p"
    with pytest.raises(ConfigError) as e:
        GenerationConfig.from_dict({"num_samples": "many"})
    assert e.value.field == "num_samples"


def reference_draw(scaled: torch.Tensor, u: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """The textbook sampler, one row at a time: sort everything, top-k, renormalise, top-p, renormalise, invert the CDF
    (without any cut, the CDF runs in vocabulary order: no sort needed)."""
    tokens = []
    for row, x in zip(scaled, u.tolist()):
        logits, idx = row.sort(descending=True) if top_p < 1 or top_k else (row, torch.arange(len(row)))
        if top_k:
            logits, idx = logits[:top_k], idx[:top_k]
        probs = torch.softmax(logits, -1)
        before = probs.cumsum(-1) - probs
        probs = torch.where(before <= top_p, probs, torch.zeros_like(probs))
        cdf = (probs / probs.sum()).cumsum(-1).tolist()
        position = next((i for i, c in enumerate(cdf) if c > x), int((probs > 0).sum()) - 1)
        tokens.append(int(idx[position]))
    return torch.tensor(tokens)


@pytest.mark.parametrize("top_p,top_k", [(0.9, 0), (0.5, 0), (1.0, 0), (0.9, 20), (1.0, 7)])
def test_sample_next_draws_what_the_full_sort_sampler_draws(top_p, top_k):
    g = torch.Generator().manual_seed(0)
    vocab = 500
    # sharp rows (nucleus inside the first candidates) and flat rows (nucleus wider: the full-sort fallback)
    sharpness = torch.linspace(0.2, 12.0, 40).repeat_interleave(5)[:, None]
    scaled = torch.randn(len(sharpness), vocab, generator=g) * sharpness
    u = torch.rand(len(sharpness), generator=g)
    tokens = sample_next(scaled, scaled.logsumexp(-1, keepdim=True), u, top_p=top_p, top_k=top_k)
    assert torch.equal(tokens, reference_draw(scaled, u, top_p, top_k))
    if top_p < 1 and not top_k:
        probs = torch.softmax(scaled, -1).sort(-1, descending=True).values
        nucleus = ((probs.cumsum(-1) - probs) <= top_p).sum(-1)
        assert (nucleus < NUCLEUS_CANDIDATES).any() and (nucleus > NUCLEUS_CANDIDATES).any(), "both paths are exercised"


def test_sample_next_frequencies_follow_the_nucleus_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0] + [-6.0] * 94)
    n = 200_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(1))
    scaled = logits.expand(n, -1)
    tokens = sample_next(scaled, scaled.logsumexp(-1, keepdim=True), u, top_p=0.8)
    probs = torch.softmax(logits, -1)
    nucleus = int(((probs.cumsum(-1) - probs) <= 0.8).sum())
    expected = torch.zeros_like(probs)
    expected[:nucleus] = probs[:nucleus] / probs[:nucleus].sum()
    observed = torch.bincount(tokens, minlength=len(logits)).float() / n
    assert observed[nucleus:].sum() == 0, "nothing outside the nucleus is drawn"
    torch.testing.assert_close(observed, expected, atol=4e-3, rtol=0)


@pytest.mark.parametrize("temperature,top_p,top_k", [(0.4, 0.9, 0), (1.0, 0.9, 0), (3.0, 1.0, 0), (1.2, 0.95, 10)])
def test_each_row_sample_depends_only_on_its_own_seed(policy, temperature, top_p, top_k):
    model, tok = policy
    stop = stop_token_ids(tok)
    prompts = ["hi", "tell me a long story about cats", "2+2?", "why is the sky blue", "x"]
    seeds = [11, 12, 13, 14, 15]

    def run(order):
        ids, mask = encode_queries(tok, [format_prompt(tok, prompts[i]) for i in order], 512, "cpu")
        out = sample_tokens(
            model,
            ids,
            mask,
            max_new_tokens=24,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop_ids=stop,
            pad_id=tok.pad_token_id,
            generator=[torch.Generator().manual_seed(seeds[i]) for i in order],
        )
        return {
            i: (out.response_ids[j][out.response_mask[j]].tolist(), bool(out.has_stop[j])) for j, i in enumerate(order)
        }

    alone = {}
    for i in range(len(prompts)):
        alone.update(run([i]))
    for order in ([0, 1, 2, 3, 4], [4, 2, 0], [3, 1], [1, 4, 3, 2, 0]):
        assert run(order) == {i: alone[i] for i in order}
    assert len({tuple(r) for r, _ in alone.values()}) == len(prompts)
    if temperature == 3.0:
        assert {s for _, s in alone.values()} == {True, False}, "some rows stop early, others run to the limit"


def test_rows_that_stop_leave_the_batch(policy):
    model, tok = policy
    stop = stop_token_ids(tok)
    ids, mask = encode_queries(tok, [format_prompt(tok, p) for p in PROMPTS * 4], 512, "cpu")
    widths = []
    hook = model.base_model.register_forward_hook(
        lambda m, args, kwargs, out: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        out = sample_tokens(
            model,
            ids,
            mask,
            max_new_tokens=40,
            temperature=3.0,
            top_p=1.0,
            stop_ids=stop,
            pad_id=tok.pad_token_id,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        hook.remove()
    running = out.response_mask.sum(0).tolist()  # rows still going at each step
    assert widths[0] == len(PROMPTS) * 4  # the prompt pass
    assert widths[1:] == running[1:], "each decoding step runs only the rows that have not stopped"
    assert running[-1] < running[0]
    assert bool((out.response_ids[~out.response_mask] == tok.pad_token_id).all())
    assert bool((out.logprobs[~out.response_mask] == 0).all())


def test_row_uniforms_take_one_generator_per_row_or_one_for_all():
    one = row_uniforms(torch.Generator().manual_seed(3), 2, 5, "cpu")
    assert one.shape == (2, 5) and torch.equal(one, torch.rand(2, 5, generator=torch.Generator().manual_seed(3)))
    per_row = row_uniforms([torch.Generator().manual_seed(s) for s in (4, 5)], 2, 5, "cpu")
    assert torch.equal(per_row[1], torch.rand(5, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="one per row"):
        row_uniforms([torch.Generator()], 2, 5, "cpu")


def test_top_k_is_validated_and_limits_the_tokens_drawn(policy):
    with pytest.raises(ConfigError) as e:
        GenerationConfig.from_dict({"top_k": -1})
    assert e.value.field == "top_k"
    model, tok = policy
    ids, mask = encode_queries(tok, [format_prompt(tok, p) for p in PROMPTS], 512, "cpu")
    out = sample_tokens(
        model,
        ids,
        mask,
        max_new_tokens=1,
        temperature=5.0,
        top_p=1.0,
        top_k=2,
        stop_ids=[],
        pad_id=tok.pad_token_id,
        generator=[torch.Generator().manual_seed(s) for s in range(3)],
    )
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]
    top2 = logits.topk(2, -1).indices
    assert bool((top2 == out.response_ids[:, :1]).any(-1).all())
