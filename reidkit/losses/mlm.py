"""Masked language modelling loss (BERT; UniPT eq. 2-3).

For a sentence ``x`` whose positions ``M`` were selected by the masking
(:class:`~reidkit.clip.masking.TokenMasking`) and ``x_{\\M}`` its masked version, eq. 2 is

.. math:: L_{mlm} = -\\sum_{i \\in \\mathcal M} \\log p(x_i \\mid x_{\\setminus \\mathcal M}),

the cross-entropy of the predicted vocabulary distribution at each selected position against
the token that was there. Over a batch, :class:`MaskedLanguageModelingLoss` averages over all
selected tokens of all sentences (``reduction="mean"``), as BERT's code does, so that its
scale does not grow with the sentence length and the weight ``β = 1`` of eq. 3 balances it
against the contrastive loss; ``reduction="sum"`` over one sentence's tokens is eq. 2 as
printed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit import checks
from reidkit.losses.base import ReductionLoss, at_least_float32


class MaskedLanguageModelingLoss(ReductionLoss):
    """Cross-entropy of vocabulary logits at the selected positions against the true tokens.

    Args:
        reduction: ``"mean"`` over the ``S`` selected tokens of the batch, ``"sum"``, or
            ``"none"`` (``(S,)``). No selected token gives 0, attached to the graph.

    Example::

        masked = masking(token_ids, encoder.content_token_mask(token_ids), token_embedding)
        hidden = encoder(masked.embeddings, token_ids).hidden
        loss = MaskedLanguageModelingLoss()(
            mlm_head(hidden[masked.selected]), masked.targets[masked.selected]
        )
    """

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits`` ``(S, V)`` against token ids ``targets`` ``(S,)`` in ``[0, V)``."""
        checks.check_float_matrix("logits", logits)
        checks.check_labels("targets", targets, logits.shape[0])
        vocabulary = logits.shape[1]
        if bool(((targets < 0) | (targets >= vocabulary)).any()):
            raise ValueError(
                f"targets must be token ids in [0, {vocabulary}), got values outside that range"
            )
        log_prob = torch.log_softmax(at_least_float32(logits), dim=1)
        return self.reduce(-log_prob.gather(1, targets.unsqueeze(1)).squeeze(1))
