"""One identity classifier shared by the image and the text embeddings (UniPT eq. 4).

"Following [SSAN], we use a shared classifier to get image and text probabilities": the same
weights ``W`` map an image embedding ``v`` and a text embedding ``t`` to identity logits,
``ŷ_v = softmax(W v + b)`` and ``ŷ_t = softmax(W t + b)``, so that the two modalities are
pulled towards the same class directions.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from reidkit import checks


class CrossModalLogits(NamedTuple):
    """Identity logits of both modalities: ``image`` ``(N, C)`` and ``text`` ``(M, C)``."""

    image: Tensor
    text: Tensor


class SharedIdentityClassifier(nn.Module):
    """A linear identity classifier applied to image and text embeddings alike.

    Args:
        in_features: the joint embedding dimension.
        num_classes: the number of training identities.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        checks.check_integer("in_features", in_features, 1)
        checks.check_integer("num_classes", num_classes, 1)
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, image_embeddings: Tensor, text_embeddings: Tensor) -> CrossModalLogits:
        """Logits of ``image_embeddings`` ``(N, D)`` and ``text_embeddings`` ``(M, D)``."""
        width = self.classifier.in_features
        inputs = {"image_embeddings": image_embeddings, "text_embeddings": text_embeddings}
        for name, value in inputs.items():
            checks.check_float_matrix(name, value)
            if value.shape[1] != width:
                raise ValueError(f"{name} must have shape (N, {width}), got {tuple(value.shape)}")
        return CrossModalLogits(self.classifier(image_embeddings), self.classifier(text_embeddings))
