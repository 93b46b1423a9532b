"""Reward model: last-real-token reading, truncation, save/load round trip, scorer."""

import math

import pytest
import torch

from rlhf_worker.training.reward_model import (
    RewardModel,
    RewardScorer,
    encode_example,
    minilm_tokenizer,
    pad_batch,
    tiny_backbone,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_reward_is_read_at_last_real_token_even_when_pad_id_is_a_real_token(kind, tokenizer):
    backbone, tok = tiny_backbone(kind, tokenizer=tokenizer)
    model = RewardModel(backbone).eval()
    short = encode_example(tok, "a prompt", "short answer", 64)[0]
    long = encode_example(tok, "a much longer prompt with many more words", "and a longer answer too", 64)[0]
    with torch.no_grad():
        alone = model(*pad_batch([short], tok.pad_token_id))
        # Pad with the id of the short sequence's own last token: only the attention mask can tell them apart
        # (SmolLM2's pad token is <|im_end|>, which also ends every chat turn).
        ids, mask = pad_batch([short, long], pad_token_id=short[-1])
        batched = model(ids, mask)
    assert ids.shape[1] > len(short)  # the short one really is padded
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    # The padded-row reward differs from the reward at the last padded position (i.e. we did not read a pad).
    with torch.no_grad():
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        at_pad = model.head(hidden[0, -1]).squeeze()
    assert not torch.isclose(at_pad, batched[0])


def test_truncation_drops_the_prompt_start_and_keeps_the_completion(tokenizer):
    prompt = " ".join(f"word{i}" for i in range(300))
    completion = "the final answer is forty two"
    ids, truncated = encode_example(tokenizer, prompt, completion, max_length=32)
    assert truncated and len(ids) == 32
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.endswith(completion)
    assert "word0 " not in text and "word299" in text.replace(" ", "")

    short_ids, short_cut = encode_example(tokenizer, "hi", completion, max_length=32)
    assert not short_cut and tokenizer.decode(short_ids, skip_special_tokens=True).endswith(completion)


def test_chat_template_is_used_when_the_tokenizer_has_one(tokenizer):
    tok = minilm_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
    ids, _ = encode_example(tok, "question here", "answer here", 64)
    assert tok.decode(ids).startswith("< user > question here < assistant > answer here")


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_save_load_round_trip_gives_identical_scores(kind, tokenizer, tmp_path):
    backbone, tok = tiny_backbone(kind, tokenizer=tokenizer, seed=3)
    model = RewardModel(backbone, bias=0.25, scale=2.0)
    prompts = ["p one", "another prompt here", "p three"]
    completions = ["a", "a longer completion with words", "c c c"]
    before = RewardScorer(model, tok, max_length=48, device="cpu").score(prompts, completions, batch_size=2)
    model.save_pretrained(tmp_path / "rm", tokenizer=tok, extra={"max_length": 48})
    assert (tmp_path / "rm" / "model.safetensors").is_file() and (tmp_path / "rm" / "reward_config.json").is_file()

    loaded = RewardScorer.from_pretrained(tmp_path / "rm", device="cpu")
    after = loaded.score(prompts, completions, batch_size=3)
    assert loaded.max_length == 48
    assert float(loaded.model.reward_bias) == 0.25 and float(loaded.model.reward_scale) == 2.0
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)
    # normalised = (raw - bias) / scale
    raw = loaded.raw_scores(prompts, completions)
    torch.testing.assert_close(after, (raw - 0.25) / 2.0)
    assert not math.isclose(float(after[0]), float(after[1]))
