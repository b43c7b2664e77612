"""Every identity's prompt through the text encoder: the classifier of prompt-based ReID.

The softmax over identities of CLIP-ReID's eq. 5 and of MMPL's eq. 18 needs the text features
of every identity's prompt at each step. :func:`encode_class_prompts` encodes them in one pass
through :class:`~reidkit.clip.CLIPTextEncoder` (:meth:`~reidkit.clip.CLIPTextEncoder.encode_trimmed`
drops the padding a causal encoder never reads), whose ``chunk_size`` bounds the batch of
prompts per forward and whose ``checkpoint_activations`` keeps one tensor per block and chunk
for the backward pass. Neither changes the features.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

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


def encode_class_prompts(learner: nn.Module, text_encoder: CLIPTextEncoder) -> ClassPromptFeatures:
    """Encode the prompts of all identities of one prompt learner in one (chunked) pass.

    Args:
        learner: a :class:`~reidkit.prompts.PromptLearner` (e.g. one level of
            :class:`~reidkit.prompts.MultiGranularityPromptLearner`), called with no labels.
        text_encoder: a :class:`~reidkit.clip.CLIPTextEncoder`; set its ``chunk_size`` and
            ``checkpoint_activations`` to bound memory.

    Returns:
        :class:`ClassPromptFeatures` for the ``L`` identities, differentiable with respect to
        the learner's context vectors.
    """
    prompts: PromptBatch = learner()
    encoded = text_encoder.encode_trimmed(prompts.embeddings, prompts.token_ids)
    return ClassPromptFeatures(encoded.sentence, encoded.tokens[:, prompts.context_positions])
