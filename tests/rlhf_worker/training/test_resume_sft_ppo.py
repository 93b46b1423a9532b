"""SFT and PPO checkpoints: a run stopped at step k and resumed to N ends where an uninterrupted run to N ends (the
same loss of every step, the same weights), in one process and in two (torchrun, gloo on the CPU), from the
checkpoint written on cancel and from a periodic one; a checkpoint of other settings or other data is refused.

Why the weights agree: a resumed run loads the trained weights, the optimizer and scheduler state, the random
states and (PPO) the rest of its prompt order and the KL coefficient, so it replays the same arithmetic. Drop any
one of them and the comparison fails (AdamW restarted from zero moments, another data order, other samples).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhf_worker.training import ppo, sft
from rlhf_worker.training.checkpoint import CHECKPOINT_DIR, TRAINED_WEIGHTS_FILE, find_checkpoint
from rlhf_worker.training.launch import run_training
from rlhf_worker.training.policy_models import save_policy, tiny_policy
from rlhf_worker.training.reward_model import load_for_training, save_tiny_backbone

torch.set_num_threads(1)
EXAMPLES = [(f"say hi {i}", "hello friend" + " yes" * (i % 4)) for i in range(20)]
PROMPTS = ["hi", "hello", "abc", "xyz", "a longer prompt here", "ok", "bye"]  # 7: a batch of 6 leaves some for the next
SFT_LOSS_KEYS = ("train/loss", "train/grad_norm", "train/lr")
PPO_KEYS = ("objective/scores", "objective/kl", "objective/kl_coef", "loss/policy", "loss/value", "policy/approxkl")


def fraction_of_a(prompts, responses):
    """An easy reward for the tiny character-level policy: the share of 'a' in the response."""
    return torch.tensor([sum(c == "a" for c in r) / max(len(r), 1) for r in responses])


@pytest.fixture
def base(tmp_path):
    model, tokenizer = tiny_policy(seed=0)
    return save_policy(model, tokenizer, str(tmp_path / "base"))


def assert_same_history(one: list[dict], two: list[dict], keys, atol=1e-6):
    assert len(one) == len(two) and one
    for step, (m1, m2) in enumerate(zip(one, two), start=1):
        for key in keys:
            assert m2[key] == pytest.approx(m1[key], abs=atol), (step, key)


def assert_same_weights(dir_one: str, dir_two: str, names=("model.safetensors",), atol=1e-6):
    for name in names:
        w1, w2 = load_file(f"{dir_one}/{name}"), load_file(f"{dir_two}/{name}")
        assert w1.keys() == w2.keys()
        for key in w1:
            torch.testing.assert_close(w2[key], w1[key], atol=atol, rtol=0, msg=f"{name}: {key}")


def assert_weights_differ(dir_one: str, dir_two: str) -> None:
    """The check above is not vacuous: training moved the weights away from the base."""
    w1, w2 = load_file(f"{dir_one}/model.safetensors"), load_file(f"{dir_two}/model.safetensors")
    assert any(not torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)


# --------------------------------------------------------------------------------------------- SFT


def sft_cfg(**overrides) -> sft.SFTConfig:
    values = dict(epochs=3, learning_rate=5e-3, warmup_steps=2, batch_size=4, eval_fraction=0.2, save_every=0)
    values.update(overrides)
    return sft.SFTConfig(**values)


def sft_run(cfg, base, out_dir, *, stop_after: int | None = None, **kwargs):
    """(result, the steps it reported); stop_after=k: cancelled once k steps were reported."""
    steps: list[int] = []
    result = sft.train(
        cfg,
        EXAMPLES,
        out_dir=str(out_dir),
        base_path=base,
        device="cpu",
        on_progress=lambda step, total, metrics, samples: steps.append(step),
        should_stop=(lambda: len(steps) >= stop_after) if stop_after else None,
        **kwargs,
    )
    return result, steps


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_sft_stopped_and_resumed_ends_where_an_uninterrupted_run_ends(base, tmp_path, adapter):
    cfg = sft_cfg(adapter=adapter)
    straight, _ = sft_run(cfg, base, tmp_path / "straight")
    assert straight.steps == 12 and not straight.stopped  # 16 training examples / 4 x 3 epochs

    stopped, _ = sft_run(cfg, base, tmp_path / "run", stop_after=5)
    assert stopped.stopped and stopped.steps == 5 and stopped.path is None
    assert stopped.checkpoint_dir == str(tmp_path / "run" / CHECKPOINT_DIR)
    assert find_checkpoint(tmp_path / "run") is not None

    resumed, resumed_steps = sft_run(cfg, base, tmp_path / "run", resume_from=tmp_path / "run")
    assert resumed_steps == list(range(6, 13)) and resumed.steps == 12 and resumed.resumed_from_step == 5
    # the whole loss curve: the stopped run's steps, then the resumed run's, are the uninterrupted run's
    assert_same_history(straight.history, stopped.history + resumed.history[5:], SFT_LOSS_KEYS)
    assert_same_history(straight.history, resumed.history, SFT_LOSS_KEYS)  # the checkpoint carries the history
    assert resumed.eval_loss_before == pytest.approx(straight.eval_loss_before, abs=1e-6)
    assert resumed.eval_loss == pytest.approx(straight.eval_loss, abs=1e-6)
    assert_same_weights(straight.path, resumed.path)
    assert_weights_differ(straight.path, base)
    assert find_checkpoint(tmp_path / "run") is None  # a finished run deletes its checkpoint


def test_sft_resumes_from_a_periodic_checkpoint_as_after_a_crash(base, tmp_path):
    """A worker killed after step 4 leaves the checkpoint of step 3 (save_every=3): resuming it gives the same
    result. (The copy taken at step 4 is what a crash would have left on disk.)"""
    cfg = sft_cfg(save_every=3)
    crash_copy = tmp_path / "left-by-the-crash"

    def copy_at_step_4(step, total, metrics, samples):
        if step == 4:
            shutil.copytree(tmp_path / "run" / CHECKPOINT_DIR, crash_copy)

    straight = sft.train(
        cfg, EXAMPLES, out_dir=str(tmp_path / "run"), base_path=base, device="cpu", on_progress=copy_at_step_4
    )
    resumed, resumed_steps = sft_run(cfg, base, tmp_path / "again", resume_from=crash_copy)
    assert resumed_steps[0] == 4 and resumed.steps == straight.steps == 12
    assert_same_history(straight.history, resumed.history, SFT_LOSS_KEYS)
    assert_same_weights(straight.path, resumed.path)


def test_sft_refuses_a_checkpoint_of_other_settings_or_other_data(base, tmp_path):
    cfg = sft_cfg()
    sft_run(cfg, base, tmp_path / "run", stop_after=1)
    assert find_checkpoint(tmp_path / "run") is not None
    with pytest.raises(ValueError, match=r"other settings \(learning_rate 0\.005 -> 0\.001\)"):
        sft_run(sft_cfg(learning_rate=1e-3), base, tmp_path / "other", resume_from=tmp_path / "run")
    with pytest.raises(ValueError, match="other training data"):
        sft.train(
            cfg,
            EXAMPLES[:-1],
            out_dir=str(tmp_path / "other"),
            base_path=base,
            device="cpu",
            resume_from=tmp_path / "run",
        )
    with pytest.raises(ValueError, match=r"other settings \(adapter 'none' -> 'lora'\)"):
        sft_run(sft_cfg(adapter="lora"), base, tmp_path / "other", resume_from=tmp_path / "run")
    # where it runs and how often it saves may change
    resumed, _ = sft_run(sft_cfg(save_every=5), base, tmp_path / "other", resume_from=tmp_path / "run")
    assert resumed.steps == 12 and not resumed.stopped


# --------------------------------------------------------------------------------------------- PPO


def ppo_cfg(**overrides) -> ppo.PPOConfig:
    # adaptive KL (its coefficient is state), a frozen bottom under one trained layer, whitened advantages,
    # 2 prompts x 3 answers per batch (with 2 processes a prompt's answers sit on both ranks)
    values = dict(
        total_episodes=36,
        batch_size=6,
        samples_per_prompt=3,
        mini_batch_size=3,
        ppo_epochs=2,
        learning_rate=1e-3,
        value_learning_rate=1e-3,
        max_new_tokens=6,
        temperature=1.0,
        adaptive_kl=True,
        kl_target=0.5,
        kl_horizon=100,
        trainable_layers=1,
        eval_prompts=4,
        save_every=0,
        seed=3,
    )
    values.update(overrides)
    return ppo.PPOConfig(**values)


def ppo_run(cfg, base, out_dir, *, stop_after: int | None = None, **kwargs):
    """(result, the steps it reported); stop_after=k: cancelled once k steps were reported."""
    steps: list[int] = []
    result = ppo.train(
        cfg,
        PROMPTS,
        fraction_of_a,
        out_dir=str(out_dir),
        base_path=base,
        device="cpu",
        on_progress=lambda step, total, metrics, samples: steps.append(step),
        should_stop=(lambda: len(steps) >= stop_after) if stop_after else None,
        **kwargs,
    )
    return result, steps


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_ppo_stopped_and_resumed_ends_where_an_uninterrupted_run_ends(base, tmp_path, adapter):
    cfg = ppo_cfg(adapter=adapter)
    straight, _ = ppo_run(cfg, base, tmp_path / "straight")
    assert straight.steps == 6 and not straight.stopped
    assert straight.history[-1]["objective/kl_coef"] != cfg.kl_coef  # the adaptive coefficient moved

    stopped, _ = ppo_run(cfg, base, tmp_path / "run", stop_after=2)
    assert stopped.stopped and stopped.steps == 2 and stopped.path is None
    assert find_checkpoint(tmp_path / "run") is not None

    resumed, resumed_steps = ppo_run(cfg, base, tmp_path / "run", resume_from=tmp_path / "run")
    assert resumed_steps == [3, 4, 5, 6] and resumed.steps == 6 and resumed.episodes == 36
    assert_same_history(straight.history, stopped.history + resumed.history[2:], PPO_KEYS)
    assert_same_history(straight.history, resumed.history, PPO_KEYS)
    # the starting policy's evaluation comes from the checkpoint, the trained one's equals the uninterrupted run's
    assert resumed.eval_before.scores == pytest.approx(straight.eval_before.scores)
    assert resumed.eval_after.scores == pytest.approx(straight.eval_after.scores, abs=1e-6)
    assert_same_weights(straight.path, resumed.path, ("model.safetensors", "value_head.safetensors"))
    assert_weights_differ(straight.path, base)
    assert find_checkpoint(tmp_path / "run") is None


def test_ppo_checkpoint_holds_the_trained_layers_and_value_head_and_refuses_other_settings(base, tmp_path):
    cfg = ppo_cfg(save_every=2)
    crash_copy = tmp_path / "left-by-the-crash"

    def copy_at_step_3(step, total, metrics, samples):
        if step == 3:
            shutil.copytree(tmp_path / "run" / CHECKPOINT_DIR, crash_copy)

    straight = ppo.train(
        cfg,
        PROMPTS,
        fraction_of_a,
        out_dir=str(tmp_path / "run"),
        base_path=base,
        device="cpu",
        on_progress=copy_at_step_3,
    )
    saved = load_file(str(crash_copy / TRAINED_WEIGHTS_FILE))
    assert {"value_head.weight", "value_head.bias"} <= set(saved)
    assert any(".layers.1." in k for k in saved) and not any(".layers.0." in k for k in saved)  # the top layer only

    resumed, resumed_steps = ppo_run(cfg, base, tmp_path / "again", resume_from=crash_copy)
    assert resumed_steps == [3, 4, 5, 6]
    assert_same_history(straight.history, resumed.history, PPO_KEYS)
    assert_same_weights(straight.path, resumed.path, ("model.safetensors", "value_head.safetensors"))

    with pytest.raises(ValueError, match=r"other settings \(kl_target 0\.5 -> 1\.0\)"):
        ppo_run(ppo_cfg(save_every=2, kl_target=1.0), base, tmp_path / "x", resume_from=crash_copy)
    with pytest.raises(ValueError, match="other training data"):
        ppo.train(cfg, PROMPTS[:-1], fraction_of_a, out_dir=str(tmp_path / "x"), base_path=base, resume_from=crash_copy)


# --------------------------------------------------------------------------------------------- two processes


def run_in_two(kind, cfg, args, run_dir, *, stop_after: int | None = None):
    """(rank 0's result, the steps reported) of a 2-process run; stop_after=k: cancelled (as a job's cancel does,
    through the stop file) once k steps were reported, which the ranks see some steps later."""
    steps: list[int] = []
    result = run_training(
        kind,
        cfg,
        args,
        num_processes=2,
        run_dir=run_dir,
        on_progress=lambda step, total, metrics, samples: steps.append(step),
        should_stop=(lambda: len(steps) >= stop_after) if stop_after else None,
    )
    return result, steps


@pytest.mark.slow  # three torchrun launches
def test_sft_in_two_processes_cancelled_and_resumed_in_two_ends_where_an_uninterrupted_run_ends(base, tmp_path):
    # long enough (400 steps) that the cancel lands mid-run however fast the machine
    cfg = sft_cfg(epochs=100, batch_size=5, learning_rate=1e-3)
    args = {"examples": EXAMPLES, "out_dir": str(tmp_path / "out"), "base_path": base, "device": "cpu"}
    straight, _ = run_in_two("sft", cfg, {**args, "out_dir": str(tmp_path / "straight")}, tmp_path / "p0")
    assert straight.steps == 400

    stopped, _ = run_in_two("sft", cfg, args, tmp_path / "p1", stop_after=3)
    assert stopped.stopped and 3 <= stopped.steps < 400, stopped.steps
    assert find_checkpoint(tmp_path / "out") is not None  # rank 0 saved at the step every rank stopped at

    resumed, resumed_steps = run_in_two("sft", cfg, {**args, "resume_from": str(tmp_path / "out")}, tmp_path / "p2")
    assert resumed_steps[0] == stopped.steps + 1 and resumed.steps == 400 and not resumed.stopped
    assert_same_history(straight.history, resumed.history, ("train/loss", "train/lr"), atol=1e-5)
    assert_same_weights(straight.path, resumed.path, atol=1e-5)
    assert_weights_differ(straight.path, base)


@pytest.mark.slow  # three torchrun launches
def test_ppo_in_two_processes_cancelled_and_resumed_in_two_ends_where_an_uninterrupted_run_ends(base, tmp_path):
    backbone = save_tiny_backbone(tmp_path / "tiny-bert", "bert", seed=0)
    reward_model, reward_tokenizer = load_for_training(backbone)
    reward_dir = reward_model.save_pretrained(tmp_path / "reward", tokenizer=reward_tokenizer, extra={"max_length": 64})
    cfg = ppo_cfg(total_episodes=6 * 40)  # 40 steps: the cancel lands mid-run
    args = {
        "prompts": PROMPTS,
        "reward_model_path": str(reward_dir),
        "out_dir": str(tmp_path / "out"),
        "base_path": base,
        "device": "cpu",
    }
    straight, _ = run_in_two("ppo", cfg, {**args, "out_dir": str(tmp_path / "straight")}, tmp_path / "p0")
    assert straight.steps == 40

    stopped, _ = run_in_two("ppo", cfg, args, tmp_path / "p1", stop_after=2)
    assert stopped.stopped and 2 <= stopped.steps < 40, stopped.steps
    assert find_checkpoint(tmp_path / "out") is not None

    resumed, resumed_steps = run_in_two("ppo", cfg, {**args, "resume_from": str(tmp_path / "out")}, tmp_path / "p2")
    assert resumed_steps[0] == stopped.steps + 1 and resumed.steps == 40 and resumed.episodes == 240
    assert_same_history(straight.history, resumed.history, PPO_KEYS, atol=1e-5)
    assert_same_weights(straight.path, resumed.path, ("model.safetensors", "value_head.safetensors"), atol=1e-5)
