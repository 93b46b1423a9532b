"""PPO end to end on a tiny policy: the score rises, KL stays bounded, stop penalty, cancel, loadable checkpoint."""

import pytest
import torch

from rlhf_worker.training.checkpoint import find_checkpoint
from rlhf_worker.training.generation import encode_queries
from rlhf_worker.training.policy_models import format_prompt, load_policy, tiny_policy
from rlhf_worker.training.policy_forward import make_value_head
from rlhf_worker.training.ppo import PPOConfig, evaluate_policy, rollout, train

torch.set_num_threads(1)
PROMPTS = ["hi", "hello", "abc", "xyz"]


def fraction_of_a(prompts, responses):
    """Easy reward: the fraction of response characters that are 'a' (tiny tokenizer = characters)."""
    return torch.tensor([sum(c == "a" for c in r) / max(len(r), 1) for r in responses])


def tiny_cfg(steps: int, **overrides) -> PPOConfig:
    """Batches of 16 on the tiny policy, learning rates high enough to learn in a few dozen steps."""
    values = dict(
        total_episodes=16 * steps,
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=4,
        learning_rate=1e-3,
        value_learning_rate=1e-3,
        max_new_tokens=8,
        temperature=1.0,
        missing_stop_penalty=0.0,
        seed=0,
        trainable_layers=0,
    )
    values.update(overrides)
    return PPOConfig(**values)


def run(kl_coef: float, out_dir, steps: int = 40):
    cfg = tiny_cfg(steps, kl_coef=kl_coef)
    return train(cfg, PROMPTS, fraction_of_a, out_dir=str(out_dir), policy=tiny_policy(seed=0))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    return run(0.02, tmp_path_factory.mktemp("ppo"))


def test_ppo_raises_the_score_with_bounded_kl(learned):
    scores = [h["objective/scores"] for h in learned.history]
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert first < 0.05, "a random policy rarely says 'a' (1 token of 99)"
    assert last > 0.5, f"PPO should make 'a' the majority of the response, got {last:.3f}"
    kl = [h["objective/kl"] for h in learned.history]
    # 8 tokens, each at most log(99) ≈ 4.6 nats away from the near-uniform reference
    assert max(kl) < 8 * 4.6
    assert all(h["policy/approxkl"] < 0.5 for h in learned.history), "each update stays close to its rollout policy"
    for key in ("objective/entropy", "policy/clipfrac", "loss/value", "loss/policy", "response/length"):
        assert key in learned.metrics


def test_start_and_trained_policy_are_scored_on_the_same_prompts_with_the_same_seeds(learned):
    before, after = learned.eval_before, learned.eval_after
    assert before.prompt_indices == after.prompt_indices == [0, 1, 2, 3]
    assert len(before.scores) == len(after.scores) == 4 and len(before.cut) == 4
    assert after.mean_score > before.mean_score + 0.3, (before.scores, after.scores)
    # the starting policy's number is reproducible: the same seeds on a fresh copy of it give the same scores
    model, tok = tiny_policy(seed=0)
    again = evaluate_policy(
        model, tok, [format_prompt(tok, p) for p in PROMPTS], PROMPTS, fraction_of_a, PPOConfig(**learned.config)
    )
    assert again.scores == before.scores and again.cut == before.cut
    assert {"eval/reward_mean", "eval/cut_fraction", "eval/response_length"} <= set(after.metrics("eval/"))


def test_eval_prompts_caps_the_evaluation_and_zero_turns_it_off():
    model, tok = tiny_policy(seed=0)
    texts = [format_prompt(tok, p) for p in PROMPTS]
    two = evaluate_policy(model, tok, texts, PROMPTS, fraction_of_a, PPOConfig(eval_prompts=2, max_new_tokens=4))
    assert two.prompt_indices == [0, 1] and len(two.scores) == 2
    assert evaluate_policy(model, tok, texts, PROMPTS, fraction_of_a, PPOConfig(eval_prompts=0)) is None


def test_larger_kl_coefficient_keeps_policy_closer(learned, tmp_path):
    strong = run(0.5, tmp_path, steps=25)
    kl_weak = sum(h["objective/kl"] for h in learned.history[15:25]) / 10
    kl_strong = sum(h["objective/kl"] for h in strong.history[15:25]) / 10
    assert kl_strong < 0.5 * kl_weak


def test_checkpoint_is_a_loadable_policy_that_prefers_the_rewarded_token(learned):
    model, tok = load_policy(learned.path, "cpu")
    ids, mask = encode_queries(tok, [format_prompt(tok, "hi")], 64, "cpu")
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=mask).logits[0, -1].softmax(-1)
    assert int(probs.argmax()) == tok.convert_tokens_to_ids("a")


def test_missing_stop_token_costs_a_fixed_penalty():
    model, tok = tiny_policy(seed=0)
    cfg = PPOConfig(batch_size=8, mini_batch_size=8, max_new_tokens=30, temperature=3.0, missing_stop_penalty=0.75)
    texts = [format_prompt(tok, p) for p in PROMPTS * 2]
    batch = rollout(
        model,
        make_value_head(model),
        model,
        tok,
        PROMPTS * 2,
        texts,
        lambda p, r: torch.ones(len(r)),
        cfg,
        torch.Generator().manual_seed(3),
    )
    assert batch.has_stop.any() and not batch.has_stop.all()
    expected = torch.where(batch.has_stop, torch.tensor(1.0), torch.tensor(0.25))
    torch.testing.assert_close(batch.penalised_scores, expected)
    torch.testing.assert_close(batch.scores, torch.ones(8))


def test_should_stop_returns_early_without_error(tmp_path):
    calls = []
    cfg = PPOConfig(total_episodes=64, batch_size=8, mini_batch_size=4, max_new_tokens=4)
    result = train(
        cfg,
        PROMPTS,
        fraction_of_a,
        out_dir=str(tmp_path),
        policy=tiny_policy(seed=0),
        on_progress=lambda *a: calls.append(a),
        should_stop=lambda: len(calls) >= 2,
    )
    assert result.stopped and result.steps == 2 and result.episodes == 16
    step, total, metrics, samples = calls[-1]
    assert (step, total) == (2, 8)
    assert samples and {"prompt", "response", "score"} <= set(samples[0])
    # stopped early: no policy, a checkpoint to resume from (test_resume_sft_ppo.py resumes such runs)
    assert result.path is None and find_checkpoint(result.checkpoint_dir) is not None


def test_top_only_forward_on_cached_bottom_states_equals_full_forward():
    import copy

    from rlhf_worker.training.generation import sample_tokens
    from rlhf_worker.training.policy_models import stop_token_ids
    from rlhf_worker.training.policy_forward import TrunkSplit, forward_policy, freeze_lower_layers

    model, tok = tiny_policy(seed=0, num_layers=3)
    ref = copy.deepcopy(model)
    head = make_value_head(model)
    torch.nn.init.normal_(head.weight)
    ids, mask = encode_queries(tok, [format_prompt(tok, p) for p in PROMPTS], 64, "cpu")
    out = sample_tokens(
        model,
        ids,
        mask,
        max_new_tokens=6,
        temperature=0.9,
        top_p=1.0,
        stop_ids=stop_token_ids(tok),
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    full_lp, full_v, _ = forward_policy(model, ids, mask, out.response_ids, out.response_mask, 0.9, head)
    freeze_lower_layers(model, 1)
    split = TrunkSplit(model, ref, 1)
    bottom = split.bottom_hidden(ids, mask, out.response_ids, out.response_mask)
    top_lp, top_v, _ = forward_policy(
        model, ids, mask, out.response_ids, out.response_mask, 0.9, head, trunk=split.top, trunk_inputs=bottom
    )
    ref_lp, _, _ = forward_policy(
        ref, ids, mask, out.response_ids, out.response_mask, 0.9, trunk=split.ref_top, trunk_inputs=bottom
    )
    m = out.response_mask
    torch.testing.assert_close(top_lp[m], full_lp[m].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(top_v[m], full_v[m].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref_lp[m], full_lp[m].detach(), atol=1e-5, rtol=1e-5)
    top_lp[m].sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trainable and all(n.startswith(("model.layers.2.", "model.norm")) for n in trainable)


def test_training_only_the_top_layer_still_learns(tmp_path):
    cfg = tiny_cfg(30, trainable_layers=1)
    # untied LM head: it stays trainable (a tied one is the frozen input embedding)
    model, tok = tiny_policy(seed=0, num_layers=3, tie_word_embeddings=False)
    result = train(cfg, PROMPTS, fraction_of_a, out_dir=str(tmp_path), policy=(model, tok))
    assert not model.model.layers[0].self_attn.q_proj.weight.requires_grad and model.lm_head.weight.requires_grad
    scores = [h["objective/scores"] for h in result.history]
    assert sum(scores[-5:]) / 5 > sum(scores[:5]) / 5 + 0.3


def test_samples_per_prompt_answers_each_prompt_several_times_and_learns_against_their_mean(tmp_path):
    """RLOO's baseline: a batch of 16 holds 4 prompts x 4 answers side by side; a prompt-only bonus (the same for
    every answer to "xyz") is cancelled by the other answers' mean, and the score still rises."""
    batches = []

    def a_fraction_plus_prompt_bonus(prompts, responses):
        batches.append(list(prompts))
        bonus = torch.tensor([5.0 if p == "xyz" else 0.0 for p in prompts])
        return fraction_of_a(prompts, responses) + bonus

    cfg = tiny_cfg(30, samples_per_prompt=4, eval_prompts=0)
    result = train(cfg, PROMPTS, a_fraction_plus_prompt_bonus, out_dir=str(tmp_path), policy=tiny_policy(seed=0))
    assert len(batches) == 30
    for prompts in batches:
        groups = [prompts[i : i + 4] for i in range(0, 16, 4)]
        assert all(len(set(g)) == 1 for g in groups), prompts  # each prompt's four answers side by side
        assert sorted(g[0] for g in groups) == sorted(PROMPTS)  # 4 distinct prompts: one pass over the 4 prompts
    a_share = [h["objective/scores"] - 5.0 * sum(p == "xyz" for p in b) / 16 for h, b in zip(result.history, batches)]
    assert sum(a_share[:5]) / 5 < 0.05
    assert sum(a_share[-5:]) / 5 > 0.5, a_share


def test_leave_one_out_baseline_is_the_mean_of_the_other_answers_to_the_same_prompt():
    from rlhf_worker.training.distributed import Dist
    from rlhf_worker.training.ppo import leave_one_out_baseline

    scores = torch.tensor([1.0, 2.0, 6.0, 10.0, 20.0, 30.0])
    baseline = leave_one_out_baseline(scores, list(range(6)), 6, 3, Dist())
    assert baseline.tolist() == pytest.approx([4.0, 3.5, 1.5, 25.0, 20.0, 15.0])
    assert leave_one_out_baseline(scores, list(range(6)), 6, 2, Dist()).tolist() == pytest.approx(
        [2.0, 1.0, 10.0, 6.0, 30.0, 20.0]
    )


def test_the_rewards_of_each_prompts_answers_are_their_scores_against_the_others_mean(tmp_path, monkeypatch):
    """The training loop hands GAE each answer's score minus the mean of its prompt's other answers: raw scores
    that differ by prompt come out summing to zero within every prompt's group."""
    from rlhf_worker.training import ppo

    seen = []
    real = ppo.compute_rewards

    def recording(scores, *args):
        seen.append(scores.clone())
        return real(scores, *args)

    monkeypatch.setattr(ppo, "compute_rewards", recording)
    bonus = {"hi": 0.0, "hello": 1.0, "abc": 2.0, "xyz": 3.0}

    def scored(prompts, responses):
        return fraction_of_a(prompts, responses) + torch.tensor([bonus[p] for p in prompts])

    train(
        tiny_cfg(3, samples_per_prompt=4, eval_prompts=0),
        PROMPTS,
        scored,
        out_dir=str(tmp_path),
        policy=tiny_policy(seed=0),
    )
    assert len(seen) == 3
    for centred in seen:
        groups = centred.view(4, 4)
        torch.testing.assert_close(groups.sum(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
        assert centred.abs().max() < 1.5  # the prompt bonuses (0-3) are gone; only the answers' own share differs
