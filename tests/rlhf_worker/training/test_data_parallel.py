"""Two processes (torchrun, gloo on the CPU) train what one process trains with the same global batch.

Each test runs the same config once in this process and once as 2 ranks (`launch.run_training`), then compares
the loss of every step and the final weights. What holds, and why:

- Losses agree to ~1e-7: each rank sums its shard's loss over the GLOBAL normaliser and the ranks add their
  gradients, so only the order of floating-point additions differs.
- Weights agree to ~1e-6, except where the exact gradient is zero. The reward loss depends on reward
  DIFFERENCES only, so the head's bias (and the last LayerNorm's bias, which feeds the head linearly) have a
  true gradient of 0: what they get is rounding noise (~1e-9), and AdamW divides it by its own running size,
  turning noise into steps of up to the learning rate. Those parameters differ by ~lr x steps between any two
  summation orders (one process vs two), and so does `reward_bias`, the mean raw reward. The reward model's
  FUNCTION does not: the normalised scores agree to 1e-5, which is what the test checks for them.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rlhf_worker.training.launch import run_training
from rlhf_worker.training.policy_models import save_policy, tiny_policy
from rlhf_worker.training.reward import RewardConfig
from rlhf_worker.training.ppo import PPOConfig
from rlhf_worker.training.reward_model import RewardScorer, load_for_training, save_tiny_backbone
from rlhf_worker.training.sft import SFTConfig
from rlhf_worker.training.synthetic import synthetic_rankings

pytestmark = pytest.mark.slow  # each 2-process run starts torchrun and two fresh interpreters (~20 s on 2 cores)

torch.set_num_threads(1)
SHIFT_INVARIANT = ("head.bias", "reward_bias", "backbone.encoder.layer.1.output.LayerNorm.bias")


def one_and_two_processes(kind, cfg, args_for, tmp_path):
    """{1: (history, result), 2: (history, result)}: the same run in this process and as 2 ranks."""
    runs = {}
    for n in (1, 2):
        history = []
        result = run_training(
            kind,
            cfg,
            args_for(tmp_path / f"out{n}"),
            num_processes=n,
            run_dir=tmp_path / f"run{n}",
            on_progress=lambda step, total, metrics, samples, history=history: history.append(
                (step, total, metrics, samples)
            ),
        )
        runs[n] = (history, result)
    return runs


def assert_same_metrics(one, two, keys, atol):
    assert [h[:2] for h in one] == [h[:2] for h in two] and one
    for (step, _, m1, _), (_, _, m2, _) in zip(one, two):
        for key in keys:
            assert m2[key] == pytest.approx(m1[key], abs=atol), (step, key)


def test_reward_model_in_two_processes_equals_one(tmp_path):
    backbone = save_tiny_backbone(tmp_path / "tiny-bert", "bert", seed=0)
    rankings = synthetic_rankings(12, 3, seed=11, labelers_per_prompt=2, noise=0.4, max_words=10)
    # batch 5 splits 3 + 2 between the ranks, and accumulation 2 adds two such batches per step
    cfg = RewardConfig(
        backbone=backbone,
        learning_rate=1e-3,
        epochs=2,
        batch_size=5,
        grad_accum_steps=2,
        max_length=48,
        eval_fraction=0.25,
        eval_every=2,
        save_every=0,
        device="cpu",
    )
    runs = one_and_two_processes("reward", cfg, lambda out: {"rankings": rankings, "out_dir": out}, tmp_path)
    (one, r1), (two, r2) = runs[1], runs[2]
    assert r1.step == r2.step == r1.total_steps == 4
    assert_same_metrics(one, two, ("train/loss", "train/accuracy", "train/learning_rate"), atol=1e-6)
    assert_same_metrics(
        [h for h in one if "eval/loss" in h[2]],
        [h for h in two if "eval/loss" in h[2]],
        ("eval/loss", "eval/accuracy"),
        atol=1e-6,
    )
    assert one[0][2]["train/loss"] != one[-1][2]["train/loss"]  # it trained

    w1, w2 = load_file(f"{r1.model_dir}/model.safetensors"), load_file(f"{r2.model_dir}/model.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        if key not in SHIFT_INVARIANT:
            torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0, msg=key)
    prompts = [r.prompt for r in rankings for _ in r.completions]
    completions = [c for r in rankings for c in r.completions]
    s1 = RewardScorer.from_pretrained(r1.model_dir, device="cpu").score(prompts, completions)
    s2 = RewardScorer.from_pretrained(r2.model_dir, device="cpu").score(prompts, completions)
    torch.testing.assert_close(s2, s1, atol=1e-5, rtol=0)
    assert float(s1.std()) > 0.1  # scores that say something, not all equal


def test_sft_in_two_processes_equals_one(tmp_path):
    model, tokenizer = tiny_policy(seed=0)
    base = save_policy(model, tokenizer, str(tmp_path / "base"))
    # answers of different lengths: a token-weighted mean only matches with the global token count
    examples = [(f"say hi {i}", "hello friend" + " yes" * (i % 4)) for i in range(20)]
    cfg = SFTConfig(epochs=2, learning_rate=5e-3, warmup_steps=2, batch_size=5, eval_fraction=0.2)
    runs = one_and_two_processes(
        "sft",
        cfg,
        lambda out: {"examples": examples, "out_dir": str(out), "base_path": base, "device": "cpu"},
        tmp_path,
    )
    (one, r1), (two, r2) = runs[1], runs[2]
    assert r1.steps == r2.steps == 8 and not r2.stopped
    assert_same_metrics(one, two, ("train/loss", "train/grad_norm", "train/lr"), atol=1e-5)
    assert r2.eval_loss == pytest.approx(r1.eval_loss, abs=1e-5) and r1.eval_loss < r1.eval_loss_before
    w1, w2 = load_file(f"{r1.path}/model.safetensors"), load_file(f"{r2.path}/model.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0, msg=key)


@pytest.mark.parametrize("samples_per_prompt", [1, 3])
def test_ppo_in_two_processes_equals_one(tmp_path, samples_per_prompt):
    """Each rank samples only its rows (r, r+2, ...) with the whole batch's uniforms, so the gathered rollout is
    the one-process rollout; advantages are whitened over both ranks' rows and minibatch gradients summed. With
    3 answers per prompt a prompt's answers sit on both ranks: its leave-one-out baseline adds both ranks' scores."""
    model, tokenizer = tiny_policy(seed=0)
    base = save_policy(model, tokenizer, str(tmp_path / "base"))
    backbone = save_tiny_backbone(tmp_path / "tiny-bert", "bert", seed=0)
    reward_model, reward_tokenizer = load_for_training(backbone)
    reward_dir = reward_model.save_pretrained(tmp_path / "reward", tokenizer=reward_tokenizer, extra={"max_length": 64})
    prompts = ["hi", "hello there", "abc", "a longer prompt here", "xyz", "ok"]
    # batch 6 = 3 rows per rank; minibatches of 3 split unevenly (0-3 rows) between the ranks; 2 trained layers
    # on a frozen bottom (TrunkSplit) and whitened advantages
    cfg = PPOConfig(
        total_episodes=18,
        batch_size=6,
        mini_batch_size=3,
        ppo_epochs=2,
        learning_rate=1e-3,
        value_learning_rate=1e-3,
        max_new_tokens=6,
        temperature=1.0,
        trainable_layers=1,
        seed=3,
        samples_per_prompt=samples_per_prompt,
    )
    runs = one_and_two_processes(
        "ppo",
        cfg,
        lambda out: {
            "prompts": prompts,
            "out_dir": str(out),
            "base_path": base,
            "device": "cpu",
            "reward_model_path": reward_dir,
        },
        tmp_path,
    )
    (one, r1), (two, r2) = runs[1], runs[2]
    assert r1.steps == r2.steps == 3
    assert_same_metrics(
        one,
        two,
        (
            "objective/scores",
            "objective/kl",
            "objective/entropy",
            "response/length",
            "loss/policy",
            "loss/value",
            "policy/approxkl",
            "policy/clipfrac",
        ),
        atol=1e-5,
    )
    assert any(h[2]["loss/policy"] != 0 for h in one)
    for name in ("model.safetensors", "value_head.safetensors"):
        w1, w2 = load_file(f"{r1.path}/{name}"), load_file(f"{r2.path}/{name}")
        assert w1.keys() == w2.keys()
        for key in w1:
            torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0, msg=key)
