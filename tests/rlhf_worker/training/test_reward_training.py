"""Reward training: InstructGPT K-wise loss, one forward per completion, learning, normalisation, resume, cancel, config."""

import math
import os
from pathlib import Path

import pytest
import torch

from rlhf_worker.training.checkpoint import CHECKPOINT_DIR, TRAINER_STATE_FILE, find_checkpoint
from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.reward import (
    EncodedRanking,
    Ranking,
    RewardConfig,
    collate_rankings,
    labeler_agreement,
    pairs_from_ranks,
    ranking_loss_sum,
    split_rankings,
    train,
)
from rlhf_worker.training.reward_model import RewardModel, RewardScorer, save_tiny_backbone
from rlhf_worker.training.synthetic import synthetic_rankings

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-bert", "bert", seed=0)


def tiny_cfg(backbone_dir, **overrides):
    base = dict(
        backbone=backbone_dir,
        learning_rate=1e-3,
        epochs=1,
        batch_size=8,
        max_length=64,
        eval_fraction=0.1,
        eval_every=0,
        save_every=0,
        warmup_ratio=0.05,
        device="cpu",
        seed=0,
    )
    base.update(overrides)
    return RewardConfig(**base)


def test_pairs_skip_ties():
    assert pairs_from_ranks([0, 1, 1, 2]) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    assert pairs_from_ranks([2, 2]) == []
    assert pairs_from_ranks([1, 0]) == [(1, 0)]


def test_loss_equals_hand_computed_value_with_ties():
    # Ranking A: K=4, completions 1 and 2 tied -> 5 pairs. Ranking B: K=2, the second is better -> 1 pair.
    a = EncodedRanking(ids=[[1, 2], [1], [1, 2, 3], [4]], pairs=pairs_from_ranks([0, 1, 1, 2]))
    b = EncodedRanking(ids=[[5], [6, 7]], pairs=pairs_from_ranks([1, 0]))
    batch = collate_rankings([a, b], pad_token_id=0)
    rewards = torch.tensor([2.0, 0.5, 1.0, -1.0, 0.3, 0.8])
    loss_sum, correct = ranking_loss_sum(rewards, batch)

    def nll(margin):  # -log sigmoid(margin)
        return math.log(1 + math.exp(-margin))

    # A's pair margins: r0-r1=1.5, r0-r2=1.0, r0-r3=3.0, r1-r3=1.5, r2-r3=2.0 ; B's: r5-r4=0.5
    loss_a = (nll(1.5) + nll(1.0) + nll(3.0) + nll(1.5) + nll(2.0)) / 5
    loss_b = nll(0.5)
    expected_mean = (loss_a + loss_b) / 2
    # on paper: A = (0.20141 + 0.31326 + 0.04859 + 0.20141 + 0.12693) / 5 = 0.17832 ; B = 0.47408
    assert expected_mean == pytest.approx((0.17832 + 0.47408) / 2, abs=1e-4)
    assert float(loss_sum) / batch.num_rankings == pytest.approx(expected_mean, rel=1e-6)
    assert correct == 6
    assert batch.input_ids.shape[0] == 6  # K_A + K_B sequences, not 2 per pair


def test_each_completion_goes_through_the_model_once_per_epoch(backbone_dir, tmp_path, monkeypatch):
    rankings = synthetic_rankings(40, 7, seed=1, max_words=12)
    seen_rows: list[int] = []
    original_forward = RewardModel.forward

    def counting_forward(self, input_ids, attention_mask):
        seen_rows.append(input_ids.shape[0])
        return original_forward(self, input_ids, attention_mask)

    monkeypatch.setattr(RewardModel, "forward", counting_forward)
    rows_after_training = []
    result = train(
        tiny_cfg(backbone_dir, eval_fraction=0.0, batch_size=4),
        rankings,
        out_dir=tmp_path,
        on_progress=lambda step, total, m, s: rows_after_training.append((step, total, sum(seen_rows), len(seen_rows))),
    )
    last_step, total, rows, calls = rows_after_training[-1]
    assert last_step == total == result.step
    trained = [r for r in rankings if r.pairs()]
    assert rows == sum(len(r.completions) for r in trained)  # 7 per ranking, not 2 x 21 pairs
    assert calls == total  # one forward call per step: all K completions of its rankings in one padded batch


def test_accuracy_rises_well_above_chance_on_a_learnable_task(backbone_dir, tmp_path):
    rankings = synthetic_rankings(300, 4, seed=2, max_words=20)
    history = []
    result = train(
        tiny_cfg(backbone_dir, epochs=3, eval_every=10),
        rankings,
        out_dir=tmp_path,
        on_progress=lambda step, total, m, s: history.append(dict(m)),
    )
    first_eval = next(m["eval/accuracy"] for m in history if "eval/accuracy" in m)
    assert result.metrics["eval/accuracy"] >= 0.85, result.metrics
    assert result.metrics["eval/accuracy"] > first_eval
    assert result.metrics["eval/loss"] < math.log(2) - 0.3
    assert {"train/loss", "train/accuracy", "eval/loss", "eval/accuracy"} <= set(history[-1])


def test_normalisation_gives_reference_rewards_mean_0_std_1(backbone_dir, tmp_path):
    rankings = synthetic_rankings(60, 4, seed=3, max_words=15)
    demos = [(r.prompt, r.completions[0] + " excellent") for r in rankings[:30]]
    result = train(tiny_cfg(backbone_dir), rankings, out_dir=tmp_path, reference_completions=demos)
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    scores = scorer.score([p for p, _ in demos], [c for _, c in demos]).double()
    assert float(scores.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(scores.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert result.scale != 1.0 and result.bias == pytest.approx(float(scorer.model.reward_bias))


def test_truncation_keeps_every_comparison(backbone_dir, tmp_path):
    rankings = synthetic_rankings(30, 3, seed=4, prompt_max_extra_words=60)
    full = train(tiny_cfg(backbone_dir, eval_fraction=0.0, max_length=24), rankings, out_dir=tmp_path)
    assert full.num_truncated > 0
    assert full.num_train_rankings + full.num_without_pairs == len(rankings)
    assert full.num_train_pairs == sum(len(r.pairs()) for r in rankings)


def test_should_stop_stops_within_one_step_and_resume_continues(backbone_dir, tmp_path):
    rankings = synthetic_rankings(80, 4, seed=5, max_words=15)
    cfg = tiny_cfg(backbone_dir)
    steps_seen = []
    stopped = train(
        cfg,
        rankings,
        out_dir=tmp_path / "a",
        on_progress=lambda step, total, m, s: steps_seen.append(step),
        should_stop=lambda: len(steps_seen) >= 3,
    )
    assert stopped.stopped and stopped.step == 3 and steps_seen == [1, 2, 3]
    assert stopped.model_dir is None and stopped.checkpoint_dir

    resumed_steps = []
    resumed = train(
        cfg,
        rankings,
        out_dir=tmp_path / "a",
        resume_from=stopped.checkpoint_dir,
        on_progress=lambda step, total, m, s: resumed_steps.append(step),
    )
    assert resumed_steps[0] == 4 and resumed_steps[-1] == resumed.total_steps == resumed.step
    assert not resumed.stopped and resumed.model_dir

    straight = train(cfg, rankings, out_dir=tmp_path / "b")
    a = RewardModel.from_pretrained(resumed.model_dir).state_dict()
    b = RewardModel.from_pretrained(straight.model_dir).state_dict()
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_periodic_checkpoint_is_resumable(backbone_dir, tmp_path):
    rankings = synthetic_rankings(50, 3, seed=6, max_words=10)
    cfg = tiny_cfg(backbone_dir, save_every=2)
    calls = []
    with pytest.raises(RuntimeError):

        def crash(step, total, m, s):
            calls.append(step)
            if step == 5:
                raise RuntimeError("worker died")

        train(cfg, rankings, out_dir=tmp_path, on_progress=crash)
    resumed_steps = []
    train(
        cfg,
        rankings,
        out_dir=tmp_path,
        resume_from=tmp_path,
        on_progress=lambda step, total, m, s: resumed_steps.append(step),
    )
    assert resumed_steps[0] == 5  # last checkpoint was written after step 4


def test_split_keeps_prompts_or_labelers_apart_and_reports_labeler_agreement():
    rankings = synthetic_rankings(40, 4, seed=7, labelers_per_prompt=3, noise=0.6)
    train_part, held = split_rankings(rankings, 0.25, "prompt", seed=0)
    assert held and not {r.group for r in train_part} & {r.group for r in held}
    train_part, held = split_rankings(rankings, 0.34, "labeler", seed=0)
    assert held and not {r.labeler for r in train_part} & {r.labeler for r in held}
    agreement = labeler_agreement(rankings)
    assert 0.5 < agreement < 1.0


def test_labeler_agreement_hand_computed():
    comps = ["a", "b", "c"]
    rankings = [
        Ranking("p", comps, [0, 1, 2], labeler="x"),  # a>b, a>c, b>c
        Ranking("p", comps, [0, 2, 1], labeler="y"),  # a>c, a>b, c>b -> agrees on 2 of 3
        Ranking("p", comps, [0, 0, 1], labeler="z"),  # a=b tie: only a>c and b>c are strict
        Ranking("q", comps, [0, 1, 2], labeler="x"),  # alone on its prompt: no pair of labelers
    ]
    # x-y: 2/3 agree ; x-z: a?c agree, b?c agree (2/2) ; y-z: a?c agree, b?c disagree (1/2)
    assert labeler_agreement(rankings) == pytest.approx(5 / 7)
    assert labeler_agreement(rankings[3:]) is None


def test_labeler_agreement_is_reported_with_eval_metrics(backbone_dir, tmp_path):
    rankings = synthetic_rankings(30, 3, seed=8, labelers_per_prompt=2, noise=0.5, max_words=8)
    progress = []
    result = train(
        tiny_cfg(backbone_dir, eval_fraction=0.3),
        rankings,
        out_dir=tmp_path,
        on_progress=lambda step, total, m, s: progress.append(m),
    )
    assert 0.0 < result.metrics["eval/labeler_agreement"] <= 1.0
    assert "eval/labeler_agreement" in progress[-1]


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("learning_rate", -1),
        ("epochs", 0),
        ("batch_size", "many"),
        ("split_by", "project"),
        ("eval_fraction", 0.95),
        ("lr_schedule", "step"),
        ("max_length", 2),
        ("device", "tpu"),
        ("not_a_setting", 1),
    ],
)
def test_config_errors_name_the_field(field_name, value):
    with pytest.raises(ConfigError) as excinfo:
        RewardConfig.from_dict({field_name: value})
    assert excinfo.value.field == field_name
    assert field_name in str(excinfo.value)


def test_config_from_dict_coerces_form_input():
    cfg = RewardConfig.from_dict({"learning_rate": "2e-5", "epochs": "2", "split_by": "labeler"})
    assert cfg.learning_rate == 2e-5 and cfg.epochs == 2 and cfg.split_by == "labeler"
    assert RewardConfig.from_dict(cfg.to_dict()) == cfg


def test_a_crash_while_a_checkpoint_replaces_the_last_one_keeps_a_complete_checkpoint(
    backbone_dir, tmp_path, monkeypatch
):
    """Killed between removing the old checkpoint and putting the new one in place: the old one is still there."""
    rankings = synthetic_rankings(50, 3, seed=6, max_words=10)
    cfg = tiny_cfg(backbone_dir, save_every=2)
    real_replace = os.replace
    checkpoint = tmp_path / CHECKPOINT_DIR
    placed = []

    def dies_placing_the_second_checkpoint(src, dst):
        if Path(dst) == checkpoint:
            placed.append(src)
            if len(placed) == 2:
                raise SystemExit("killed while the step-4 checkpoint was put in place")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_placing_the_second_checkpoint)
    with pytest.raises(SystemExit):
        train(cfg, rankings, out_dir=tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)

    found = find_checkpoint(tmp_path)
    assert found is not None, "no complete checkpoint left"
    assert torch.load(found / TRAINER_STATE_FILE, weights_only=True)["step"] == 2
    resumed_steps = []
    train(
        cfg,
        rankings,
        out_dir=tmp_path,
        resume_from=tmp_path,
        on_progress=lambda step, total, m, s: resumed_steps.append(step),
    )
    assert resumed_steps[0] == 3
    assert find_checkpoint(tmp_path) is None and not list(tmp_path.glob(CHECKPOINT_DIR + "*")), (
        "a finished run keeps no checkpoint"
    )


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last_one(backbone_dir, tmp_path, monkeypatch):
    rankings = synthetic_rankings(20, 3, seed=6, max_words=10)
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", str(dst))) or real_replace(src, dst))
    train(tiny_cfg(backbone_dir, save_every=1), rankings, out_dir=tmp_path)
    checkpoint = str(tmp_path / CHECKPOINT_DIR)
    placed = [i for i, event in enumerate(events) if event == ("replace", checkpoint)]
    assert placed
    for i in placed:
        synced = {Path(path).name for kind, path in events[:i] if kind == "fsync"}
        assert {"model.safetensors", TRAINER_STATE_FILE} <= synced
