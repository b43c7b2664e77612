"""AAformer's ReID model (paper 001): the [PART]-token transformer with its training heads.

:class:`reidkit.AAformer` turns a ViT into the auto-aligned transformer (CLS and [PART]
tokens, OT patch assignment); :class:`reidkit.parts.AAformerLoss` holds one BNNeck and
classifier per output token and the losses of eq. 6-8. :class:`AAformerReID` puts them in one
module, so that the heads are trained (and wrapped by ``DistributedDataParallel``) with the
transformer.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from reidkit.clip import load_clip
from reidkit.data import CLIP_MEAN, CLIP_STD
from reidkit.downloads import is_local_file, timm_weights
from reidkit.parts import AAformer, AAformerLoss, PartFeatures
from reidkit.parts.objective import AAformerLossOutput

Statistics = tuple[float, float, float]
"""Per-channel pixel mean or std (RGB)."""

TINY_VIT: dict[str, Any] = {"patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 4}
"""The ViT of ``build_vit("tiny", ...)``: 4 blocks of width 96 on 16x16 patches."""


def build_vit(
    name: str, pretrained: str | None, image_size: tuple[int, int]
) -> tuple[nn.Module, Statistics, Statistics]:
    """The ViT that AAformer converts, and the pixel mean and std its weights expect.

    Args:
        name: ``"tiny"`` (a small random timm ViT, :data:`TINY_VIT`), ``"timm:<model name>"``
            or ``"open_clip:<model name>"`` (a CLIP image tower).
        pretrained: ``None`` (random weights), ``"default"`` (timm's default weights, or
            OpenAI's for open_clip), a timm or open_clip weight tag, or the path of a local
            checkpoint file.
        image_size: input ``(H, W)``.

    Raises:
        ValueError: an unknown kind of ``name``.
        FileNotFoundError: the weights are neither a file nor in the local cache, and their
            host cannot be reached (see :mod:`reidkit.downloads`).
    """
    kind, _, model_name = name.partition(":")
    if kind == "open_clip":
        tag = "openai" if pretrained == "default" else pretrained
        clip_model, _ = load_clip(model_name, tag, image_size=image_size)
        return cast(nn.Module, clip_model.visual), CLIP_MEAN, CLIP_STD
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if kind == "tiny" and not model_name:
        vit = VisionTransformer(img_size=image_size, num_classes=0, **TINY_VIT)
        return vit, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if kind != "timm" or not model_name:
        raise ValueError(f"name must be tiny, timm:<name> or open_clip:<name>, got {name!r}")
    untagged = pretrained in (None, "default") or is_local_file(pretrained)
    model = timm.create_model(
        model_name if untagged else f"{model_name}.{pretrained}",
        pretrained=pretrained is not None,
        img_size=image_size,
        num_classes=0,
        **timm_weights(model_name, pretrained),
    )
    config = cast(dict[str, Any], model.pretrained_cfg)  # timm's models all have one
    mean, std = tuple(config.get("mean", CLIP_MEAN)), tuple(config.get("std", CLIP_STD))
    return model, cast(Statistics, mean), cast(Statistics, std)


class AAformerReID(nn.Module):
    """AAformer with its training heads.

    ``forward(images, pids)`` returns the loss terms of eq. 6-8 (:class:`AAformerLossOutput`);
    ``forward(images)`` the retrieval feature ``(B, (1 + P) C)``, the CLS and [PART] tokens
    concatenated (sec. III-C), compared by Euclidean distance.

    Args:
        aaformer: the converted transformer.
        criterion: its heads and losses; ``criterion.necks`` must hold one neck per output
            token of ``aaformer``.

    Shapes:
        images ``(B, 3, H, W)`` at the backbone's image size; pids ``(B,)``.
    """

    def __init__(self, aaformer: AAformer, criterion: AAformerLoss) -> None:
        super().__init__()
        if len(criterion.necks) != 1 + aaformer.num_parts:
            raise ValueError(
                f"criterion must have one neck per output token (1 + {aaformer.num_parts}), "
                f"got {len(criterion.necks)}"
            )
        self.aaformer = aaformer
        self.criterion = criterion

    def forward(self, images: Tensor, pids: Tensor | None = None) -> Tensor | AAformerLossOutput:
        features: PartFeatures = self.aaformer(images)
        if pids is None:
            return features.concatenated()
        losses: AAformerLossOutput = self.criterion(features.tokens, pids)
        return losses
