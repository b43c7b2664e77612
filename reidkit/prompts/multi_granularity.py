"""Hierarchical (multi-granularity) textual prompts of MMPL (sec. 3.2).

Level ``k`` of ``K`` has its own ID-specific prompt
``P_t^k = "A photo of [X_1^k] ... [X_{N_k}^k] person"`` with ``N_k`` learnable tokens, so each
identity gets ``K`` text features ``T^k = T(P_t^k)`` (eq. 22), trained with eq. 20. The output
features of the ``N_k`` learnable tokens are aligned with selected image patches by optimal
transport (eq. 13-19); :attr:`PromptBatch.context_positions` slices them out of
``TextFeatures.tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import Tensor, nn

from reidkit import checks
from reidkit.prompts.id_specific import PromptLearner
from reidkit.prompts.template import PromptBatch, Tokenizer, default_tokenizer


class MultiGranularityPromptLearner(nn.Module):
    """``K`` :class:`~reidkit.prompts.PromptLearner` levels with ``N_1, ..., N_K`` tokens.

    Args:
        num_classes: number of identities ``C``.
        clip_model: an open_clip CLIP model (any text width); only its token embedding is read.
        n_ctx: ``(N_1, ..., N_K)``, the number of learnable tokens of each level.
        template: prompt text with ``{}`` where the learnable tokens go.
        tokenizer: maps a list of strings to ``(T, L)`` ids; ``None`` uses CLIP's tokenizer.

    Attributes:
        levels: the ``K`` per-level learners; ``levels[k].context`` is ``(C, N_k, width)``.
    """

    def __init__(
        self,
        num_classes: int,
        clip_model: nn.Module,
        n_ctx: Sequence[int] = (4, 6, 8),
        template: str = "A photo of a {} person.",
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        if isinstance(n_ctx, int) or len(n_ctx) == 0:
            raise ValueError(f"n_ctx must be a non-empty sequence of token counts, got {n_ctx!r}")
        tokenizer = tokenizer or default_tokenizer(clip_model)
        self.levels = nn.ModuleList(
            PromptLearner(num_classes, clip_model, template, count, tokenizer) for count in n_ctx
        )

    @property
    def num_levels(self) -> int:
        """Number of granularity levels ``K``."""
        return len(self.levels)

    def context_positions(self, level: int) -> slice:
        """Sequence positions of the ``N_k`` learnable tokens of ``level``."""
        return self._level(level).context_positions

    def forward(
        self, labels: Tensor | None = None, level: int | None = None
    ) -> PromptBatch | list[PromptBatch]:
        """Prompts of the identities ``labels`` at one level or at every level.

        Args:
            labels: ``(B,)`` identity indices in ``[0, C)``; ``None`` gives all ``C`` prompts.
            level: ``k`` in ``[0, K)``; ``None`` returns all levels.

        Returns:
            One :class:`~reidkit.prompts.template.PromptBatch` ``(B, L, width)``, or a list of
            ``K`` of them, level by level.
        """
        if level is None:
            return [learner(labels) for learner in self.levels]
        prompts: PromptBatch = self._level(level)(labels)
        return prompts

    def _level(self, level: int) -> PromptLearner:
        count = len(self.levels)
        checks.check_integer("level", level, 0, count - 1)
        return cast(PromptLearner, self.levels[level])
