"""InformationSelectorAgent: reward, budget penalty, policy gradient and learning on a toy task."""

from __future__ import annotations

import itertools

import pytest
import torch

from reidkit.selection import (
    InformationSelectorAgent,
    budget_penalty,
    gather_patches,
    selection_reward,
)


def test_reward_equals_hand_computation() -> None:
    scores = torch.tensor([0.9, 0.5, 0.2, 0.6])
    actions = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # p0 = (0.9 + 0.5 + 0.2 + 0.6) / 4 = 0.55; p = (0.9 + 0.6) / 2 = 0.75
    expected = (0.75 - 0.55) / (1 - 0.55)
    torch.testing.assert_close(selection_reward(actions, scores), torch.tensor(expected))


def test_reward_is_batched_and_zero_for_empty_selection() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.2, 0.6], [0.1, 0.3, 0.2, 0.4]])
    actions = torch.tensor([[[0, 0, 0, 0], [0, 0, 1, 0]], [[1, 1, 1, 1], [0, 1, 0, 1]]])
    rewards = selection_reward(actions, scores)  # (2 episodes, 2 images)
    p0 = scores.mean(dim=1)
    expected = torch.tensor(
        [
            [0.0, (0.2 - p0[1]) / (1 - p0[1])],
            [0.0, (0.35 - p0[1]) / (1 - p0[1])],
        ]
    )
    torch.testing.assert_close(rewards, expected)


def test_budget_penalty_formula_and_direction() -> None:
    probabilities = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.1, 0.2]], requires_grad=True)
    penalty = budget_penalty(probabilities, num_selected=2, weight=3.0)
    expected = 3.0 * ((0.75 - 0.5) + (0.5 - 0.15)) / 2
    torch.testing.assert_close(penalty, torch.tensor(expected))
    penalty.backward()
    assert (probabilities.grad[0] > 0).all() and (probabilities.grad[1] < 0).all()


def test_selection_shapes_determinism_and_detached_features() -> None:
    torch.manual_seed(0)
    agent = InformationSelectorAgent(6, num_patches=10, num_selected=4, hidden_size=8)
    features = torch.randn(3, 10, 6, requires_grad=True)
    scores = torch.rand(3, 10)
    out = agent(features, scores)
    assert out.probabilities.shape == (3, 10) and out.indices.shape == (3, 4)
    expected = out.probabilities.topk(4, dim=1).indices.sort(dim=1).values
    assert torch.equal(out.indices, expected)
    assert out.loss is not None and out.reward.shape == (3,)
    out.loss.backward()
    assert features.grad is None
    assert all(p.grad is not None for p in agent.parameters())
    agent.eval()
    first, second = agent(features, scores), agent(features, scores)
    assert first.loss is None and torch.equal(first.indices, second.indices)
    assert gather_patches(features, first.indices).shape == (3, 4, 6)
    torch.testing.assert_close(
        gather_patches(features, first.indices)[1, 2], features[1, first.indices[1, 2]]
    )


def test_initial_policy_meets_the_budget() -> None:
    agent = InformationSelectorAgent(5, num_patches=16, num_selected=4, hidden_size=4)
    torch.nn.init.zeros_(agent.head.weight)
    probabilities = agent(torch.randn(2, 16, 5)).probabilities
    torch.testing.assert_close(probabilities, torch.full((2, 16), 0.25))


def test_policy_gradient_is_unbiased_for_the_expected_reward() -> None:
    """Eq. 11 with many episodes against the exact gradient of E_pi[reward] (all 2^M_c actions)."""
    torch.manual_seed(0)
    num_patches = 4
    agent = InformationSelectorAgent(
        3, num_patches, 2, hidden_size=4, episodes=40000, budget_weight=0.0
    )
    features, scores = torch.randn(2, num_patches, 3), torch.rand(2, num_patches)
    params = [p for p in agent.parameters()]

    probabilities = torch.sigmoid(agent.logits(features))
    actions = torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_patches)))  # (16, 4)
    log_pi = (
        actions[:, None] * probabilities.log() + (1 - actions[:, None]) * (-probabilities).log1p()
    ).sum(-1)  # (16, B)
    expected_reward = (log_pi.exp() * selection_reward(actions[:, None], scores)).sum(0).mean()
    exact = torch.autograd.grad(expected_reward, params)

    estimate = torch.autograd.grad(-agent(features, scores).policy_loss, params)
    exact_flat = torch.cat([g.flatten() for g in exact])
    estimate_flat = torch.cat([g.flatten() for g in estimate])
    cosine = torch.nn.functional.cosine_similarity(exact_flat, estimate_flat, dim=0)
    assert cosine > 0.98
    assert (estimate_flat.norm() / exact_flat.norm() - 1).abs() < 0.1


def _toy_batch(batch: int, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches whose score s^e is a hidden, monotone function of their feature."""
    features = torch.randn(batch, 8, direction.numel())
    return features, torch.sigmoid(2 * features @ direction)


def test_agent_learns_to_select_high_score_patches() -> None:
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(6), dim=0)
    agent = InformationSelectorAgent(6, num_patches=8, num_selected=3, hidden_size=8)
    optimiser = torch.optim.Adam(agent.parameters(), lr=2e-2)

    def overlap_with_best() -> float:
        features, scores = _toy_batch(256, direction)
        with torch.no_grad():
            chosen = agent.eval()(features).indices
        agent.train()
        best = scores.topk(3, dim=1).indices
        hits = (chosen[:, :, None] == best[:, None, :]).any(-1).float()
        return hits.mean().item()

    before = overlap_with_best()
    for _ in range(150):
        out = agent(*_toy_batch(16, direction))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    after = overlap_with_best()
    assert before < 0.6  # chance is 3/8
    assert after > 0.85
    mean_probability = agent(*_toy_batch(256, direction)).probabilities.mean()
    assert abs(mean_probability.item() - 3 / 8) < 0.15


def test_budget_penalty_pushes_mean_probability_to_the_budget() -> None:
    torch.manual_seed(0)
    agent = InformationSelectorAgent(4, num_patches=16, num_selected=4, hidden_size=4)
    torch.nn.init.constant_(agent.head.bias, 3.0)  # mean p near 0.95
    optimiser = torch.optim.SGD(agent.parameters(), lr=0.5)
    features = torch.randn(4, 16, 4)
    start = agent(features).probabilities.mean().item()
    for _ in range(60):
        penalty = agent(features, torch.rand(4, 16)).budget_penalty
        optimiser.zero_grad()
        penalty.backward()
        optimiser.step()
    end = agent(features).probabilities.mean().item()
    assert abs(start - 0.25) > 0.5
    assert abs(end - 0.25) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_selected": 0}, "num_selected"),
        ({"num_selected": 9}, "num_selected"),
        ({"episodes": 1}, "episodes"),
        ({"budget_weight": -1.0}, "budget_weight"),
    ],
)
def test_bad_options_are_rejected(kwargs, match: str) -> None:
    options = {"feature_dim": 4, "num_patches": 8, "num_selected": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        InformationSelectorAgent(**options)


def test_bad_inputs_are_rejected() -> None:
    agent = InformationSelectorAgent(4, num_patches=8, num_selected=2, hidden_size=4)
    with pytest.raises(ValueError, match="features"):
        agent(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match="scores"):
        agent(torch.randn(2, 8, 4), torch.rand(2, 7))


def test_an_agent_that_reads_scores_sees_them_as_the_last_input_feature() -> None:
    """reads_scores: the LSTM's input is (s^f, s^e); the logits equal those of a plain LSTM
    and head run on the concatenation, and changing only the scores changes them."""
    torch.manual_seed(3)
    agent = InformationSelectorAgent(
        5, num_patches=8, num_selected=3, hidden_size=4, reads_scores=True
    )
    features, scores = torch.randn(2, 8, 5), torch.rand(2, 8)
    hidden, _ = agent.lstm(torch.cat([features, scores[..., None]], dim=-1))
    torch.testing.assert_close(agent.logits(features, scores), agent.head(hidden).squeeze(-1))
    assert not torch.allclose(agent.logits(features, scores), agent.logits(features, 1 - scores))
    with pytest.raises(ValueError, match=r"scores of shape \(2, 8\) are required"):
        agent(features)
