"""BNNeck (Luo et al., "Bag of Tricks", 2019): batch normalisation between feature and classifier.

The triplet loss acts on the feature ``f`` before the neck; the ID loss on the classifier's
logits of the normalised feature ``BN(f)``, which is also the usual retrieval feature at test
time. The BN has a scale and no shift (its bias is fixed at 0), and the classifier no bias.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from reidkit import checks


class BNNeckOutput(NamedTuple):
    """Output of :class:`BNNeck`.

    Attributes:
        features: ``(N, D)`` normalised features ``BN(f)``.
        logits: ``(N, C)`` identity logits ``W BN(f)``.
    """

    features: Tensor
    logits: Tensor


class BNNeck(nn.Module):
    """Bias-free batch normalisation followed by a bias-free linear classifier.

    Args:
        in_features: width ``D`` of the features.
        num_classes: number ``C`` of training identities.

    Attributes:
        bn: ``BatchNorm1d(D)`` whose bias is frozen at 0.
        classifier: ``Linear(D, C, bias=False)``, initialised from ``N(0, 0.001^2)``.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        checks.check_integer("in_features", in_features, 1)
        checks.check_integer("num_classes", num_classes, 1)
        self.bn = nn.BatchNorm1d(in_features)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_features, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: Tensor) -> BNNeckOutput:
        """Normalise ``features`` ``(N, D)`` and classify them."""
        if not isinstance(features, Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise ValueError(f"features must have shape (N, {self.bn.num_features}), got {shape}")
        if features.shape[1] != self.bn.num_features:
            raise ValueError(
                f"features must have shape (N, {self.bn.num_features}), got {tuple(features.shape)}"
            )
        normalised = self.bn(features)
        return BNNeckOutput(normalised, self.classifier(normalised))
