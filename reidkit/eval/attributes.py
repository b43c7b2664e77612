"""Pedestrian attribute recognition metrics: mA, accuracy, precision, recall and F1.

The metrics of PETA, RAP and PA-100K (Li et al., 2016; VAL-PAT table 4 and 9) for ``N``
samples and ``M`` binary attributes, with predictions ``ŷ = [score > threshold]``:

* label-based **mA**: the mean over attributes of ``(TPR_j + TNR_j) / 2``, the balanced
  accuracy of each attribute;
* instance-based **accuracy** ``|ŷ_i ∩ y_i| / |ŷ_i ∪ y_i|``, **precision**
  ``|ŷ_i ∩ y_i| / |ŷ_i|`` and **recall** ``|ŷ_i ∩ y_i| / |y_i|``, averaged over samples, and
  **F1** ``2 P R / (P + R)`` of the averaged precision ``P`` and recall ``R``.

A ratio with an empty denominator counts as 0 (the reference code adds a tiny epsilon to every
denominator): a sample with no attribute predicted has precision 0. An attribute that every
sample has (or none has) has no true-negative (true-positive) rate; mA averages over the
attributes that have both rates, and :attr:`AttributeResult.num_attributes` says how many.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from reidkit import checks
from reidkit.checks import ArrayLike


@dataclass(frozen=True)
class AttributeResult:
    """What :func:`evaluate_attributes` returns (fractions in ``[0, 1]``).

    Attributes:
        mA: label-based mean accuracy.
        accuracy: instance-based accuracy.
        precision: instance-based precision.
        recall: instance-based recall.
        f1: ``2 P R / (P + R)``.
        label_accuracy: ``(M,)`` ``(TPR_j + TNR_j) / 2`` per attribute (NaN where undefined).
        num_attributes: attributes counted in mA.
    """

    mA: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    label_accuracy: np.ndarray
    num_attributes: int

    def as_dict(self) -> dict[str, float]:
        """The five metrics by name (``mA``, ``accuracy``, ``precision``, ``recall``, ``F1``)."""
        return {
            "mA": self.mA,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "F1": self.f1,
        }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    ratio: np.ndarray = np.divide(
        numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0
    )
    return ratio


def evaluate_attributes(
    scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5
) -> AttributeResult:
    """Attribute recognition metrics of ``scores`` against 0/1 ``labels``.

    Args:
        scores: ``(N, M)`` probabilities (or any scores), numpy or torch.
        labels: ``(N, M)`` 0/1 ground truth.
        threshold: an attribute is predicted where its score exceeds this (0.5 for
            probabilities, 0 for logits).

    Raises:
        ValueError: shapes that differ, labels other than 0 and 1, or non-finite scores.
    """
    scores_array = checks.as_matrix("scores", scores).double().cpu().numpy()
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu()
    labels_array = np.asarray(labels, dtype=np.float64)
    if labels_array.shape != scores_array.shape:
        raise ValueError(
            f"labels must have the scores' shape {scores_array.shape}, got {labels_array.shape}"
        )
    if not np.isin(labels_array, (0.0, 1.0)).all():
        raise ValueError("labels must hold 0 and 1 only")
    if not np.isfinite(scores_array).all():
        raise ValueError("scores must be finite; found NaN or inf")
    truth = labels_array > 0.5
    predicted = scores_array > threshold
    positives, negatives = truth.sum(0), (~truth).sum(0)
    true_positive_rate = _ratio((predicted & truth).sum(0), positives)
    true_negative_rate = _ratio((~predicted & ~truth).sum(0), negatives)
    defined = (positives > 0) & (negatives > 0)
    label_accuracy = np.where(defined, (true_positive_rate + true_negative_rate) / 2, np.nan)
    intersection = (predicted & truth).sum(1)
    union = (predicted | truth).sum(1)
    accuracy = float(_ratio(intersection, union).mean())
    precision = float(_ratio(intersection, predicted.sum(1)).mean())
    recall = float(_ratio(intersection, truth.sum(1)).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return AttributeResult(
        mA=float(label_accuracy[defined].mean()) if defined.any() else float("nan"),
        accuracy=accuracy,
        precision=precision,
        recall=recall,
        f1=f1,
        label_accuracy=label_accuracy,
        num_attributes=int(defined.sum()),
    )
