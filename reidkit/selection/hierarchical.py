"""MMPL's stage 1 as one module: hierarchical prompt learning (sec. 3.2, eq. 20).

Per granularity level ``k``: the identities' prompts of that level are encoded once, the
contrastive losses ``L_i2t^k + L_t2i^k`` compare the batch's global features with its
identities' sentence features, and, with alignment, ``M^k`` patches (chosen by the level's
agent, or by class-token attention without agents) are aligned with every identity's token
features by optimal transport (``L_otce^k``). The levels combine by eq. 20; the agents' REINFORCE
losses are added to the returned loss, since their parameters are disjoint from the prompts'
and belong to their own optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from reidkit.losses import SupConLoss
from reidkit.prompts import encode_class_prompts
from reidkit.selection.agent import InformationSelectorAgent, gather_patches
from reidkit.selection.alignment import PatchToTokenAlignment
from reidkit.selection.attention import top_indices
from reidkit.selection.objectives import stage1_objective
from reidkit.selection.partition import HierarchicalPatchPartition


class HierarchicalPromptLearning(nn.Module):
    """The loss of MMPL's stage 1 (eq. 20) plus the agents' losses, for a batch of images.

    Args:
        prompts: the ``K`` prompt levels, e.g. :class:`reidkit.MultiGranularityPromptLearner`
            (anything with a ``levels`` sequence of prompt learners).
        text_encoder: a :class:`reidkit.CLIPTextEncoder` (set ``chunk_size`` and
            ``checkpoint_activations`` to bound the memory of encoding every identity).
        partition: a :class:`reidkit.HierarchicalPatchPartition` with ``K`` levels.
        alignment: a :class:`reidkit.PatchToTokenAlignment`, or ``None`` for the contrastive
            losses alone (the ablation of table 4).
        agents: one :class:`reidkit.InformationSelectorAgent` per level, or ``None`` to select
            by class-token attention (table 3); only used with ``alignment``.
        selected: ``M^k`` per level for the attention selection (required with ``alignment``
            and without ``agents``).
        alpha, beta: the weights ``alpha_k``, ``beta_k`` of eq. 20 (paper: 1 and 0.1).
        contrastive: the loss for ``L_i2t`` and ``L_t2i`` (default: CLIP-ReID's
            :class:`reidkit.SupConLoss`, dot products at temperature 1).

    Shapes:
        ``forward(patch_map, embedding, pids, attention=None)``: the frozen encoder's projected
        patch map ``(B, h, w, E)``, global features ``(B, E)``, identities ``(B,)`` and, for
        the attention selection, class-token attention ``(B, h, w, 1)``. Returns a dict of
        scalars: ``loss`` (eq. 20 plus the agents' losses), ``stage1`` (eq. 20),
        ``contrastive``, and with alignment ``ot_alignment``, with agents ``agent`` and ``reward``.
    """

    def __init__(
        self,
        prompts: nn.Module,
        text_encoder: nn.Module,
        partition: HierarchicalPatchPartition,
        alignment: PatchToTokenAlignment | None = None,
        agents: Sequence[InformationSelectorAgent] | None = None,
        selected: Sequence[int] | None = None,
        alpha: float | Sequence[float] = 1.0,
        beta: float | Sequence[float] = 0.1,
        contrastive: nn.Module | None = None,
    ) -> None:
        super().__init__()
        levels = len(prompts.levels)
        if len(partition.patch_counts) != levels:
            raise ValueError(
                f"partition must have one level per prompt level ({levels}), got "
                f"{len(partition.patch_counts)}"
            )
        if agents is not None and len(agents) != levels:
            raise ValueError(f"agents must hold one agent per level ({levels}), got {len(agents)}")
        if (
            alignment is not None
            and agents is None
            and (selected is None or len(selected) != levels)
        ):
            raise ValueError(
                f"selected must give M per level ({levels}) to select by attention, got "
                f"{selected!r}"
            )
        self.prompts = prompts
        self.text_encoder = text_encoder
        self.partition = partition
        self.alignment = alignment
        self.agents = nn.ModuleList(agents) if agents is not None and alignment else None
        self.selected = None if selected is None else tuple(selected)
        self.alpha, self.beta = alpha, beta
        self.contrastive = SupConLoss() if contrastive is None else contrastive

    @property
    def needs_attention(self) -> bool:
        """Whether ``forward`` needs the class-token attention (alignment without agents)."""
        return self.alignment is not None and self.agents is None

    def forward(
        self, patch_map: Tensor, embedding: Tensor, pids: Tensor, attention: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The stage-1 losses of a batch (eq. 20 plus the agents' losses).

        Args:
            patch_map: ``(B, h, w, E)`` projected patch tokens of the frozen image encoder.
            embedding: ``(B, E)`` global image features.
            pids: ``(B,)`` identities in ``[0, L)``.
            attention: ``(B, h, w, 1)`` class-token attention, required when
                :attr:`needs_attention`.

        Returns:
            Scalars ``loss``, ``stage1``, ``contrastive`` and, as configured,
            ``ot_alignment`` (``L_otce``), ``agent`` and ``reward`` (detached).
        """
        if self.needs_attention and attention is None:
            raise ValueError("attention (B, h, w, 1) is required to select patches without agents")
        contrastive, otce, agent_losses, rewards = [], [], [], []
        for k, level in enumerate(self.partition(patch_map, embedding)):
            classes = encode_class_prompts(self.prompts.levels[k], self.text_encoder)
            text = classes.sentence[pids]
            contrastive.append(
                self.contrastive(embedding, text, pids) + self.contrastive(text, embedding, pids)
            )
            if self.alignment is None:
                continue
            if self.agents is not None:
                decision = self.agents[k](level.features, level.scores)
                agent_losses.append(decision.loss)
                rewards.append(decision.reward.mean())
                indices = decision.indices
            else:
                scores = self.partition.pool(attention, k)[..., 0]
                indices = top_indices(scores, self.selected[k])
            patches = gather_patches(level.features, indices)
            otce.append(self.alignment(patches, classes.tokens, pids).loss)
        stage1 = stage1_objective(contrastive, otce or None, self.alpha, self.beta)
        metrics = {"stage1": stage1, "contrastive": torch.stack(contrastive).sum()}
        if otce:
            metrics["ot_alignment"] = torch.stack(otce).sum()
        loss = stage1
        if agent_losses:
            metrics["agent"] = torch.stack(agent_losses).sum()
            metrics["reward"] = torch.stack(rewards).mean().detach()
            loss = loss + metrics["agent"]
        return {"loss": loss, **metrics}
