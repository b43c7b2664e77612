"""Multi-head Auto-Alignment: self-attention with [PART] tokens (AAformer eq. 1-5).

The layer reads a sequence ``[prefix (CLS, ...), PART_1 .. PART_P, patches]``. The prefix and
patch tokens use ordinary multi-head self-attention over the whole sequence (eq. 1). In every
head the [PART] queries are prototypes to which the patch keys are assigned (eq. 3-5, see
:mod:`reidkit.parts.assignment`), and [PART] ``p`` attends only to its own patches ``Phi_p``
(eq. 2):

    Alignment(Q^PT_p, K, V) = Softmax(Q^PT_p K_{Phi_p}^T / sqrt(d)) V_{Phi_p}.

With a fixed partition (``assignment="stripes"`` or ``"mgn"``, Table IV) the sets ``Phi_p``
are masks of the patch grid (:func:`~reidkit.parts.assignment.fixed_part_mask`), the same in
every head and image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit.distances import Distance
from reidkit.ot.options import SinkhornOptions, consumer_options
from reidkit.parts.assignment import (
    ASSIGNMENT_OPTIONS,
    FIXED_PARTITIONS,
    OLD_LAYER_KEYWORDS,
    PART_ASSIGNMENTS,
    AssignmentMethod,
    PartAssignment,
    Similarity,
    assign_patches,
    assignment_mask,
    check_assignment,
    check_part_groups,
    fixed_part_mask,
)


class PartTokenAttention(nn.Module):
    """Multi-head attention in which [PART] queries attend to their auto-aligned patches.

    A drop-in replacement for a ViT attention layer (timm's ``Attention``: a fused ``qkv``
    linear layer and an output ``proj``) on sequences laid out as
    ``[prefix, PART_1 .. PART_P, patches]``. With ``part_groups=()`` it computes exactly the
    ordinary self-attention of eq. 1.

    After each forward pass, :attr:`last_assignment` ``(B, heads, G, N)`` holds the global
    [PART] index given to every patch in each head and group (``None`` with a fixed
    partition), :attr:`last_part_mask` ``(B, heads, P, N)`` the sets ``Phi_p`` and
    :attr:`last_part_attention` ``(B, heads, P, N)`` the attention weights of eq. 2 (zero
    outside ``Phi_p``); all are detached.

    Args:
        dim: token width ``D``.
        num_heads: attention heads ``h``; each has width ``d = D / h`` and its own assignment.
        part_groups: sizes of the [PART] groups, e.g. ``(2, 3)`` for five [PART]s where the first
            two and the last three each partition all patches (Table VI).
        num_prefix_tokens: tokens before the [PART]s (the CLS token, and register tokens if any).
        qkv_bias: whether a newly created ``qkv`` layer has a bias.
        attn_drop: dropout on the attention weights, in training only.
        proj_drop: dropout after the output projection.
        assignment: ``"sinkhorn"`` (equal-partition optimal transport, eq. 3-5), ``"nearest"``
            (nearest [PART] prototype, the Table V ablation), or a fixed partition of the
            patch grid, ``"stripes"`` (PCB) or ``"mgn"`` (MGN), the rows "+PCB PT" and
            "+MGN PT" of Table IV (see :func:`~reidkit.parts.assignment.fixed_part_mask`).
        similarity: ``"cosine"``, ``"dot"`` or a :class:`~reidkit.distances.Distance`: the
            scores between [PART] queries and patch keys, see
            :func:`~reidkit.parts.assign_patches`.
        options: the Sinkhorn settings of the assignment, a
            :class:`~reidkit.ot.SinkhornOptions`; default
            :data:`~reidkit.parts.assignment.ASSIGNMENT_OPTIONS` (the paper's ``epsilon = 0.05``
            and 3 iterations, all run).
        qkv: an existing ``D -> 3D`` projection to use (e.g. a pretrained ViT's), its output
            laid out as ``(3, heads, d)``; a new one is created when ``None``.
        proj: an existing ``D -> D`` output projection to use; created when ``None``.
        grid_size: ``(h, w)`` patch grid, the patches numbered row by row; needed by the fixed
            partitions only.
        **deprecated: ``epsilon``, ``sinkhorn_iterations`` (the field ``max_iter``) and
            ``sinkhorn_backend`` (the field ``backend``) as keywords, as before ``options``
            (deprecated: they set those fields and warn once).

    Attributes:
        options: the :class:`~reidkit.ot.SinkhornOptions` of the assignment.
        similarity: the :class:`~reidkit.distances.Distance` of its scores.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        part_groups: Sequence[int] = (2, 3),
        *,
        num_prefix_tokens: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        assignment: PartAssignment = "sinkhorn",
        similarity: Similarity | Distance = "cosine",
        options: SinkhornOptions = ASSIGNMENT_OPTIONS,
        qkv: nn.Linear | None = None,
        proj: nn.Linear | None = None,
        grid_size: tuple[int, int] | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        checks.check_integer("num_prefix_tokens", num_prefix_tokens, 0)
        self.similarity = check_assignment(assignment, similarity, PART_ASSIGNMENTS)
        self.options = consumer_options(
            "reidkit.PartTokenAttention", options, deprecated, OLD_LAYER_KEYWORDS
        )
        self.part_groups = check_part_groups(part_groups)
        self.num_parts = sum(self.part_groups)
        fixed_mask = None
        if assignment in FIXED_PARTITIONS:
            if grid_size is None:
                raise ValueError(
                    f"assignment={assignment!r} is a fixed partition of the patch grid and "
                    "needs grid_size=(h, w)"
                )
            fixed_mask = fixed_part_mask(assignment, self.part_groups, grid_size)
        self.fixed_mask: Tensor | None
        self.register_buffer("fixed_mask", fixed_mask, persistent=False)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_prefix_tokens = num_prefix_tokens
        if qkv is not None and (qkv.in_features, qkv.out_features) != (dim, 3 * dim):
            raise ValueError(
                f"qkv must map {dim} -> {3 * dim} features, "
                f"got {qkv.in_features} -> {qkv.out_features}"
            )
        if proj is not None and (proj.in_features, proj.out_features) != (dim, dim):
            raise ValueError(
                f"proj must map {dim} -> {dim} features, "
                f"got {proj.in_features} -> {proj.out_features}"
            )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias) if qkv is None else qkv
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim) if proj is None else proj
        self.proj_drop = nn.Dropout(proj_drop)
        self.assignment = assignment
        self.last_assignment: Tensor | None = None
        self.last_part_mask: Tensor | None = None
        self.last_part_attention: Tensor | None = None

    def forward(
        self,
        x: Tensor,
        assignment: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Attend over ``x`` ``(B, L, D)`` with ``L = prefix + P + N``; returns ``(B, L, D)``.

        Args:
            x: the token sequence ``[prefix, PART_1 .. PART_P, patches]``.
            assignment: an optional ``(B, heads, G, N)`` hard assignment (global [PART] indices,
                as in :attr:`last_assignment`) used instead of computing one, e.g. an
                assignment to replay; it also replaces a fixed partition.
            attn_mask, is_causal: accepted for timm's block interface; must stay unset.
        """
        start, stop = self.num_prefix_tokens, self.num_prefix_tokens + self.num_parts
        if x.dim() != 3 or x.shape[2] != self.qkv.in_features or x.shape[1] <= stop:
            raise ValueError(
                f"x must have shape (B, L, {self.qkv.in_features}) with L > prefix + P = {stop}, "
                f"got {tuple(x.shape)}"
            )
        if attn_mask is not None or is_causal:
            raise ValueError("attn_mask and is_causal are not supported with [PART] tokens")
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, L, d)
        dropout = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # eq. 1
        if self.num_parts:
            out = torch.cat(
                [out[:, :, :start], self._align_parts(q, k, v, assignment), out[:, :, stop:]],
                dim=2,
            )
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return cast(Tensor, self.proj_drop(self.proj(out)))

    def _align_parts(self, q: Tensor, k: Tensor, v: Tensor, assignment: Tensor | None) -> Tensor:
        """[PART] outputs ``(B, heads, P, d)`` of eq. 2 from ``q, k, v`` ``(B, heads, L, d)``."""
        start, stop = self.num_prefix_tokens, self.num_prefix_tokens + self.num_parts
        part_queries, patch_keys = q[:, :, start:stop], k[:, :, stop:]
        expected = (*q.shape[:2], len(self.part_groups), patch_keys.shape[2])
        if assignment is None and self.fixed_mask is not None:
            if self.fixed_mask.shape[-1] != patch_keys.shape[2]:
                raise ValueError(
                    f"the fixed {self.assignment!r} partition covers {self.fixed_mask.shape[-1]} "
                    f"patches, the input has {patch_keys.shape[2]}"
                )
            mask = self.fixed_mask.expand(*q.shape[:2], -1, -1)
        elif assignment is None:
            assignment = assign_patches(
                part_queries,
                patch_keys,
                self.part_groups,
                method=cast(AssignmentMethod, self.assignment),  # fixed partitions return above
                similarity=self.similarity,
                options=self.options,
            )
        elif (
            tuple(assignment.shape) != expected
            or assignment.is_floating_point()
            or bool(((assignment < 0) | (assignment >= self.num_parts)).any())
        ):
            raise ValueError(
                f"assignment must be an integer tensor of shape (B, heads, G, N) = {expected} "
                f"with [PART] indices in [0, {self.num_parts}), got {assignment.dtype} "
                f"{tuple(assignment.shape)}"
            )
        if assignment is not None:
            mask = assignment_mask(assignment, self.num_parts)  # (B, heads, P, N)
        # A [PART] that receives no patch attends to itself rather than to nothing.
        empty = ~mask.any(dim=-1)
        keys_mask = torch.cat([torch.diag_embed(empty), mask], dim=-1)  # (B, heads, P, P + N)
        logits: Tensor = (part_queries * self.head_dim**-0.5) @ k[:, :, start:].transpose(-1, -2)
        weights = logits.masked_fill(~keys_mask, float("-inf")).softmax(dim=-1)
        self.last_assignment = None if assignment is None else assignment.detach()
        self.last_part_mask = mask.detach()
        self.last_part_attention = weights[..., self.num_parts :].detach()
        if self.training and self.attn_drop > 0:
            weights = F.dropout(weights, self.attn_drop)
        return weights @ v[:, :, start:]

    def extra_repr(self) -> str:
        return (
            f"dim={self.qkv.in_features}, num_heads={self.num_heads}, "
            f"part_groups={self.part_groups}, num_prefix_tokens={self.num_prefix_tokens}, "
            f"assignment={self.assignment!r}, similarity={self.similarity!r}, "
            f"options={self.options!r}"
        )
