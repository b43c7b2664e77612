"""Supervised image-text contrastive loss of CLIP-ReID's first stage (eq. 2-3).

For an anchor ``a_i`` (an image feature for i2t, a text feature for t2i) with label ``y_i``
and targets ``t_1..t_M`` of the other modality with labels ``z_1..z_M``:

.. math::

    \\ell_i = -\\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
        \\log \\frac{\\exp(s(a_i, t_p))}{\\sum_{m=1}^{M} \\exp(s(a_i, t_m))},
    \\qquad P(i) = \\{p : z_p = y_i\\}

and the loss is the mean of ``ℓ_i`` over the anchors with at least one positive. With
image anchors and text targets this is ``L_i2t`` (eq. 3); with text anchors and image targets,
``L_t2i`` (eq. 2). Stage 1 minimises ``L_i2t + L_t2i`` (eq. 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit import checks
from reidkit.distances import similarity_logits
from reidkit.distributed import all_gather, all_gather_with_grad, raise_on_every_rank
from reidkit.losses.base import ReductionLoss, at_least_float32


class SupConLoss(ReductionLoss):
    """Contrastive loss of anchors against the targets of the other modality, positives by label.

    Two forms of the similarity ``s``:

    * ``normalize=False, temperature=1`` (default): the dot product of unnormalised
      features, as CLIP-ReID's reference code computes it;
    * ``normalize=True``: the cosine similarity of the paper, times ``logit_scale`` (passed to
      :meth:`forward`, e.g. CLIP's ``logit_scale.exp()``) or divided by ``temperature``.

    Under ``torch.distributed`` (and ``gather_distributed=True``) the targets and their labels
    of every rank are gathered, the targets with gradients
    (:func:`reidkit.distributed.all_gather_with_grad`), so that each rank's anchors are
    contrasted with the global batch; with equal batch sizes on every rank, the mean of the
    ranks' losses equals the loss of one process on the concatenated batch. The arguments are
    checked on every rank before the gathers: bad input on one rank raises the same error on
    all of them (:func:`reidkit.distributed.raise_on_every_rank`) instead of leaving the others
    waiting.

    Args:
        normalize: L2-normalise anchors and targets.
        temperature: divides the similarities when no ``logit_scale`` is given (> 0).
        gather_distributed: gather the targets of every rank when distributed.
        reduction: ``"mean"`` (over anchors with a positive), ``"sum"`` or ``"none"``.

    Example::

        supcon = SupConLoss()
        loss = supcon(image_feats, text_feats, pids) + supcon(text_feats, image_feats, pids)
    """

    def __init__(
        self,
        normalize: bool = False,
        temperature: float = 1.0,
        gather_distributed: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        checks.check_number("temperature", temperature, above=0)
        self.normalize = normalize
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(
        self,
        anchors: Tensor,
        targets: Tensor,
        anchor_labels: Tensor,
        target_labels: Tensor | None = None,
        logit_scale: Tensor | float | None = None,
    ) -> Tensor:
        """Loss of ``anchors`` against ``targets``.

        Args:
            anchors: ``(N, D)`` features of one modality.
            targets: ``(M, D)`` features of the other modality (this rank's part when
                distributed).
            anchor_labels: ``(N,)`` identities of the anchors.
            target_labels: ``(M,)`` identities of the targets; ``None``: ``anchor_labels``
                (paired batches, ``M = N``).
            logit_scale: scalar multiplying the similarities instead of ``1 / temperature``:
                a finite number > 0 or a one-element tensor.

        Returns:
            The reduced loss (``(N,)`` with ``reduction="none"``, 0 for anchors without a
            positive among the targets).
        """
        if target_labels is None:
            target_labels = anchor_labels
        # A check failing on one rank only must fail on all before the gathers, not hang them.
        with raise_on_every_rank(enabled=self.gather_distributed):
            checks.check_float_matrix("anchors", anchors)
            checks.check_float_matrix("targets", targets)
            checks.check_same_width("targets", targets, "anchors", anchors)
            checks.check_labels("anchor_labels", anchor_labels, anchors.shape[0])
            checks.check_labels("target_labels", target_labels, targets.shape[0])
            checks.check_scale("logit_scale", logit_scale)
        if self.gather_distributed:
            targets = all_gather_with_grad(targets)
            target_labels = all_gather(target_labels)
        logits = similarity_logits(
            anchors,
            targets,
            normalize=self.normalize,
            temperature=self.temperature,
            logit_scale=logit_scale,
        )
        log_prob = torch.log_softmax(at_least_float32(logits), dim=1)
        positives = anchor_labels.unsqueeze(1) == target_labels.to(anchor_labels.device).unsqueeze(
            0
        )
        counts = positives.sum(dim=1)
        mean_log_prob = (log_prob * positives).sum(dim=1) / counts.clamp_min(1)
        return self.reduce(-mean_log_prob, counts > 0)

    def extra_repr(self) -> str:
        return (
            f"normalize={self.normalize}, temperature={self.temperature}, "
            f"gather_distributed={self.gather_distributed}, {super().extra_repr()}"
        )
