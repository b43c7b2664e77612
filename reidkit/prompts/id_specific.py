"""ID-specific prompts of CLIP-ReID: one set of learnable tokens per identity.

The prompt of identity ``y`` is ``P_t(y) = "A photo of a [X_1^y] ... [X_N^y] person."``
(MMPL sec. 3.1); its text feature ``T_y = T(P_t(y))`` (eq. 1) is learned with the image-text
contrastive losses (eq. 2-4) while both CLIP encoders stay frozen.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.prompts.template import (
    PromptBatch,
    PromptTemplate,
    Tokenizer,
    resolve_labels,
)


class PromptLearner(nn.Module):
    """``num_classes`` prompts, each with its own ``n_ctx`` learnable token vectors.

    The context vectors start from ``N(0, 0.02^2)``; they are the only parameters. The
    tokenized template and the frozen embeddings around the tokens are buffers, so the learner
    does not keep a reference to the CLIP model.

    Args:
        num_classes: number of identities ``C``.
        clip_model: an open_clip CLIP model (any text width); only its token embedding is read.
        template: prompt text with ``{}`` where the learnable tokens go.
        n_ctx: number ``N`` of learnable tokens per identity.
        tokenizer: maps a list of strings to ``(T, L)`` ids; ``None`` uses CLIP's tokenizer with
            the model's context length.

    Attributes:
        context: ``(C, N, width)`` learnable token vectors ``[X_1^y] ... [X_N^y]``.
        context_positions: the slice of sequence positions they occupy.
    """

    def __init__(
        self,
        num_classes: int,
        clip_model: nn.Module,
        template: str = "A photo of a {} person.",
        n_ctx: int = 4,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        checks.check_integer("num_classes", num_classes, 1)
        checks.check_integer("n_ctx", n_ctx, 1)
        self.num_classes = num_classes
        self.template = PromptTemplate([template], n_ctx, clip_model, tokenizer)
        prefix = self.template.prefix
        self.context = nn.Parameter(
            torch.empty(num_classes, n_ctx, self.template.width, dtype=prefix.dtype)
        )
        nn.init.normal_(self.context, std=0.02)

    @property
    def context_positions(self) -> slice:
        """Sequence positions of the learnable tokens."""
        return self.template.context_positions

    def forward(self, labels: Tensor | None = None) -> PromptBatch:
        """Prompts of the identities ``labels``.

        Args:
            labels: ``(B,)`` identity indices in ``[0, C)``; ``None`` gives all ``C`` prompts.

        Returns:
            :class:`~reidkit.prompts.template.PromptBatch` with ``(B, L, width)`` embeddings.
        """
        labels = resolve_labels(labels, self.num_classes, self.context.device)
        return self.template.assemble(self.context[labels])
