"""CLIP-ReID's image model (Li et al., AAAI 2023), with MMPL's visual prompts as an option.

The image encoder of an open_clip CLIP model, a BNNeck on the class token and one on its
projection, the three triplet features of the CLIP-ReID code base and, with
``num_visual_prompts > 0``, MMPL's collaborative visual prompts (eq. 21) appended to the image
tokens at training and at test time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.clip import CLIPImageEncoder
from reidkit.heads import BNNeck
from reidkit.prompts import VisualPromptGenerator


class CLIPReIDOutput(NamedTuple):
    """What :class:`CLIPReIDModel` returns in training mode.

    Attributes:
        logits: ID logits ``(B, num_classes)`` of the class-token neck and of the projected
            neck.
        triplet_features: the class token after the second-to-last block ``(B, width)``, after
            ``ln_post`` ``(B, width)`` and its projection ``(B, embed_dim)``.
        embedding: ``(B, embed_dim)`` projected feature, for the image-to-text losses.
        prompts: ``(B, K, width)`` visual prompts ``P_v`` (MMPL eq. 21), or ``None``.
    """

    logits: tuple[Tensor, Tensor]
    triplet_features: tuple[Tensor, Tensor, Tensor]
    embedding: Tensor
    prompts: Tensor | None


class CLIPReIDModel(nn.Module):
    """CLIP's image encoder with two BNNecks (CLIP-ReID) and optional visual prompts (MMPL).

    In training mode ``forward(images)`` returns a :class:`CLIPReIDOutput`; in eval mode it
    returns the retrieval feature: the L2-normalised concatenation of the class token and its
    projection, ``(B, width + embed_dim)``, before the necks.

    Args:
        clip_model: an open_clip CLIP model with a class-token ViT (see
            :func:`reidkit.load_clip`); its visual tower is shared, not copied.
        num_classes: training identities, the size of both classifiers.
        num_visual_prompts: ``K`` visual prompt tokens from a
            :class:`~reidkit.prompts.VisualPromptGenerator` (0: none, plain CLIP-ReID).
        prompt_conv_stride: stride of the generator's 3x3 convolution.

    Shapes:
        images ``(B, 3, H, W)`` at the tower's image size.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        num_classes: int,
        num_visual_prompts: int = 0,
        prompt_conv_stride: int = 1,
    ) -> None:
        super().__init__()
        if num_visual_prompts < 0:
            raise ValueError(f"num_visual_prompts must be >= 0, got {num_visual_prompts}")
        self.image_encoder = CLIPImageEncoder(clip_model, return_layers=(-2,))
        visual: Any = clip_model.visual  # open_clip's VisionTransformer
        width: int = visual.transformer.width
        self.neck = BNNeck(width, num_classes)
        self.neck_projected = BNNeck(visual.output_dim, num_classes)
        self.prompt_generator = (
            VisualPromptGenerator(num_visual_prompts, width, stride=prompt_conv_stride)
            if num_visual_prompts
            else None
        )

    def forward(self, images: Tensor) -> CLIPReIDOutput | Tensor:
        prompts = None if self.prompt_generator is None else self.prompt_generator(images)
        features = self.image_encoder(images, prompts)
        if not self.training:
            return F.normalize(torch.cat([features.cls, features.embedding], dim=1), dim=1)
        return CLIPReIDOutput(
            logits=(
                self.neck(features.cls).logits,
                self.neck_projected(features.embedding).logits,
            ),
            triplet_features=(features.layers[0][:, 0], features.cls, features.embedding),
            embedding=features.embedding,
            prompts=prompts,
        )
