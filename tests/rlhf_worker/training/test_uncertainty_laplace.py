"""The last-layer Laplace margins (training/uncertainty.py) against hand computation, and the features they read."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_worker.training.reward_model import RewardModel, RewardScorer, tiny_backbone
from rlhf_worker.training.uncertainty import SIGMA_FLOOR, laplace_precision, task_margins

SIGMOID_1 = 1 / (1 + math.exp(-1))  # p of a pair whose scores differ by 1
CURVATURE_1 = SIGMOID_1 * (1 - SIGMOID_1)  # p(1 - p) = 0.19661...


def test_one_feature_by_hand():
    # Completions with features 2, 0, 1 and scores 1, 0, 0; one label: completion 0 over completion 1.
    features, scores = [[2.0], [0.0], [1.0]], [1.0, 0.0, 0.0]
    precision = laplace_precision(features, scores, [0], [1], prior_precision=1.0)
    # H = λ + p(1-p) d² with d = 2 - 0 and p = σ(1 - 0): 1 + 0.19661 * 4 = 1.78645
    assert precision.item() == pytest.approx(1 + 4 * CURVATURE_1)
    assert precision.item() == pytest.approx(1.786448, abs=1e-6)
    # pair (0,1): |1-0| / sqrt(2²/H) = sqrt(H)/2; (0,2): |1-0| / sqrt(1²/H) = sqrt(H); (1,2): 0.
    # mean = (0.5 + 1 + 0) sqrt(H) / 3 = 0.5 * 1.33658 = 0.66829
    margin = task_margins(features, scores, [[0, 1, 2]], precision)
    assert margin.tolist() == pytest.approx([1.5 * math.sqrt(1 + 4 * CURVATURE_1) / 3])
    assert margin.item() == pytest.approx(0.668290, abs=1e-6)


def test_two_features_by_hand():
    # h0 = (1, 0), h1 = (0, 1), h2 = (0, 0); scores 1, 0, 0.5; one label: 0 over 1, so d = (1, -1), p = σ(1).
    features, scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), torch.tensor([1.0, 0.0, 0.5])
    precision = laplace_precision(features, scores, [0], [1], prior_precision=1.0)
    c = CURVATURE_1
    assert precision.flatten().tolist() == pytest.approx([1 + c, -c, -c, 1 + c])
    # H has eigenvalue 1 along (1, 1) and 1 + 2c along (1, -1), so
    # (0,1): d = (1,-1): dᵀH⁻¹d = 2/(1+2c) = 1.435518; |Δs| = 1   -> 1/1.198131 = 0.834634
    # (0,2): d = (1, 0): dᵀH⁻¹d = (1 + 1/(1+2c))/2 = 0.858880; |Δs| = 0.5 -> 0.5/0.926758 = 0.539515
    # (1,2): d = (0, 1): the same variance; |Δs| = 0.5 -> 0.539515;  mean 0.637888
    expected = (1 / math.sqrt(2 / (1 + 2 * c)) + 2 * 0.5 / math.sqrt((1 + 1 / (1 + 2 * c)) / 2)) / 3
    margins = task_margins(features, scores, [[0, 1, 2], [0, 2]], precision)
    assert margins.tolist() == pytest.approx([expected, 0.5 / math.sqrt((1 + 1 / (1 + 2 * c)) / 2)])
    assert margins[0].item() == pytest.approx(0.637888, abs=1e-6)


def test_a_large_gap_with_huge_variance_is_less_sure_than_a_small_gap_with_tiny_variance():
    features = torch.tensor(
        [
            [0.0, 0.0],  # 0, 1: a hundred labels compare these: along the first feature the head is well known
            [1.0, 0.0],
            [0.0, 0.0],  # 2, 3: task A differs only along the second feature, which no label has touched
            [0.0, 1.0],
            [0.0, 0.0],  # 4, 5: task B differs along the well-known first feature
            [1.0, 0.0],
        ]
    )
    scores = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0, 0.2])
    precision = laplace_precision(features, scores, [1] * 100, [0] * 100, prior_precision=0.01)
    assert precision.flatten().tolist() == pytest.approx([0.01 + 100 * 0.25, 0.0, 0.0, 0.01])
    task_a, task_b = task_margins(features, scores, [[2, 3], [4, 5]], precision).tolist()
    # A: gap 2 but σ = sqrt(1/0.01) = 10 -> 0.2; B: gap 0.2 but σ = sqrt(1/25.01) = 0.19996 -> 1.0002
    assert task_a == pytest.approx(0.2)
    assert task_b == pytest.approx(0.2 * math.sqrt(25.01))
    assert task_a < task_b  # A is the less sure, though its raw gap is ten times B's


def test_identical_completions_give_zero_and_a_lone_completion_nan():
    features, scores = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]]), torch.tensor([0.3, 0.3, 0.0])
    precision = laplace_precision(features, scores, [], [], prior_precision=2.0)
    assert precision.flatten().tolist() == pytest.approx([2.0, 0.0, 0.0, 2.0])  # no labels: the prior alone
    same, lone = task_margins(features, scores, [[0, 1], [2]], precision).tolist()
    assert same == 0.0  # d = 0: |Δs| = 0 over the floor, not 0/0
    assert math.isnan(lone)
    assert SIGMA_FLOOR > 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="prior_precision must be above 0"):
        laplace_precision([[1.0]], [0.0], [], [], prior_precision=0.0)
    with pytest.raises(ValueError, match="better but"):
        laplace_precision([[1.0], [0.0]], [0.0, 1.0], [0], [], prior_precision=1.0)
    with pytest.raises(ValueError, match="precision must be 2×2"):
        task_margins([[1.0, 0.0]], [0.0], [[0]], torch.eye(3))


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_the_scorer_returns_the_features_its_head_read_in_the_same_pass(kind):
    backbone, tokenizer = tiny_backbone(kind, seed=3)
    model = RewardModel(backbone, bias=0.5, scale=2.0, kind="encoder" if kind == "bert" else "decoder")
    scorer = RewardScorer(model, tokenizer, max_length=32, device="cpu")
    prompts = ["say hi", "say hi", "count to three please"]
    completions = ["hi", "hello there, friend", "one two three"]
    raw, features = scorer.raw_scores_and_features(prompts, completions, batch_size=2)
    assert features.shape == (3, 32) and raw.shape == (3,)
    head_bias = model.head.bias.item() if model.head.bias is not None else 0.0
    assert raw.tolist() == pytest.approx((features @ model.head.weight[0].detach() + head_bias).tolist(), abs=1e-5)
    assert raw.tolist() == pytest.approx(scorer.raw_scores(prompts, completions, batch_size=3).tolist(), abs=1e-5)
    assert scorer.score(prompts, completions).tolist() == pytest.approx(((raw - 0.5) / 2.0).tolist(), abs=1e-5)
    empty_raw, empty_features = scorer.raw_scores_and_features([], [])
    assert empty_raw.shape == (0,) and empty_features.shape == (0, 32)
