"""VAL-PAT's pre-training objective (eq. 5).

.. math::

    L = L_I + β (L_{I2T} + L_{T2I}) + γ \\big((1 - α) L_A^H + α L_A^S\\big),
    \\qquad α = 0.2,\\ β = 0.5,\\ γ = 0.01,

* ``L_I`` (eq. 1): image self-supervised contrast of the query of one strongly augmented view
  with the momentum key of another and the queue of image keys, ``τ = 0.07``;
* ``L_{I2T}``, ``L_{T2I}`` (eq. 2): image-text contrast of each modality's query with the
  other modality's momentum key and queue, ``τ'`` learned from 0.07;
* ``L_A^H`` (eq. 3): weighted binary cross-entropy of the image's and the text's attribute
  predictions ``σ(W_q q + z_q)`` against the mined attribute labels;
* ``L_A^S`` (eq. 4): the same, each modality against the momentum classifier's probabilities
  ``σ(W_k k + z_k)`` for the other modality's key: the image learns the attributes predicted
  for its text, the text those predicted for its image.

Each loss is :class:`~reidkit.losses.QueueInfoNCELoss` or
:class:`~reidkit.losses.AttributeBCELoss`; see those for the printed equations' sign.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.losses.attributes import AttributeBCELoss
from reidkit.losses.base import ObjectiveOutput, at_least_float32
from reidkit.losses.queue_contrastive import QueueInfoNCELoss


class VALPATBatch(NamedTuple):
    """The features of one VAL-PAT step (``N`` image-text pairs, ``M`` attributes).

    Attributes:
        ssl_queries: ``(N, D_s)`` query-encoder features of the first strong view, ``q_I``.
        ssl_keys: ``(N, D_s)`` momentum-encoder features of the second strong view, ``k_I``.
        ssl_queue: ``(K, D_s)`` earlier ``k_I``.
        image_queries: ``(N, D)`` ``q^I_I`` of the weakly augmented image.
        text_queries: ``(N, D)`` ``q^T_T`` of its text.
        image_keys: ``(N, D)`` ``k^I_I`` (momentum image encoder).
        text_keys: ``(N, D)`` ``k^T_T`` (momentum text encoder).
        image_queue: ``(K, D)`` earlier image keys.
        text_queue: ``(K, D)`` earlier text keys.
        image_attribute_logits: ``(N, M)`` ``W_q q^I_I + z_q``.
        text_attribute_logits: ``(N, M)`` ``W_q q^T_T + z_q``.
        image_key_attribute_logits: ``(N, M)`` ``W_k k^I_I + z_k`` (momentum classifier).
        text_key_attribute_logits: ``(N, M)`` ``W_k k^T_T + z_k``.
        attribute_labels: ``(N, M)`` mined 0/1 labels ``y``.
    """

    ssl_queries: Tensor
    ssl_keys: Tensor
    ssl_queue: Tensor
    image_queries: Tensor
    text_queries: Tensor
    image_keys: Tensor
    text_keys: Tensor
    image_queue: Tensor
    text_queue: Tensor
    image_attribute_logits: Tensor
    text_attribute_logits: Tensor
    image_key_attribute_logits: Tensor
    text_key_attribute_logits: Tensor
    attribute_labels: Tensor


class VALPATLoss(nn.Module):
    """``L_I + β (L_I2T + L_T2I) + γ ((1 - α) L_A^H + α L_A^S)`` (VAL-PAT eq. 5).

    Args:
        soft_weight: ``α`` (0.2); 0 is table 8's "MAC w/o soft".
        cross_modal_weight: ``β`` (0.5).
        attribute_weight: ``γ`` (0.01).
        ssl_temperature: ``τ`` of eq. 1 (0.07, fixed).
        cross_modal_temperature: the start of ``τ'`` of eq. 2 (0.07, learned).
        positive_weights, negative_weights: the attribute imbalance weights of eq. 3-4
            (:func:`~reidkit.losses.attribute_imbalance_weights`), or ``None`` for ones.
    """

    def __init__(
        self,
        soft_weight: float = 0.2,
        cross_modal_weight: float = 0.5,
        attribute_weight: float = 0.01,
        ssl_temperature: float = 0.07,
        cross_modal_temperature: float = 0.07,
        positive_weights: Tensor | None = None,
        negative_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        checks.check_number("soft_weight", soft_weight, at_least=0, at_most=1)
        checks.check_number("cross_modal_weight", cross_modal_weight, at_least=0, finite=True)
        checks.check_number("attribute_weight", attribute_weight, at_least=0, finite=True)
        self.soft_weight = soft_weight
        self.cross_modal_weight = cross_modal_weight
        self.attribute_weight = attribute_weight
        self.ssl = QueueInfoNCELoss(ssl_temperature)
        self.cross_modal = QueueInfoNCELoss(cross_modal_temperature, learnable_temperature=True)
        self.attributes = AttributeBCELoss(positive_weights, negative_weights)

    def forward(self, batch: VALPATBatch) -> ObjectiveOutput:
        """The objective of a batch; terms ``ssl``, ``image_to_text``, ``text_to_image``,
        ``hard_attributes``, ``soft_attributes`` (unweighted) and ``temperature`` (``τ'``)."""
        ssl = self.ssl(batch.ssl_queries, batch.ssl_keys, batch.ssl_queue)
        image_to_text = self.cross_modal(batch.image_queries, batch.text_keys, batch.text_queue)
        text_to_image = self.cross_modal(batch.text_queries, batch.image_keys, batch.image_queue)
        labels = batch.attribute_labels
        image_logits, text_logits = batch.image_attribute_logits, batch.text_attribute_logits
        hard = self.attributes(image_logits, labels) + self.attributes(text_logits, labels)
        with torch.no_grad():
            from_image = torch.sigmoid(at_least_float32(batch.image_key_attribute_logits))
            from_text = torch.sigmoid(at_least_float32(batch.text_key_attribute_logits))
        soft = self.attributes(image_logits, from_text) + self.attributes(text_logits, from_image)
        attributes = (1 - self.soft_weight) * hard + self.soft_weight * soft
        loss = ssl + self.cross_modal_weight * (image_to_text + text_to_image)
        loss = loss + self.attribute_weight * attributes
        terms = {
            "ssl": ssl,
            "image_to_text": image_to_text,
            "text_to_image": text_to_image,
            "hard_attributes": hard,
            "soft_attributes": soft,
            "temperature": torch.tensor(self.cross_modal.temperature.value()),
        }
        return ObjectiveOutput(loss, terms)
