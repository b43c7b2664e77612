"""The information selector agent of MMPL (sec. 3.2, eq. 7-12): policy-gradient patch selection.

Selecting the ``M`` most informative of ``M_c`` patches is a one-step Markov decision process:

- state ``s_j = (s_j^f, s_j^e)``: the patch feature and its similarity to the global feature
  (:class:`~reidkit.selection.HierarchicalPatchPartition`);
- policy (eq. 7): a Bi-LSTM reads the patch features ``s_j^f`` in grid order, a linear layer
  and a sigmoid give the selection probability ``p_j = A(s_j^f)``; with ``reads_scores`` it
  reads the whole state ``(s_j^f, s_j^e)`` (the score appended to each feature), the reading of
  "the state comprises two components" rather than of eq. 7;
- action (eq. 8): ``a_j ~ Bernoulli(p_j)``;
- reward (eq. 9-10): ``(p - p_0) / (1 - p_0)`` with ``p_0`` the mean score of all patches and
  ``p`` the mean score of the selected ones (:func:`selection_reward`);
- REINFORCE (eq. 11) over ``Z`` episodes per image, with a leave-one-out baseline: the mean
  reward of the image's other ``Z - 1`` episodes, which keeps the gradient estimate unbiased
  and lowers its variance;
- budget penalty (eq. 12): ``E_m = gamma | mean_j p_j - M / M_c |`` (:func:`budget_penalty`)
  pulls the expected number of selected patches to ``M``.

The agent reads detached features and returns its own loss for its own optimiser. Whatever was
sampled, the patches handed on are exactly the ``M`` most probable ones, so the selection is
deterministic given the features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit.selection.attention import top_indices


@dataclass
class AgentOutput:
    """The agent's decision for a batch of ``B`` images with ``M_c`` candidate patches each.

    Attributes:
        probabilities: ``(B, M_c)`` selection probabilities ``p_j`` (eq. 7).
        indices: ``(B, M)`` the ``M`` most probable patches, in ascending patch order.
        loss: scalar ``policy_loss + budget_penalty`` for the agent's optimiser, or ``None``
            in evaluation mode or without scores.
        policy_loss: scalar REINFORCE surrogate (eq. 11, negated for minimisation) or ``None``.
        budget_penalty: scalar ``E_m`` (eq. 12) or ``None``.
        reward: ``(B,)`` mean episode reward per image (detached) or ``None``.
    """

    probabilities: Tensor
    indices: Tensor
    loss: Tensor | None = None
    policy_loss: Tensor | None = None
    budget_penalty: Tensor | None = None
    reward: Tensor | None = None


def selection_reward(actions: Tensor, scores: Tensor, eps: float = 1e-6) -> Tensor:
    """Reward of a selection, MMPL eq. 9-10: ``(p - p_0) / (1 - p_0)``.

    ``p_0 = mean_j s_j^e`` and ``p = sum_j a_j s_j^e / sum_j a_j``. An empty selection earns 0
    (it says nothing about the patches), and ``1 - p_0`` is floored at ``eps`` for the
    degenerate state in which every score is 1.

    Args:
        actions: ``(..., M_c)`` binary selections ``a_j`` (any dtype).
        scores: ``(..., M_c)`` scores ``s_j^e`` in ``[0, 1]``, broadcastable to ``actions``.
        eps: floor of the denominator.

    Returns:
        ``(...)`` rewards in ``[-p_0 / (1 - p_0), 1]``.
    """
    actions = actions.to(scores.dtype)
    baseline_score = scores.mean(dim=-1)
    count = actions.sum(dim=-1)
    selected_score = (actions * scores).sum(dim=-1) / count.clamp_min(1)
    reward = (selected_score - baseline_score) / (1 - baseline_score).clamp_min(eps)
    return torch.where(count > 0, reward, torch.zeros_like(reward))


def budget_penalty(probabilities: Tensor, num_selected: int, weight: float = 1.0) -> Tensor:
    """Budget penalty, MMPL eq. 12: ``gamma | mean_j p_j - M / M_c |``, averaged over images.

    Args:
        probabilities: ``(B, M_c)`` selection probabilities.
        num_selected: ``M``.
        weight: ``gamma``.

    Returns:
        Scalar penalty.
    """
    target = num_selected / probabilities.shape[-1]
    return weight * (probabilities.mean(dim=-1) - target).abs().mean()


class InformationSelectorAgent(nn.Module):
    """Bi-LSTM policy that selects ``M`` of ``M_c`` patches, trained by REINFORCE (eq. 7-12).

    Args:
        feature_dim: width ``E`` of the patch features ``s_j^f``.
        num_patches: ``M_c``, the candidate patches per image.
        num_selected: ``M``, the patches kept (``1 <= M <= M_c``).
        hidden_size: hidden size of each LSTM direction.
        episodes: ``Z``, sampled selections per image for the policy gradient (``>= 2`` for the
            leave-one-out baseline).
        budget_weight: ``gamma`` of eq. 12.
        reads_scores: the policy reads ``(s_j^f, s_j^e)``, not ``s_j^f`` alone (then every call
            needs the scores).

    The output layer's bias starts at ``logit(M / M_c)``, so the untrained policy already
    meets the budget on average.

    Example:
        >>> agent = InformationSelectorAgent(512, num_patches=64, num_selected=40)
        >>> out = agent(level.features, level.scores)   # level: a PatchLevel
        >>> out.loss.backward()                          # agent optimiser step
        >>> selected = gather_patches(level.features, out.indices)   # (B, 40, 512)
    """

    def __init__(
        self,
        feature_dim: int,
        num_patches: int,
        num_selected: int,
        hidden_size: int = 256,
        episodes: int = 8,
        budget_weight: float = 1.0,
        reads_scores: bool = False,
    ) -> None:
        super().__init__()
        checks.check_integer("feature_dim", feature_dim, 1)
        checks.check_integer("num_patches", num_patches, 1)
        checks.check_integer("hidden_size", hidden_size, 1)
        checks.check_integer("episodes", episodes, 2)
        checks.check_integer("num_selected", num_selected, 1, num_patches)
        checks.check_number("budget_weight", budget_weight, at_least=0)
        self.feature_dim = feature_dim
        self.num_patches = num_patches
        self.num_selected = num_selected
        self.episodes = episodes
        self.budget_weight = budget_weight
        self.reads_scores = bool(reads_scores)
        self.lstm = nn.LSTM(
            feature_dim + self.reads_scores, hidden_size, batch_first=True, bidirectional=True
        )
        self.head = nn.Linear(2 * hidden_size, 1)
        ratio = num_selected / num_patches
        ratio = min(max(ratio, 1e-3), 1 - 1e-3)
        nn.init.constant_(self.head.bias, math.log(ratio / (1 - ratio)))

    def logits(self, features: Tensor, scores: Tensor | None = None) -> Tensor:
        """Selection logits ``(B, M_c)`` of ``features`` ``(B, M_c, E)`` (and, with
        ``reads_scores``, ``scores`` ``(B, M_c)``); ``p = sigmoid``."""
        if features.dim() != 3 or features.shape[1:] != (self.num_patches, self.feature_dim):
            raise ValueError(
                f"features must have shape (B, {self.num_patches}, {self.feature_dim}), got "
                f"{tuple(features.shape)}"
            )
        state = features.detach()
        if self.reads_scores:
            if scores is None or scores.shape != features.shape[:2]:
                shape = None if scores is None else tuple(scores.shape)
                raise ValueError(
                    f"scores of shape {tuple(features.shape[:2])} are required by an agent that "
                    f"reads them (reads_scores=True), got {shape}"
                )
            state = torch.cat([state, scores.detach().to(state.dtype)[..., None]], dim=-1)
        hidden: Tensor
        hidden, _ = self.lstm(state)
        logits: Tensor = self.head(hidden)
        return logits.squeeze(-1)

    def forward(self, features: Tensor, scores: Tensor | None = None) -> AgentOutput:
        """Select ``M`` patches per image and, when training with scores, compute the loss.

        Args:
            features: ``(B, M_c, E)`` patch features ``s_j^f`` (detached inside).
            scores: ``(B, M_c)`` scores ``s_j^e`` in ``[0, 1]``; needed for the loss only.

        Returns:
            :class:`AgentOutput`; its loss fields are set in training mode when ``scores`` is
            given.
        """
        logits = self.logits(features, scores)
        probabilities = torch.sigmoid(logits)
        indices = top_indices(probabilities, self.num_selected)
        if not self.training or scores is None:
            return AgentOutput(probabilities, indices)
        if scores.shape != probabilities.shape:
            raise ValueError(
                f"scores must have shape {tuple(probabilities.shape)}, got {tuple(scores.shape)}"
            )
        scores = scores.detach().to(probabilities.dtype)
        # Z episodes for every image at once: (Z, B, M_c).
        episode_logits = logits.expand(self.episodes, *logits.shape)
        with torch.no_grad():
            actions = torch.bernoulli(probabilities.expand_as(episode_logits))
            rewards = selection_reward(actions, scores)  # (Z, B)
            baseline = (rewards.sum(dim=0, keepdim=True) - rewards) / (self.episodes - 1)
            advantage = rewards - baseline
        log_policy = -F.binary_cross_entropy_with_logits(
            episode_logits, actions, reduction="none"
        ).sum(dim=-1)  # log pi(a | s) summed over the patches: (Z, B)
        policy_loss = -(advantage * log_policy).mean()
        penalty = budget_penalty(probabilities, self.num_selected, self.budget_weight)
        return AgentOutput(
            probabilities,
            indices,
            loss=policy_loss + penalty,
            policy_loss=policy_loss,
            budget_penalty=penalty,
            reward=rewards.mean(dim=0),
        )

    def extra_repr(self) -> str:
        return (
            f"num_patches={self.num_patches}, num_selected={self.num_selected}, "
            f"episodes={self.episodes}, budget_weight={self.budget_weight}, "
            f"reads_scores={self.reads_scores}"
        )


def gather_patches(features: Tensor, indices: Tensor) -> Tensor:
    """The selected patches ``(B, M, E)``: ``features`` ``(B, M_c, E)`` at ``indices`` ``(B, M)``.

    Gradients flow to ``features`` (the selection itself is not differentiable).
    """
    if indices.dim() != 2 or indices.shape[0] != features.shape[0]:
        raise ValueError(
            f"indices must have shape ({features.shape[0]}, M), got {tuple(indices.shape)}"
        )
    return features.gather(1, indices[..., None].expand(-1, -1, features.shape[-1]))
