"""SFT: prompt tokens are masked out of the loss, the held-out loss falls, the checkpoint loads."""

import pytest
import torch

from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.policy_models import format_prompt, load_policy, tiny_policy
from rlhf_worker.training.sft import IGNORE_INDEX, SFTConfig, answer_loss, build_example, collate, train

torch.set_num_threads(1)


def test_labels_mask_the_prompt_and_learn_answer_plus_end_of_turn():
    _, tok = tiny_policy()
    ids, labels = build_example(tok, "hi", "yo", max_seq_len=512)
    prompt_ids = tok(format_prompt(tok, "hi"), add_special_tokens=False).input_ids
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert ids == prompt_ids + tok("yo", add_special_tokens=False).input_ids + [im_end]
    assert labels == [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]


def test_truncation_keeps_prompt_tail_and_answer_start():
    _, tok = tiny_policy()
    ids, labels = build_example(tok, "p" * 100, "abc", max_seq_len=40)
    assert len(ids) == 40 and labels[-4:] == ids[-4:] and ids[-4:-1] == tok("abc", add_special_tokens=False).input_ids
    ids, labels = build_example(tok, "q", "z" * 100, max_seq_len=40)
    assert len(ids) == 40 and ids[-1] == tok.convert_tokens_to_ids("z")


def test_loss_counts_only_answer_tokens():
    model, tok = tiny_policy(seed=1)
    rows = [
        build_example(tok, "hello there", "ok", max_seq_len=512),
        build_example(tok, "x", "longer answer", max_seq_len=512),
    ]
    batch = collate(rows, tok.pad_token_id, "cpu")
    loss, n = answer_loss(model, batch)
    assert n == 3 + 14  # "ok" + <|im_end|>, "longer answer" + <|im_end|>
    # recompute by hand from unpadded sequences, answer positions only
    total = 0.0
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            for t in range(1, len(ids)):
                if labels[t] != IGNORE_INDEX:
                    total += -torch.log_softmax(logits[t - 1], -1)[labels[t]].item()
    assert loss.item() == pytest.approx(total / n, rel=1e-4)
    # changing the prompt's labels would change nothing: the prompt has no labels at all
    assert all(lab == IGNORE_INDEX for lab in batch["labels"][0][: len(rows[0][0]) - 3].tolist())


def test_sft_lowers_held_out_loss_and_saves_loadable_policy(tmp_path):
    examples = [(f"say hi {i}", "hello friend") for i in range(20)]
    calls = []
    cfg = SFTConfig(epochs=8, learning_rate=5e-3, warmup_steps=0, batch_size=4, eval_fraction=0.2)
    result = train(
        cfg, examples, out_dir=str(tmp_path / "sft"), policy=tiny_policy(seed=0), on_progress=lambda *a: calls.append(a)
    )
    assert result.num_eval == 4 and result.num_train == 16
    assert result.eval_loss < 0.5 * result.eval_loss_before
    assert calls and calls[-1][0] == calls[-1][1] == 32 and "eval/loss" in calls[-1][2]
    model, tok = load_policy(result.path, "cpu")
    assert model.config.num_hidden_layers == 2 and tok.pad_token == "<|endoftext|>"


def test_should_stop_and_config_errors(tmp_path):
    result = train(
        SFTConfig(epochs=1, batch_size=2),
        [("a", "b")] * 6,
        out_dir=str(tmp_path),
        policy=tiny_policy(),
        should_stop=lambda: True,
    )
    assert result.stopped and result.steps == 0 and result.path is None
    with pytest.raises(ConfigError) as e:
        SFTConfig.from_dict({"eval_fraction": 1.5})
    assert e.value.field == "eval_fraction"
