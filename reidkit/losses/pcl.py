"""Prototypical contrastive learning loss of PCL-CLIP (eq. 4).

Each feature ``f_i`` is classified against the centroids ``K[1..C]`` of all classes held in a
:class:`~reidkit.memory.PrototypeMemory`, with cosine similarity ``s`` over a temperature ``τ``:

.. math::

    L_{pcl}(i) = -\\log \\frac{\\exp(s(\\mathcal{K}[y_i], \\mathbf{f}_i) / \\tau)}
                              {\\sum_{j=1}^{C} \\exp(s(\\mathcal{K}[j], \\mathbf{f}_i) / \\tau)}.

The centroids enter as constants: gradients flow into the features only.
"""

from __future__ import annotations

from torch import Tensor

from reidkit import checks
from reidkit.distances import similarity_logits
from reidkit.losses.base import ReductionLoss
from reidkit.losses.label_smoothing import CrossEntropyLabelSmooth


class PCLLoss(ReductionLoss):
    """Cross-entropy of the features' cosine similarities to all class centroids (eq. 4).

    The centroids act as the classifier: the logits go through a plain
    :class:`~reidkit.losses.CrossEntropyLabelSmooth` (``ε = 0``, held as
    :attr:`cross_entropy`). Combine it with the ID loss for the best supervised results
    (PCL-CLIP Table 1), and call :meth:`~reidkit.memory.PrototypeMemory.update` with the same
    features after the loss::

        loss = pcl(features, labels, memory.centroids) + id_loss(logits, labels)
        memory.update(features, labels)

    Under ``torch.distributed`` every rank holds the same memory, so the loss of each rank's
    own batch, averaged over the ranks, is the loss of one process on the concatenated batch.

    Args:
        temperature: ``τ`` > 0 (0.05 in the reference code).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, temperature: float = 0.05, reduction: str = "mean") -> None:
        super().__init__(reduction)
        checks.check_number("temperature", temperature, above=0)
        self.temperature = float(temperature)
        self.cross_entropy = CrossEntropyLabelSmooth(0.0, reduction="none")

    def forward(self, features: Tensor, labels: Tensor, centroids: Tensor) -> Tensor:
        """Loss of ``features`` ``(N, d)`` against ``centroids`` ``(C, d)``.

        Args:
            features: ``(N, d)`` features (normalised here).
            labels: ``(N,)`` class indices in ``[0, C)``.
            centroids: ``(C, d)``, e.g. ``memory.centroids``; detached here.
        """
        checks.check_float_matrix("features", features)
        checks.check_float_matrix("centroids", centroids)
        checks.check_same_width("centroids", centroids, "features", features)
        logits = similarity_logits(
            features,
            centroids.detach().to(features.dtype),
            normalize=True,
            temperature=self.temperature,
        )
        return self.reduce(self.cross_entropy(logits, labels))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, {super().extra_repr()}"
