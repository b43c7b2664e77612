"""Selection by score without the agent: the ``M`` best patches (MMPL's ablation, table 3).

Without the information selector agent, MMPL selects the ``M`` patches that the class token
attends to most in the last block of the image encoder
(:meth:`reidkit.clip.CLIPImageEncoder.class_token_attention`, pooled per patch by
:meth:`~reidkit.selection.HierarchicalPatchPartition.pool`); :func:`top_indices` keeps the
``M`` best. The agent hands on its ``M`` most probable patches the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reidkit._deprecation import moved_names


def top_indices(scores: Tensor, count: int) -> Tensor:
    """The ``count`` best patches ``(B, count)`` by ``scores`` ``(B, M_c)``, in ascending order."""
    if scores.dim() != 2 or not 1 <= count <= scores.shape[1]:
        raise ValueError(
            f"scores must be (B, M_c) with M_c >= count={count}, got {tuple(scores.shape)}"
        )
    return torch.topk(scores, count, dim=-1).indices.sort(dim=-1).values


__getattr__ = moved_names(__name__, {"class_token_attention": "reidkit.clip.class_token_attention"})
