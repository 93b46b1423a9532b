"""Policy models: cached conversion (race-safe), padding that never hides <|im_end|>, prompt formatting."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from rlhf_worker.training import policy_models
from rlhf_worker.training.policy_models import (
    format_prompt,
    load_policy,
    materialise_once,
    save_tiny_policy,
    stop_token_ids,
    tiny_policy,
)


def test_default_policy_path_reuses_the_cached_copy(tmp_path, monkeypatch):
    cached = tmp_path / "base" / policy_models.DEFAULT_POLICY_DIRNAME
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    monkeypatch.setattr(policy_models, "gguf_file_path", lambda: pytest.fail("must not convert again"))
    assert policy_models.default_policy_path(str(tmp_path)) == str(cached)


def test_concurrent_materialisation_builds_into_temp_dirs_and_keeps_one(tmp_path):
    target = tmp_path / "base" / "model"
    builds = []

    def slow_build(out: Path):
        builds.append(out)
        time.sleep(0.2)
        (out / "config.json").write_text(str(len(builds)))

    results = []
    threads = [threading.Thread(target=lambda: results.append(materialise_once(target, slow_build))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target] * 3 and (target / "config.json").exists()
    assert len({str(b) for b in builds}) == len(builds), "each caller builds in its own temp folder"
    assert sorted(os.listdir(target.parent)) == ["model"], "losers' temp folders are removed"


def test_failed_build_leaves_nothing_behind(tmp_path):
    def broken(out: Path):
        (out / "partial.bin").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        materialise_once(tmp_path / "m", broken)
    assert os.listdir(tmp_path) == []


def test_tiny_policy_round_trips_and_pads_with_endoftext(tmp_path):
    path = save_tiny_policy(str(tmp_path / "tiny"), seed=3)
    model, tok = load_policy(path, "cpu")
    assert tok.padding_side == "left"
    assert tok.pad_token == "<|endoftext|>" and model.config.pad_token_id == tok.pad_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)
    original, _ = tiny_policy(seed=3)
    ids = torch.tensor([[1, 5, 6, 7]])
    torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits)


def test_format_prompt_uses_chat_template_or_plain_text():
    _, tok = tiny_policy()
    assert format_prompt(tok, "hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    messages = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    assert format_prompt(tok, messages).startswith("<|im_start|>system\nbe nice<|im_end|>\n")
    tok.chat_template = None
    assert format_prompt(tok, "hi") == "hi\n"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RLHF_TEST_REAL_MODELS"), reason="converts the real GGUF (~40 s); set RLHF_TEST_REAL_MODELS=1"
)
def test_real_smollm2_conversion(tmp_path):
    path = policy_models.default_policy_path(str(tmp_path))
    model, tok = load_policy(path, "cpu")
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert "quantization_config" not in model.config.to_dict()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RLHF_TEST_REAL_MODELS"),
    reason="loads the real default models (~60 s); set RLHF_TEST_REAL_MODELS=1",
)
def test_default_models_from_the_wheels_generate_and_score(tmp_path):
    """What `make run` users get with no model hub: SmolLM2 answers, MiniLM scores the answer."""
    from rlhf_worker.training.generation import GenerationConfig, generate
    from rlhf_worker.training.reward_model import RewardModel, RewardScorer, default_backbone_path, load_for_training

    model, tok = load_policy(policy_models.default_policy_path(str(tmp_path)), "cpu")
    cfg = GenerationConfig(num_samples=2, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=0)
    answers = generate(model, tok, ["What is the capital of France?"], cfg, batch_size=2)
    assert len(answers) == 1 and len(answers[0]) == 2
    assert all(a.strip() for a in answers[0]), answers

    reward, reward_tok = load_for_training(default_backbone_path())
    assert isinstance(reward, RewardModel)
    scores = RewardScorer(reward, reward_tok, max_length=128).score(["What is the capital of France?"] * 2, answers[0])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
