"""Freezing the patch projection of a ViT, the divergence fix of unsupervised PCL-CLIP (sec. 4.2).

Fine-tuning CLIP's ViT with pseudo labels diverges; as in MoCo v3 (Chen et al., 2021), keeping
the patch projection layer (``conv1`` of the vision tower, which maps each image patch to a
token) at its pre-trained weights stabilises training.
"""

from __future__ import annotations

from typing import cast

from torch import nn


def freeze_patch_projection(model: nn.Module) -> list[nn.Parameter]:
    """Stop training the patch projection of every ViT vision tower inside ``model``.

    A vision tower is recognised as a module with a ``conv1`` convolution and a
    ``class_embedding`` (open_clip's ``VisionTransformer``, reached through a CLIP model, a
    :class:`~reidkit.clip.CLIPImageEncoder` or any model holding one). Call it before building
    the optimiser and before wrapping the model in ``DistributedDataParallel``.

    Args:
        model: a module that contains at least one ViT vision tower.

    Returns:
        The parameters that were frozen (``requires_grad`` now ``False``).
    """
    towers = [
        module
        for module in model.modules()
        if isinstance(getattr(module, "conv1", None), nn.Conv2d)
        and hasattr(module, "class_embedding")
    ]
    if not towers:
        raise ValueError(
            "model must contain a ViT vision tower (a module with a conv1 patch projection and a "
            f"class_embedding), got {type(model).__name__}"
        )
    frozen = [
        parameter for tower in towers for parameter in cast(nn.Conv2d, tower.conv1).parameters()
    ]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen
