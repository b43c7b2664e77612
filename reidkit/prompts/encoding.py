"""Every identity's prompt through the text encoder: the classifier of prompt-based ReID.

The softmax over identities of CLIP-ReID's eq. 5 and of MMPL's eq. 18 needs the text features
of every identity's prompt at each step. :func:`encode_class_prompts` encodes them in one pass
through :class:`~reidkit.clip.CLIPTextEncoder` (:meth:`~reidkit.clip.CLIPTextEncoder.encode_trimmed`
drops the padding a causal encoder never reads), whose ``chunk_size`` bounds the batch of
prompts per forward and whose ``checkpoint_activations`` keeps one tensor per block and chunk
for the backward pass. Neither changes the features.

Encoding every identity with gradients costs a backward pass through the text encoder for all
``L`` prompts, although a batch's loss reaches the prompt of an identity outside the batch only
through the softmax's denominator. :class:`ClassPromptCache` trades exactness for speed in two
steps:

- ``refresh_every=1``: the prompts of the identities outside the batch are encoded without
  gradients, those of the batch's identities with them. The features, hence the loss, are
  those of :func:`encode_class_prompts`; the gradient of the batch's identities' context
  vectors is the exact one; the prompts of the other identities get no gradient (exactly: a
  nonzero one through the softmax of eq. 18), so they learn only in the steps in which they
  are in the batch.
- ``refresh_every=n``: the features of the identities outside the batch come from a cache
  encoded without gradients every ``n`` calls, so they lag the prompts by up to ``n - 1``
  optimiser steps; the batch's identities are encoded afresh, with gradients, at every call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip.text_encoder import CLIPTextEncoder
from reidkit.prompts.template import PromptBatch


class ClassPromptFeatures(NamedTuple):
    """Text features of every identity's prompt.

    Attributes:
        sentence: ``(L, E)`` prompt features ``T = T(P_t)`` (end-of-text token).
        tokens: ``(L, N, E)`` output features of the ``N`` learnable tokens.
    """

    sentence: Tensor
    tokens: Tensor


def encode_class_prompts(
    learner: nn.Module, text_encoder: CLIPTextEncoder, labels: Tensor | None = None
) -> ClassPromptFeatures:
    """Encode the prompts of all identities of one prompt learner in one (chunked) pass.

    Args:
        learner: a :class:`~reidkit.prompts.PromptLearner` (e.g. one level of
            :class:`~reidkit.prompts.MultiGranularityPromptLearner`), called with no labels.
        text_encoder: a :class:`~reidkit.clip.CLIPTextEncoder`; set its ``chunk_size`` and
            ``checkpoint_activations`` to bound memory.
        labels: ``(L',)`` the identities to encode; ``None``: all ``L`` of them.

    Returns:
        :class:`ClassPromptFeatures` for the ``L`` identities (or the ``L'`` of ``labels``, in
        their order), differentiable with respect to the learner's context vectors.
    """
    prompts: PromptBatch = learner(labels)
    encoded = text_encoder.encode_trimmed(prompts.embeddings, prompts.token_ids)
    return ClassPromptFeatures(encoded.sentence, encoded.tokens[:, prompts.context_positions])


class ClassPromptCache:
    """Every identity's prompt features, with gradients only for the given identities.

    One cache serves one prompt learner (one level of MMPL). See the module's notes for what
    equals :func:`encode_class_prompts` and what does not.

    Args:
        refresh_every: encode all identities (without gradients) at the first call and then
            every this many calls; 1: at every call (the forward values stay exact).

    Example:
        >>> cache = ClassPromptCache(refresh_every=10)
        >>> features = cache(level, text_encoder, pids.unique())   # (L, E), (L, N, E)
    """

    def __init__(self, refresh_every: int = 1) -> None:
        checks.check_integer("refresh_every", refresh_every, 1)
        self.refresh_every = refresh_every
        self.calls = 0
        self.features: ClassPromptFeatures | None = None

    def __call__(
        self, learner: nn.Module, text_encoder: CLIPTextEncoder, labels: Tensor
    ) -> ClassPromptFeatures:
        """All ``L`` identities' features: ``labels``' with gradients, the others from the
        cache.

        Args:
            learner: the prompt learner (called with labels, and with none to refresh).
            text_encoder: a :class:`~reidkit.clip.CLIPTextEncoder`.
            labels: ``(L',)`` distinct identities to encode with gradients (the batch's).

        Returns:
            :class:`ClassPromptFeatures` of all ``L`` identities.
        """
        if labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(
                f"labels must be a 1-d integer tensor, got {labels.dtype} "
                f"of shape {tuple(labels.shape)}"
            )
        if torch.unique(labels).numel() != labels.numel():
            raise ValueError("labels must be distinct identities (e.g. pids.unique())")
        if self.features is None or self.calls % self.refresh_every == 0:
            with torch.no_grad():
                self.features = encode_class_prompts(learner, text_encoder)
        self.calls += 1
        fresh = encode_class_prompts(learner, text_encoder, labels)
        return ClassPromptFeatures(
            self.features.sentence.index_copy(0, labels, fresh.sentence),
            self.features.tokens.index_copy(0, labels, fresh.tokens),
        )

    def clear(self) -> None:
        """Forget the cached features (the next call refreshes them)."""
        self.features, self.calls = None, 0

    def __repr__(self) -> str:
        return f"ClassPromptCache(refresh_every={self.refresh_every})"
