"""Symmetric image-text contrastive loss, each pair's positive found by its index (UniPT eq. 1).

For a batch of ``N`` image-text pairs ``(v_n, t_n)`` with similarity
``s(a, b) = cos(a, b) / τ``:

.. math::

    L_{I2T} = \\frac1N \\sum_n -\\log
        \\frac{\\exp s(v_n, t_n)}{\\sum_i \\exp s(v_n, t_i)}, \\qquad
    L_{T2I} = \\frac1N \\sum_n -\\log
        \\frac{\\exp s(t_n, v_n)}{\\sum_i \\exp s(t_n, v_i)}, \\qquad
    L_{con} = (L_{I2T} + L_{T2I}) / 2.

UniPT prints eq. 1 with the plain cosine (``τ = 1``) and says it applies CLIP's symmetric loss,
whose ``τ`` is learned: both are :class:`ImageTextContrastiveLoss` (``temperature=1`` and
``temperature=0.07, learnable_temperature=True``).

Under ``torch.distributed`` the images and texts of every rank are gathered with gradients
and each rank's pairs are contrasted with the whole global batch. The positive of the ``n``-th
pair of rank ``r`` is the column ``offset_r + n`` of the gathered batch. (``SupConLoss`` with
``arange(N)`` labels would mark the ``n``-th pair of every rank as positive too: those labels
repeat on every rank.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit import checks
from reidkit.distances import similarity_logits
from reidkit.distributed import (
    all_gather,
    all_gather_with_grad,
    get_rank,
    is_distributed,
    raise_on_every_rank,
)
from reidkit.losses.base import ReductionLoss, at_least_float32
from reidkit.losses.temperature import Temperature


class ImageTextContrastiveLoss(ReductionLoss):
    """CLIP's symmetric InfoNCE over paired image and text features (UniPT eq. 1).

    Args:
        temperature: ``τ`` (UniPT eq. 1: 1, the plain cosine; CLIP: 0.07, learned).
        learnable_temperature: learn ``τ`` (:class:`~reidkit.losses.temperature.Temperature`,
            a parameter of this loss to give to the optimiser).
        normalize: L2-normalise the features (cosine similarity); ``False``: dot products.
        gather_distributed: under ``torch.distributed``, contrast with the pairs of every
            rank; with equal batch sizes the mean of the ranks' losses is the loss of one
            process on the concatenated batch. The arguments are checked on every rank before
            the gathers.
        reduction: ``"mean"`` over the pairs, ``"sum"``, or ``"none"``: the ``(N,)`` values
            ``(ℓ^{I2T}_n + ℓ^{T2I}_n) / 2``.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        normalize: bool = True,
        gather_distributed: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.temperature = Temperature(temperature, learnable_temperature)
        self.normalize = normalize
        self.gather_distributed = gather_distributed

    def forward(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """``L_con`` of ``N`` pairs: ``image_features`` and ``text_features``, both ``(N, D)``
        (this rank's pairs when distributed)."""
        distributed = self.gather_distributed and is_distributed()
        with raise_on_every_rank(enabled=self.gather_distributed):
            checks.check_float_matrix("image_features", image_features)
            checks.check_float_matrix("text_features", text_features)
            if text_features.shape != image_features.shape:
                raise ValueError(
                    "text_features must have the image_features' shape "
                    f"{tuple(image_features.shape)}, got {tuple(text_features.shape)}"
                )
        count = image_features.shape[0]
        offset = 0
        all_images, all_texts = image_features, text_features
        if distributed:
            counts = all_gather(torch.tensor([count], device=image_features.device))
            offset = int(counts[: get_rank()].sum())
            all_images = all_gather_with_grad(image_features)
            all_texts = all_gather_with_grad(text_features)
        scale = self.temperature.scale()
        positives = torch.arange(offset, offset + count, device=image_features.device)
        image_to_text = self._cross_entropy(image_features, all_texts, positives, scale)
        text_to_image = self._cross_entropy(text_features, all_images, positives, scale)
        return self.reduce((image_to_text + text_to_image) / 2)

    def _cross_entropy(
        self, anchors: Tensor, targets: Tensor, positives: Tensor, scale: Tensor | float
    ) -> Tensor:
        logits = similarity_logits(anchors, targets, normalize=self.normalize, logit_scale=scale)
        log_prob = torch.log_softmax(at_least_float32(logits), dim=1)
        return -log_prob.gather(1, positives.unsqueeze(1)).squeeze(1)

    def extra_repr(self) -> str:
        return (
            f"normalize={self.normalize}, gather_distributed={self.gather_distributed}, "
            f"{super().extra_repr()}"
        )
