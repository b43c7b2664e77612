"""Where a vision transformer looks: attention rollout (Abnar and Zuidema, ACL 2020).

A token's output mixes, in every block, its own input (the residual connection) with the
tokens it attends to. Rollout follows that mixing through the blocks: with ``A_l`` the
head-averaged attention of block ``l`` ``(N, N)`` and ``w`` the weight of the residual path,

.. math::

    \\hat A_l = \\operatorname{rownorm}(w I + (1 - w) A_l), \\qquad
    R = \\hat A_L \\hat A_{L-1} \\cdots \\hat A_1,

and row 0 of ``R`` (the class token's) over the patch tokens is the class-activation map that
MMPL's fig. 9 draws for the baseline and for MMPL. The attention of a CLIP image encoder comes
from :meth:`reidkit.clip.CLIPImageEncoder.attention_weights` (visual prompt tokens included:
they take part in the mixing, and their rows and columns are simply not drawn).

Example::

    attentions = model.image_encoder.attention_weights(images, prompts)
    maps = class_token_rollout(attentions, model.image_encoder.visual.grid_size)  # (B, h, w)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RESIDUAL_WEIGHT = 0.5
"""``w``: the residual path weighs as much as the attention (Abnar and Zuidema)."""


def attention_rollout(
    attentions: Sequence[Tensor], residual_weight: float = RESIDUAL_WEIGHT
) -> Tensor:
    """The rollout ``R = A^_L ... A^_1`` of every block's attention.

    Args:
        attentions: one ``(B, N, N)`` head-averaged attention per block, first block first;
            row ``i`` is token ``i``'s attention over the tokens.
        residual_weight: ``w`` in ``[0, 1]``, the weight of the identity (residual path).

    Returns:
        ``(B, N, N)`` in float32 or wider: row ``i`` is how much of each input token reaches
        token ``i``'s output; every row sums to 1.

    Raises:
        ValueError: no attention, shapes that differ or are not ``(B, N, N)``, or a
            ``residual_weight`` outside ``[0, 1]``.
    """
    if not attentions:
        raise ValueError("attentions must hold at least one block's (B, N, N) attention")
    shape = attentions[0].shape
    for index, attention in enumerate(attentions):
        if attention.dim() != 3 or attention.shape[1] != attention.shape[2]:
            raise ValueError(
                f"attentions[{index}] must have shape (B, N, N), got {tuple(attention.shape)}"
            )
        if attention.shape != shape:
            raise ValueError(
                f"attentions must share one shape, got {tuple(shape)} and "
                f"{tuple(attention.shape)} (attentions[{index}])"
            )
    if not 0.0 <= residual_weight <= 1.0:
        raise ValueError(f"residual_weight must be in [0, 1], got {residual_weight}")
    dtype = torch.promote_types(attentions[0].dtype, torch.float32)
    identity = torch.eye(shape[1], dtype=dtype, device=attentions[0].device)
    rollout = identity.expand(shape).clone()
    for attention in attentions:
        mixed = residual_weight * identity + (1.0 - residual_weight) * attention.to(dtype)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


def class_token_rollout(
    attentions: Sequence[Tensor],
    map_size: Sequence[int],
    residual_weight: float = RESIDUAL_WEIGHT,
) -> Tensor:
    """The class token's row of :func:`attention_rollout` on the patch grid.

    Args:
        attentions: one ``(B, N, N)`` attention per block, tokens ordered ``[CLS, patches,
            extra]`` with ``h * w`` patches (any extra tokens, such as visual prompts, last).
        map_size: ``(h, w)`` of the patch grid.
        residual_weight: see :func:`attention_rollout`.

    Returns:
        ``(B, h, w)`` the share of each patch in the class token's output.

    Raises:
        ValueError: fewer than ``1 + h * w`` tokens (and as :func:`attention_rollout`).
    """
    height, width = (int(size) for size in map_size)
    rollout = attention_rollout(attentions, residual_weight)
    if rollout.shape[1] < 1 + height * width:
        raise ValueError(
            f"attentions cover {rollout.shape[1]} tokens, fewer than the class token and the "
            f"{height} x {width} patches of map_size"
        )
    return rollout[:, 0, 1 : 1 + height * width].reshape(-1, height, width)
