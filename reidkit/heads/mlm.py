"""The prediction head of masked language modelling (BERT; UniPT eq. 2).

From a token's hidden state ``h`` (before the text projection) to logits over the vocabulary:

.. math::

    z = W_{dec}\\,\\operatorname{LN}\\big(\\operatorname{GELU}(W h + b)\\big) + b_{dec},
    \\qquad p(x_i \\mid x_{\\setminus\\mathcal M}) = \\operatorname{softmax}(z)_{x_i},

BERT's transform (dense, GELU, layer norm) followed by a decoder whose weight may be tied to the
token embedding table ``E`` (``W_dec = E``), as BERT ties it.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from reidkit import checks


class MaskedLanguageModelHead(nn.Module):
    """Vocabulary logits of hidden states, optionally decoding with the token embeddings.

    Args:
        width: the hidden width of the text tower.
        vocab_size: the size of its vocabulary.
        tied_embedding: the tower's token embedding (``nn.Embedding(vocab_size, width)``):
            the decoder uses its weight (shared, trained by both), and the head then holds
            only the transform and the decoder bias; ``None``: a decoder weight of its own.

    Apply it to the selected positions only, ``head(hidden[selected])``: logits over a
    vocabulary of 49408 at every position of a batch would take gigabytes.
    """

    def __init__(
        self, width: int, vocab_size: int, tied_embedding: nn.Embedding | None = None
    ) -> None:
        super().__init__()
        checks.check_integer("width", width, 1)
        checks.check_integer("vocab_size", vocab_size, 1)
        if tied_embedding is not None and (
            not isinstance(tied_embedding, nn.Embedding)
            or tuple(tied_embedding.weight.shape) != (vocab_size, width)
        ):
            got = (
                tuple(tied_embedding.weight.shape)
                if isinstance(tied_embedding, nn.Embedding)
                else type(tied_embedding).__name__
            )
            raise ValueError(
                f"tied_embedding must be an nn.Embedding({vocab_size}, {width}), got {got}"
            )
        self.width = width
        self.vocab_size = vocab_size
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.tied_embedding = tied_embedding
        self.decoder_weight: nn.Parameter | None = None
        if tied_embedding is None:
            self.decoder_weight = nn.Parameter(torch.empty(vocab_size, width))
            nn.init.normal_(self.decoder_weight, std=0.02)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))

    @property
    def tied(self) -> bool:
        """Whether the decoder uses the token embedding table."""
        return self.tied_embedding is not None

    def forward(self, hidden: Tensor) -> Tensor:
        """``(..., vocab_size)`` logits of hidden states ``(..., width)``."""
        if not isinstance(hidden, Tensor) or hidden.dim() < 1 or hidden.shape[-1] != self.width:
            raise ValueError(
                f"hidden must have shape (..., {self.width}), got {checks.describe(hidden)}"
            )
        weight = (
            self.tied_embedding.weight
            if self.tied_embedding is not None
            else cast(Tensor, self.decoder_weight)  # __init__ sets it when untied
        )
        return F.linear(self.transform(hidden), weight, self.decoder_bias)

    def extra_repr(self) -> str:
        return f"width={self.width}, vocab_size={self.vocab_size}, tied={self.tied}"
