"""Running the residual blocks of an open_clip transformer, block by block.

Both encoders run CLIP's blocks themselves (instead of calling the transformer's ``forward``) so
that they can return intermediate layers and checkpoint activations on request. The caller
always works batch-first; sequence-first transformers get their tokens transposed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from reidkit import checks


def check_layer_indices(transformer: nn.Module, return_layers: Sequence[int]) -> tuple[int, ...]:
    """Validate block indices (negative ones count from the end) and make them non-negative.

    Args:
        transformer: an open_clip ``Transformer`` (with ``resblocks``).
        return_layers: indices into ``transformer.resblocks``.

    Returns:
        The indices in ``[0, depth)``, in the given order.
    """
    blocks = cast(nn.ModuleList, transformer.resblocks)
    depth = len(blocks)
    indices = []
    for index in return_layers:
        if not checks.is_integer(index) or not -depth <= index < depth:
            raise ValueError(
                f"return_layers must hold block indices in [-{depth}, {depth}), got {index!r}"
            )
        indices.append(index % depth)
    return tuple(indices)


def run_transformer(
    transformer: nn.Module,
    tokens: Tensor,
    attn_mask: Tensor | None = None,
    return_layers: Sequence[int] = (),
    checkpoint_activations: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Apply every residual block of ``transformer`` to ``tokens``.

    Args:
        transformer: an open_clip ``Transformer``; ``transformer.batch_first`` tells its layout.
        tokens: ``(B, N, width)``, batch first.
        attn_mask: additive ``(N, N)`` mask, or ``None``.
        return_layers: non-negative block indices whose outputs to return.
        checkpoint_activations: recompute each block in the backward pass instead of storing its
            activations (only while gradients are enabled).

    Returns:
        The last block's output ``(B, N, width)`` and the outputs of ``return_layers`` in the
        given order, each ``(B, N, width)``.
    """
    sequence_first = not getattr(transformer, "batch_first", False)
    x = tokens.transpose(0, 1).contiguous() if sequence_first else tokens
    outputs: dict[int, Tensor] = {}
    blocks = cast(nn.ModuleList, transformer.resblocks)
    for index, block in enumerate(blocks):
        step = partial(block, attn_mask=attn_mask)
        if checkpoint_activations and torch.is_grad_enabled():
            x = checkpoint(step, x, use_reentrant=False)
        else:
            x = step(x)
        if index in return_layers:
            outputs[index] = x.transpose(0, 1) if sequence_first else x
    x = x.transpose(0, 1) if sequence_first else x
    return x, tuple(outputs[index] for index in return_layers)
