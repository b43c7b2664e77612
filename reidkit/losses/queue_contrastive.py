"""InfoNCE of queries against their key and a queue of negative keys (VAL-PAT eq. 1-2, MoCo).

For a query ``q_i``, its positive key ``k_i`` (from the momentum encoder) and the ``K`` keys
``k^-_1..k^-_K`` of a queue:

.. math::

    \\ell_i = -\\log \\frac{\\exp(q_i \\cdot k_i / τ)}
        {\\exp(q_i \\cdot k_i / τ) + \\sum_{j=1}^{K} \\exp(q_i \\cdot k^-_j / τ)}.

VAL-PAT eq. 1 (``L_I``) takes two augmented views of an image: the query of one and the key
of the other, with the queue of earlier image keys, at a fixed ``τ = 0.07``. Eq. 2 crosses
the modalities: ``L_{I2T}`` contrasts the image query with the paired text's key and the
queue of text keys, ``L_{T2I}`` the text query with the image key and the image queue, at a
learned ``τ'`` (initialised at 0.07). The features are L2-normalised, as in MoCo; the keys and
the queue carry no gradient (they come from the momentum encoder).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from reidkit import checks
from reidkit.losses.base import ReductionLoss, at_least_float32
from reidkit.losses.temperature import Temperature


class QueueInfoNCELoss(ReductionLoss):
    """MoCo's InfoNCE: the positive key against the queue of negatives.

    Args:
        temperature: ``τ`` (0.07 in VAL-PAT, for both ``τ`` and the start of ``τ'``).
        learnable_temperature: learn it (VAL-PAT eq. 2's ``τ'``).
        normalize: L2-normalise queries, keys and queue.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)``, one value per query).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.temperature = Temperature(temperature, learnable_temperature)
        self.normalize = normalize

    def forward(self, queries: Tensor, keys: Tensor, queue: Tensor) -> Tensor:
        """Loss of ``queries`` ``(N, D)`` with positives ``keys`` ``(N, D)`` and negatives
        ``queue`` ``(K, D)`` (``K`` may be 0, before the first keys are queued)."""
        checks.check_float_matrix("queries", queries)
        checks.check_float_matrix("keys", keys)
        checks.check_float_matrix("queue", queue)
        if keys.shape != queries.shape:
            raise ValueError(
                f"keys must have the queries' shape {tuple(queries.shape)}, got {tuple(keys.shape)}"
            )
        checks.check_same_width("queue", queue, "queries", queries)
        queries, keys, queue = (at_least_float32(x) for x in (queries, keys, queue))
        keys, queue = keys.detach(), queue.detach().to(queries.dtype)
        if self.normalize:
            queries, keys, queue = (F.normalize(x, dim=-1) for x in (queries, keys, queue))
        positive = (queries * keys).sum(dim=1, keepdim=True)
        logits = torch.cat([positive, queries @ queue.T], dim=1) * self.temperature.scale()
        return self.reduce(-torch.log_softmax(logits, dim=1)[:, 0])

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, {super().extra_repr()}"
