"""Class-token attention over the patch grid: the agent-free patch ranking of MMPL's ablation.

Without the information selector agent, MMPL (table 4) selects patches by attention weights:
the ``M`` patches that the class token attends to most in the last block of the image
encoder. :func:`class_token_attention` recomputes that block's attention from its input (the
output of the block before, ``CLIPImageEncoder(return_layers=(-2,))``), averaged over heads, as
a ``(B, h, w, 1)`` map that :meth:`HierarchicalPatchPartition.pool` turns into per-patch
scores; :func:`top_indices` then keeps the ``M`` best.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def class_token_attention(block: nn.Module, tokens: Tensor, map_size: tuple[int, int]) -> Tensor:
    """Head-averaged attention of the class token to each patch token in ``block``.

    Args:
        block: an open_clip ``ResidualAttentionBlock`` (with ``ln_1`` and an
            ``nn.MultiheadAttention`` ``attn``), usually ``visual.transformer.resblocks[-1]``.
        tokens: ``(B, 1 + h * w + K, width)`` input of ``block``, batch first, class token
            first and any ``K`` prompt tokens last.
        map_size: ``(h, w)`` of the patch grid.

    Returns:
        ``(B, h, w, 1)`` attention weights (each image's weights over all tokens sum to 1).
    """
    height, width = map_size
    if tokens.dim() != 3 or tokens.shape[1] < 1 + height * width:
        raise ValueError(
            f"tokens must have shape (B, >= {1 + height * width}, width), got {tuple(tokens.shape)}"
        )
    attention: nn.MultiheadAttention = block.attn
    normed = block.ln_1(tokens)
    if not attention.batch_first:
        normed = normed.transpose(0, 1)
    query = normed[:1] if not attention.batch_first else normed[:, :1]
    _, weights = attention(query, normed, normed, need_weights=True, average_attn_weights=True)
    patch_weights = weights[:, 0, 1 : 1 + height * width]
    return patch_weights.reshape(tokens.shape[0], height, width, 1)


def top_indices(scores: Tensor, count: int) -> Tensor:
    """The ``count`` best patches ``(B, count)`` by ``scores`` ``(B, M_c)``, in ascending order."""
    if scores.dim() != 2 or not 1 <= count <= scores.shape[1]:
        raise ValueError(
            f"scores must be (B, M_c) with M_c >= count={count}, got {tuple(scores.shape)}"
        )
    return torch.topk(scores, count, dim=-1).indices.sort(dim=-1).values
