"""PPO math against numbers computed by hand: rewards with KL penalty, GAE, clipped losses, whitening, KL control."""

import math

import pytest
import torch

from rlhf_worker.training.config_base import ConfigError
from rlhf_worker.training.ppo import (
    AdaptiveKLController,
    PPOConfig,
    compute_gae,
    compute_rewards,
    masked_whiten,
    ppo_losses,
)


def test_rewards_put_score_on_last_response_token_and_penalise_kl():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]])
    ref_logprobs = torch.tensor([[-1.5, -2.0, -2.0], [-1.5, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    rewards, kl = compute_rewards(torch.tensor([1.0, 1.0]), logprobs, ref_logprobs, mask, kl_coef=0.1)
    # kl = logp - ref = [0.5, 0, -1]; reward = -0.1 * kl, + score on the last real token
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -1.0], [0.5, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 1.1], [-0.05, 1.0, 0.0]]))


def test_gae_matches_hand_computation_with_gamma_1_lambda_095():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0: δ2 = 1 - 0.4 = 0.6; δ1 = 0.4 - 0.2 = 0.2 -> A1 = 0.2 + 0.95*0.6 = 0.77;
    #        δ0 = 0.2 - 0.5 = -0.3 -> A0 = -0.3 + 0.95*0.77 = 0.4315
    # row 1 (last token masked, so its reward 5 and value 9 are ignored):
    #        A1 = 2 - 0.5 = 1.5; A0 = (0.5 - 1.0) + 0.95*1.5 = 0.925
    torch.testing.assert_close(advantages, torch.tensor([[0.4315, 0.77, 0.6], [0.925, 1.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.9315, 0.97, 1.0], [1.925, 2.0, 0.0]]))


def test_gae_with_lambda_1_gives_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 3.0]])
    values = torch.tensor([[1.0, 2.0, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[2.9, 2.8, 3.0]]))
    torch.testing.assert_close(advantages, torch.tensor([[1.9, 0.8, 2.5]]))


def test_clipped_policy_and_value_losses_match_hand_computation():
    # three real tokens and one masked token whose numbers must not count
    new_logprobs = torch.tensor([[math.log(1.5), math.log(0.5), math.log(0.5), 5.0]])
    old_logprobs = torch.zeros(1, 4)
    advantages = torch.tensor([[2.0, 1.0, -1.0, 100.0]])
    new_values = torch.tensor([[0.5, 0.1, -0.3, 50.0]])
    old_values = torch.zeros(1, 4)
    returns = torch.tensor([[1.0, 1.0, -1.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    out = ppo_losses(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, mask, 0.2, 0.2)
    # ratios 1.5, 0.5, 0.5. pg_loss1 = -A*r = [-3, -0.5, 0.5]; pg_loss2 = -A*clip(r) = [-2.4, -0.8, 0.8]
    # max = [-2.4, -0.5, 0.8] -> mean -0.7; clipped where pg_loss2 > pg_loss1: tokens 0 and 2
    assert out["pg_loss"].item() == pytest.approx(-0.7, abs=1e-6)
    assert out["clipfrac"].item() == pytest.approx(2 / 3, abs=1e-6)
    expected_kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 3
    assert out["approx_kl"].item() == pytest.approx(expected_kl, abs=1e-6)
    # values clipped to [0.2, 0.1, -0.2]; losses1 = [0.25, 0.81, 0.49]; losses2 = [0.64, 0.81, 0.64]
    # 0.5 * mean(max) = 0.5 * 2.09 / 3
    assert out["vf_loss"].item() == pytest.approx(0.5 * 2.09 / 3, abs=1e-6)
    assert out["vf_clipfrac"].item() == pytest.approx(2 / 3, abs=1e-6)


def test_losses_have_gradient_only_through_unclipped_terms():
    new_logprobs = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    out = ppo_losses(
        new_logprobs,
        torch.zeros(1, 2),
        torch.tensor([[2.0, 2.0]]),
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        torch.ones(1, 2, dtype=torch.bool),
        0.2,
        0.2,
    )
    out["pg_loss"].backward()
    # token 0 is clipped (ratio 1.5 > 1.2 with A > 0): no gradient; token 1: d/dlogp(-A r)/2 = -2*1.1/2
    torch.testing.assert_close(new_logprobs.grad, torch.tensor([[0.0, -1.1]]))


def test_masked_whiten_uses_only_unmasked_entries():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.float32)
    w = masked_whiten(x, mask)
    # mean 2, unbiased std 1 -> [-1, 0, 1], masked entry 0
    torch.testing.assert_close(w, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-4, rtol=0)


def test_adaptive_kl_controller_moves_beta_towards_target():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_steps=10)  # error clipped to +0.2 -> beta * (1 + 0.2*10/100)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(current_kl=5.4, n_steps=10)  # error -0.1 -> * 0.99
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99)


def test_config_errors_name_the_field():
    assert PPOConfig.from_dict({}).kl_coef == 0.02
    with pytest.raises(ConfigError) as e:
        PPOConfig.from_dict({"mini_batch_size": 5, "batch_size": 16})
    assert e.value.field == "mini_batch_size"
    with pytest.raises(ConfigError, match="must divide batch_size") as e:
        PPOConfig.from_dict({"samples_per_prompt": 3, "batch_size": 16})
    assert e.value.field == "samples_per_prompt"
    with pytest.raises(ConfigError) as e:
        PPOConfig.from_dict({"cliprange": 1.5})
    assert e.value.field == "cliprange"
    with pytest.raises(ConfigError) as e:
        PPOConfig.from_dict({"temperature": 0})
    assert e.value.field == "temperature"
