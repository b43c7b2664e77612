"""BERT's token masking for CLIP's text tower, with a learned mask embedding.

Masked language modelling (BERT; UniPT eq. 2) hides some words of a sentence and predicts
them from the rest. Each maskable position is selected with probability ``p`` (15 %); a
selected token is replaced by the mask embedding with probability 0.8, by the embedding of a
random token with probability 0.1, and kept with probability 0.1; the model predicts the
original token at every selected position. CLIP's vocabulary has no ``[MASK]`` token, and the
text encoder starts from embeddings (:class:`~reidkit.clip.CLIPTextEncoder`), so the mask is a
learned vector of the embedding width rather than a token id. The start token, the end-of-text
token and the padding are never selected: the caller passes the maskable positions,
:meth:`CLIPTextEncoder.content_token_mask <reidkit.clip.CLIPTextEncoder.content_token_mask>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks

IGNORE_INDEX = -100
"""The target of positions that are not predicted (``torch.nn.functional.cross_entropy``'s
``ignore_index``)."""


class MaskedTokens(NamedTuple):
    """What :class:`TokenMasking` returns for a batch of ``B`` sentences of ``L`` tokens.

    Attributes:
        embeddings: ``(B, L, width)`` token embeddings with the selected positions replaced.
        selected: ``(B, L)`` bool, the positions to predict (masked, replaced or kept).
        targets: ``(B, L)`` the original token id at each selected position,
            :data:`IGNORE_INDEX` elsewhere; ``targets[selected]`` are the ``S`` targets in
            row-major order, the order of ``hidden[selected]``.
    """

    embeddings: Tensor
    selected: Tensor
    targets: Tensor


class TokenMasking(nn.Module):
    """Select, replace and remember tokens for masked language modelling (BERT's 15/80/10/10).

    Args:
        width: the token embedding width of the text tower.
        vocab_size: the size of its vocabulary (49408 for CLIP).
        probability: chance that a maskable position is selected, in ``(0, 1]`` (0.15).
        mask_fraction: of the selected positions, the share given the mask embedding (0.8).
        random_fraction: the share given a random token (0.1); the remaining
            ``1 - mask_fraction - random_fraction`` keep their token.
        excluded_ids: token ids never drawn as random replacements (the start and end-of-text
            tokens, ``49406`` and ``49407`` for CLIP).

    The mask embedding starts as ``N(0, 0.02^2)`` per entry (BERT's initialisation of its
    embeddings) and learns with the model.

    Example::

        masking = TokenMasking(encoder.width, 49408, excluded_ids=(49406, 49407))
        masked = masking(token_ids, encoder.content_token_mask(token_ids), tower.token_embedding)
        hidden = encoder(masked.embeddings, token_ids).hidden
        logits = mlm_head(hidden[masked.selected])  # (S, vocab), targets[selected]
    """

    def __init__(
        self,
        width: int,
        vocab_size: int,
        probability: float = 0.15,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
        excluded_ids: Sequence[int] = (),
    ) -> None:
        super().__init__()
        checks.check_integer("width", width, 1)
        checks.check_integer("vocab_size", vocab_size, 1)
        checks.check_number("probability", probability, above=0, at_most=1)
        checks.check_number("mask_fraction", mask_fraction, at_least=0, at_most=1)
        checks.check_number("random_fraction", random_fraction, at_least=0, at_most=1)
        if mask_fraction + random_fraction > 1:
            raise ValueError(
                "mask_fraction + random_fraction must be <= 1, got "
                f"{mask_fraction} + {random_fraction}"
            )
        excluded = sorted(set(excluded_ids))
        if any(not checks.is_integer(i) or not 0 <= i < vocab_size for i in excluded):
            raise ValueError(
                f"excluded_ids must be token ids in [0, {vocab_size}), got {list(excluded_ids)}"
            )
        if len(excluded) == vocab_size and random_fraction > 0:
            raise ValueError("excluded_ids leave no token to draw as a random replacement")
        self.width = width
        self.vocab_size = vocab_size
        self.probability = probability
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction
        self.excluded_ids = tuple(excluded)
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[list(excluded)] = False
        self.drawable_ids: Tensor
        self.register_buffer("drawable_ids", allowed.nonzero().squeeze(1), persistent=False)
        self.mask_embedding = nn.Parameter(torch.empty(width))
        nn.init.normal_(self.mask_embedding, std=0.02)

    def forward(
        self,
        token_ids: Tensor,
        maskable: Tensor,
        token_embedding: nn.Module,
        generator: torch.Generator | None = None,
    ) -> MaskedTokens:
        """Mask a batch of sentences.

        Args:
            token_ids: ``(B, L)`` token ids.
            maskable: ``(B, L)`` bool, the positions that may be selected (the words, see
                :meth:`~reidkit.clip.CLIPTextEncoder.content_token_mask`).
            token_embedding: the tower's token lookup (``nn.Embedding`` of width ``width``),
                which embeds the sentence and the random replacements.
            generator: the random source (default: torch's global generator).

        Returns:
            :class:`MaskedTokens`.
        """
        if token_ids.dim() != 2 or token_ids.is_floating_point() or token_ids.dtype == torch.bool:
            raise ValueError(
                f"token_ids must be an integer tensor of shape (B, L), got "
                f"{checks.describe(token_ids)}"
            )
        if maskable.shape != token_ids.shape or maskable.dtype != torch.bool:
            raise ValueError(
                f"maskable must be a bool tensor of shape {tuple(token_ids.shape)}, got "
                f"{checks.describe(maskable)}"
            )
        device = token_ids.device
        draws = torch.rand((2, *token_ids.shape), generator=generator, device=device)
        selected = maskable & (draws[0] < self.probability)
        masked = selected & (draws[1] < self.mask_fraction)
        randomised = (
            selected
            & (draws[1] >= self.mask_fraction)
            & (draws[1] < self.mask_fraction + self.random_fraction)
        )
        picks = torch.randint(
            len(self.drawable_ids), token_ids.shape, generator=generator, device=device
        )
        inputs = torch.where(randomised, self.drawable_ids[picks], token_ids)
        embeddings = token_embedding(inputs)
        if embeddings.shape[-1] != self.width:
            raise ValueError(
                f"token_embedding must give embeddings of width {self.width}, got "
                f"{embeddings.shape[-1]}"
            )
        mask = self.mask_embedding.to(embeddings.dtype).expand_as(embeddings)
        embeddings = torch.where(masked.unsqueeze(-1), mask, embeddings)
        targets = token_ids.masked_fill(~selected, IGNORE_INDEX)
        return MaskedTokens(embeddings, selected, targets)

    def extra_repr(self) -> str:
        return (
            f"width={self.width}, vocab_size={self.vocab_size}, probability={self.probability}, "
            f"mask_fraction={self.mask_fraction}, random_fraction={self.random_fraction}, "
            f"excluded_ids={self.excluded_ids}"
        )
