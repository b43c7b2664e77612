"""PCL-CLIP's image model (Li and Gong, 2023): CLIP's image encoder with BNNecks.

The class token ``v`` after ``ln_post`` and its projection ``V = v W`` go through batch
normalisation; the feature of an image is ``f = [BN(v), BN(V)]`` (sec. 5.2), of width
``width + embed_dim`` (1280 for ViT-B/16). The prototypical contrastive loss and the centroid
memory use ``f`` in training; retrieval ranks the gallery by the cosine distance of ``f``.

The ID classifier comes in two forms (``id_classifier``):

- ``"concatenated"`` (the released code): one BNNeck on ``[v, V]`` whose bias-free classifier
  reads the whole ``f``, one ID loss. Batch normalisation acts per channel, so its feature is
  exactly ``[BN(v), BN(V)]``.
- ``"per_neck"`` (CLIP-ReID's heads): one BNNeck and classifier on ``v`` and one on ``V``, two
  ID losses, which summed double the ID loss's weight against the single classifier.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip import CLIPImageEncoder
from reidkit.heads import BNNeck

ID_CLASSIFIERS = ("concatenated", "per_neck")
"""The forms of :class:`PCLCLIPModel`'s ID classifier."""


class PCLCLIPOutput(NamedTuple):
    """What :class:`PCLCLIPModel` returns in training mode.

    Attributes:
        features: ``(B, width + embed_dim)`` the normalised features ``f = [BN(v), BN(V)]``.
        embeddings: ``(B, width + embed_dim)`` the features before the necks, ``[v, V]`` (the
            triplet loss's).
        logits: ID logits ``(B, num_classes)``: one tensor for the concatenated classifier,
            two (the class-token neck's, then the projected neck's) for ``"per_neck"``.
    """

    features: Tensor
    embeddings: Tensor
    logits: tuple[Tensor, ...]


class PCLCLIPModel(nn.Module):
    """CLIP's image encoder with BNNecks on the class token and on its projection.

    In training mode ``forward(images)`` returns a :class:`PCLCLIPOutput`; in eval mode the
    feature ``f`` alone, ``(B, width + embed_dim)`` (normalise it for retrieval).

    Args:
        clip_model: an open_clip CLIP model with a class-token ViT (see
            :func:`reidkit.load_clip`); its visual tower is shared, not copied.
        num_classes: training identities, the size of the classifiers (1 when they stay
            unused, as in unsupervised training).
        id_classifier: ``"concatenated"`` (one classifier on ``f``, as released) or
            ``"per_neck"`` (one per neck, CLIP-ReID's).

    Attributes:
        neck: the BNNeck on ``[v, V]`` (``"concatenated"``) or on ``v`` (``"per_neck"``).
        neck_projected: the BNNeck on ``V`` (``"per_neck"``); ``None`` otherwise.

    Shapes:
        images ``(B, 3, H, W)`` at the tower's image size.
    """

    def __init__(
        self, clip_model: nn.Module, num_classes: int, id_classifier: str = "concatenated"
    ) -> None:
        super().__init__()
        checks.check_choice("id_classifier", id_classifier, ID_CLASSIFIERS)
        self.image_encoder = CLIPImageEncoder(clip_model)
        self.id_classifier = id_classifier
        visual: Any = clip_model.visual  # an open_clip tower
        width: int = visual.transformer.width
        embed_dim: int = visual.output_dim
        self.neck_projected: BNNeck | None = None
        if id_classifier == "concatenated":
            self.neck = BNNeck(width + embed_dim, num_classes)
        else:
            self.neck = BNNeck(width, num_classes)
            self.neck_projected = BNNeck(embed_dim, num_classes)

    @property
    def feature_dim(self) -> int:
        """Width of ``f``: the tower's width plus the projection's."""
        widths = [
            neck.bn.num_features for neck in (self.neck, self.neck_projected) if neck is not None
        ]
        return sum(widths)

    def forward(self, images: Tensor) -> PCLCLIPOutput | Tensor:
        encoded = self.image_encoder(images)
        embeddings = torch.cat([encoded.cls, encoded.embedding], dim=1)  # [v, V]
        if self.neck_projected is None:
            outputs = [self.neck(embeddings)]
        else:
            outputs = [self.neck(encoded.cls), self.neck_projected(encoded.embedding)]
        features = torch.cat([output.features for output in outputs], dim=1)
        if not self.training:
            return features
        return PCLCLIPOutput(features, embeddings, tuple(output.logits for output in outputs))
