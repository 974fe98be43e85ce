import torch

from algorithms.base import make
from algorithms.rebel import rebel_loss
from harness.core.batch import Batch, PolicyOutput


def test_rebel_loss_matches_hand_computation():
    logp_new = torch.tensor([[-1.0, -2.0], [-3.0, -1.5]])
    logp_old = torch.tensor([[-1.5, -2.0], [-2.0, -2.0]])
    reward = torch.tensor([[1.0, 0.0], [0.2, 0.6]])
    # pair 1: (0.5 - 0) - 1.0 * (1 - 0) = -0.5 ; pair 2: (-1 - 0.5) - 1.0 * (0.2 - 0.6) = -1.1
    loss, residual = rebel_loss(logp_new, logp_old, reward, eta=1.0)
    assert torch.allclose(residual, torch.tensor([-0.5, -1.1]))
    assert torch.isclose(loss, torch.tensor((0.25 + 1.21) / 2))
    # eta scales the reward difference: pair 1 with eta 2: 0.5 - 2 * 1 = -1.5
    _, residual = rebel_loss(logp_new, logp_old, reward, eta=2.0)
    assert torch.isclose(residual[0], torch.tensor(-1.5))


def test_rebel_loss_is_zero_when_log_ratio_differences_equal_eta_reward_differences():
    logp_old = torch.randn(8, 2)
    reward = torch.randn(8, 2)
    eta = 0.7
    shift = torch.randn(8)  # any common shift of both log-ratios leaves the difference unchanged
    logp_new = logp_old + torch.stack([shift + eta * reward[:, 0], shift + eta * reward[:, 1]], 1)
    loss, _ = rebel_loss(logp_new, logp_old, reward, eta)
    assert loss.item() < 1e-10


def test_rebel_algorithm_uses_summed_token_logprobs_and_needs_pairs():
    algo = make("rebel", {"eta": 1.0})
    assert algo.samples_per_prompt == 2
    tokens_old = torch.tensor([[[-1.0, -0.5], [-0.2, 0.0]]])  # [P=1, K=2, Lr=2]
    batch = Batch(query=torch.zeros(1, 2, dtype=torch.long), response=torch.zeros(1, 2, 2, dtype=torch.long),
                  mask=torch.ones(1, 2, 2, dtype=torch.bool), logp_old=tokens_old, logp_ref=tokens_old,
                  reward=torch.tensor([[0.3, 0.1]]))
    new = PolicyOutput(logp_tokens=tokens_old.clone().requires_grad_())
    loss, stats = algo.loss(batch, new)
    assert abs(loss.item() - 0.2**2) < 1e-6  # ratios are 1, so the residual is -eta * (0.3 - 0.1)
    loss.backward()
    assert new.logp_tokens.grad is not None and stats["rebel/mse"] == loss.item()
