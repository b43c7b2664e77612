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
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip.text_encoder import CLIPTextEncoder
from reidkit.losses import SupConLoss
from reidkit.prompts import (
    ClassPromptCache,
    ClassPromptFeatures,
    MultiGranularityPromptLearner,
    encode_class_prompts,
)
from reidkit.selection.agent import InformationSelectorAgent, gather_patches
from reidkit.selection.alignment import PatchToTokenAlignment
from reidkit.selection.attention import top_indices
from reidkit.selection.objectives import stage1_objective
from reidkit.selection.partition import HierarchicalPatchPartition

TEXT_GRADIENTS = ("all", "batch")
"""Which identities' prompts stage 1 encodes with gradients: every identity's, or the batch's."""


class HierarchicalPromptLearning(nn.Module):
    """The loss of MMPL's stage 1 (eq. 20) plus the agents' losses, for a batch of images.

    Args:
        prompts: the ``K`` prompt levels, e.g. :class:`reidkit.MultiGranularityPromptLearner`
            (anything with a ``levels`` sequence of prompt learners).
        text_encoder: a :class:`reidkit.CLIPTextEncoder` (set ``chunk_size`` and
            ``checkpoint_activations`` to bound the memory of encoding every identity).
        partition: a :class:`reidkit.HierarchicalPatchPartition` with ``K`` levels.
        alignment: a :class:`reidkit.PatchToTokenAlignment`, or ``None`` without the
            patch-to-token alignment (table 4).
        agents: one :class:`reidkit.InformationSelectorAgent` per level, or ``None`` to select
            by class-token attention (table 4), or, without alignment, not to select at all;
            with agents and without alignment the selection enters ``L_sel`` (see the module).
        selected: ``M^k`` per level for the attention selection (required with ``alignment``
            and without ``agents``).
        alpha, beta: the weights ``alpha_k``, ``beta_k`` of eq. 20 (paper: 1 and 0.1).
        contrastive: the loss for ``L_i2t`` and ``L_t2i`` (default: CLIP-ReID's
            :class:`reidkit.SupConLoss`, dot products at temperature 1).
        text_gradient: ``"all"`` (exact: every identity's prompt encoded with gradients) or
            ``"batch"`` (only the batch's identities; see
            :class:`reidkit.prompts.ClassPromptCache`).
        text_refresh_every: with ``"batch"``, encode the other identities every this many
            steps (1: every step, the loss stays exact).

    Shapes:
        ``forward(patch_map, embedding, pids, attention=None)``: the frozen encoder's projected
        patch map ``(B, h, w, E)``, global features ``(B, E)``, identities ``(B,)`` and, for
        the attention selection, class-token attention ``(B, h, w, 1)``. Returns a dict of
        scalars: ``loss`` (eq. 20 plus the agents' losses), ``stage1`` (eq. 20),
        ``contrastive``, with alignment ``ot_alignment``, with agents and without alignment
        ``selection`` (``L_sel``), with agents ``agent`` and ``reward``.
    """

    def __init__(
        self,
        prompts: MultiGranularityPromptLearner,
        text_encoder: CLIPTextEncoder,
        partition: HierarchicalPatchPartition,
        alignment: PatchToTokenAlignment | None = None,
        agents: Sequence[InformationSelectorAgent] | None = None,
        selected: Sequence[int] | None = None,
        alpha: float | Sequence[float] = 1.0,
        beta: float | Sequence[float] = 0.1,
        contrastive: nn.Module | None = None,
        text_gradient: str = "all",
        text_refresh_every: int = 1,
    ) -> None:
        super().__init__()
        checks.check_choice("text_gradient", text_gradient, TEXT_GRADIENTS)
        checks.check_integer("text_refresh_every", text_refresh_every, 1)
        if text_gradient == "all" and text_refresh_every != 1:
            raise ValueError(
                "text_refresh_every applies to text_gradient='batch' only, got "
                f"text_refresh_every={text_refresh_every}"
            )
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
        self.agents = nn.ModuleList(agents) if agents is not None else None
        self.selected = None if selected is None else tuple(selected)
        self.alpha, self.beta = alpha, beta
        self.contrastive = SupConLoss() if contrastive is None else contrastive
        self.text_gradient = text_gradient
        self.text_caches = (
            [ClassPromptCache(text_refresh_every) for _ in range(levels)]
            if text_gradient == "batch"
            else None
        )

    @property
    def needs_attention(self) -> bool:
        """Whether ``forward`` needs the class-token attention (alignment without agents)."""
        return self.alignment is not None and self.agents is None

    def class_features(self, k: int, pids: Tensor) -> ClassPromptFeatures:
        """Every identity's level-``k`` prompt features ``(L, E)``, ``(L, N, E)``, as
        ``text_gradient`` says (exactly in evaluation mode or without gradients)."""
        level = self.prompts.levels[k]
        if self.text_caches is None or not (self.training and torch.is_grad_enabled()):
            return encode_class_prompts(level, self.text_encoder)
        return self.text_caches[k](level, self.text_encoder, torch.unique(pids))

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
        contrastive, patch_terms, agent_losses, rewards = [], [], [], []
        for k, level in enumerate(self.partition(patch_map, embedding)):
            classes = self.class_features(k, pids)
            text = classes.sentence[pids]
            contrastive.append(self._contrastive(embedding, text, pids))
            if self.alignment is None and self.agents is None:
                continue
            if self.agents is not None:
                decision = self.agents[k](level.features, level.scores)
                agent_losses.append(decision.loss)
                rewards.append(decision.reward.mean())
                indices = decision.indices
            else:
                # Alignment without agents: forward checked attention, __init__ selected.
                scores = self.partition.pool(cast(Tensor, attention), k)[..., 0]
                indices = top_indices(scores, cast(tuple[int, ...], self.selected)[k])
            patches = gather_patches(level.features, indices)
            if self.alignment is not None:
                patch_terms.append(self.alignment(patches, classes.tokens, pids).loss)
            else:  # ISA without PTA: the pooled selection in the contrastive losses
                pooled = F.normalize(patches.mean(dim=1), dim=-1)
                pooled = pooled * embedding.norm(dim=-1, keepdim=True)
                patch_terms.append(self._contrastive(pooled, text, pids))
        stage1 = stage1_objective(contrastive, patch_terms or None, self.alpha, self.beta)
        metrics = {"stage1": stage1, "contrastive": torch.stack(contrastive).sum()}
        if patch_terms:
            name = "ot_alignment" if self.alignment is not None else "selection"
            metrics[name] = torch.stack(patch_terms).sum()
        loss = stage1
        if agent_losses:
            metrics["agent"] = torch.stack(agent_losses).sum()
            metrics["reward"] = torch.stack(rewards).mean().detach()
            loss = loss + metrics["agent"]
        return {"loss": loss, **metrics}

    def _contrastive(self, image: Tensor, text: Tensor, pids: Tensor) -> Tensor:
        """``L_i2t + L_t2i`` (eq. 2-3) between image and text features of the batch."""
        loss: Tensor = self.contrastive(image, text, pids) + self.contrastive(text, image, pids)
        return loss
