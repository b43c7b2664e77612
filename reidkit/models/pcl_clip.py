"""PCL-CLIP's image model (Li and Gong, 2023): CLIP's image encoder with two BNNecks.

The class token ``v`` after ``ln_post`` and its projection ``V = v W`` each go through a
BNNeck; the feature of an image is ``f = [BN(v), BN(V)]`` (sec. 5.2). The prototypical
contrastive loss and the centroid memory use ``f`` in training; retrieval ranks the gallery by
the cosine distance of ``f``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit.clip import CLIPImageEncoder
from reidkit.heads import BNNeck


class PCLCLIPOutput(NamedTuple):
    """What :class:`PCLCLIPModel` returns in training mode.

    Attributes:
        features: ``(B, width + embed_dim)`` the necks' normalised features ``[BN(v), BN(V)]``.
        logits: ID logits ``(B, num_classes)`` of the class-token neck and of the projected
            neck.
    """

    features: Tensor
    logits: tuple[Tensor, Tensor]


class PCLCLIPModel(nn.Module):
    """CLIP's image encoder with a BNNeck on the class token and one on its projection.

    In training mode ``forward(images)`` returns a :class:`PCLCLIPOutput`; in eval mode the
    feature ``f`` alone, ``(B, width + embed_dim)`` (normalise it for retrieval).

    Args:
        clip_model: an open_clip CLIP model with a class-token ViT (see
            :func:`reidkit.load_clip`); its visual tower is shared, not copied.
        num_classes: training identities, the size of both classifiers (1 when the
            classifiers stay unused, as in unsupervised training).

    Shapes:
        images ``(B, 3, H, W)`` at the tower's image size.
    """

    def __init__(self, clip_model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.image_encoder = CLIPImageEncoder(clip_model)
        self.neck = BNNeck(self.image_encoder.visual.transformer.width, num_classes)
        self.neck_projected = BNNeck(self.image_encoder.visual.output_dim, num_classes)

    @property
    def feature_dim(self) -> int:
        """Width of ``f``: the tower's width plus the projection's."""
        return self.neck.bn.num_features + self.neck_projected.bn.num_features

    def forward(self, images: Tensor) -> PCLCLIPOutput | Tensor:
        encoded = self.image_encoder(images)
        cls, projected = self.neck(encoded.cls), self.neck_projected(encoded.embedding)
        features = torch.cat([cls.features, projected.features], dim=1)
        if not self.training:
            return features
        return PCLCLIPOutput(features, (cls.logits, projected.logits))
