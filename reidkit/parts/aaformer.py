"""AAformer: a pretrained ViT with [PART] tokens and Multi-head Auto-Alignment (sec. III-B).

The learnable [PART] tokens are inserted after the class token, ``Z = [CLS, PART_1 .. PART_P,
patches]`` (``L = 1 + P + N``), and every block's self-attention becomes a
:class:`~reidkit.parts.PartTokenAttention`. The output CLS token ``Z_0`` is the global feature
and the output [PART]s ``Z_1:P`` are the part features; at test time they are concatenated
(sec. III-C).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.distances import Distance
from reidkit.ot.options import SinkhornOptions, consumer_options
from reidkit.parts.assignment import (
    ASSIGNMENT_OPTIONS,
    OLD_LAYER_KEYWORDS,
    PART_ASSIGNMENTS,
    PartAssignment,
    Similarity,
    check_assignment,
    check_part_groups,
)
from reidkit.parts.attention import PartTokenAttention
from reidkit.parts.backbones import wrap_backbone


@dataclasses.dataclass
class PartFeatures:
    """Output tokens of :class:`AAformer` for a batch of ``B`` images.

    Attributes:
        tokens: ``(B, 1 + P, C)`` the CLS token ``Z_0`` followed by the [PART]s ``Z_1:P``.
    """

    tokens: Tensor

    @property
    def cls(self) -> Tensor:
        """``(B, C)`` global feature ``Z_0``."""
        return self.tokens[:, 0]

    @property
    def parts(self) -> Tensor:
        """``(B, P, C)`` part features ``Z_1:P``."""
        return self.tokens[:, 1:]

    def concatenated(self) -> Tensor:
        """``(B, (1 + P) C)`` CLS and [PART]s concatenated, the test-time representation."""
        return self.tokens.flatten(1)


class AAformer(nn.Module):
    """Auto-Aligned Transformer built from a pretrained ViT (AAformer sec. III).

    The backbone is converted **in place**: the attention of each block is replaced by a
    :class:`PartTokenAttention` sharing the pretrained ``qkv`` and output projection (pass
    ``copy.deepcopy(vit)`` to keep the original). With ``part_groups=()`` the model computes
    exactly the original ViT.

    Args:
        backbone: a timm ``VisionTransformer`` with a class token, an open_clip
            ``VisionTransformer`` (class-token pooling) or an open_clip CLIP model.
        part_groups: sizes of the [PART] groups; ``(2, 3)`` is the paper's default (Table VI).
        assignment: ``"sinkhorn"`` (optimal transport, eq. 3-5), ``"nearest"`` (Table V), or
            a fixed partition of the patch grid, ``"stripes"`` (PCB) or ``"mgn"`` (MGN), Table
            IV's "+PCB PT" and "+MGN PT" (see
            :func:`~reidkit.parts.assignment.fixed_part_mask`).
        similarity: ``"cosine"``, ``"dot"`` (eq. 3) or a
            :class:`~reidkit.distances.Distance`: the assignment scores, see
            :func:`~reidkit.parts.assign_patches`.
        options: the Sinkhorn settings of eq. 3-5 in every layer, a
            :class:`~reidkit.ot.SinkhornOptions`; default
            :data:`~reidkit.parts.assignment.ASSIGNMENT_OPTIONS` (``epsilon = 0.05``, 3
            iterations).
        part_init_std: standard deviation of the (truncated normal) [PART] initialisation.
        checkpoint_activations: recompute open_clip blocks in the backward pass.
        **deprecated: ``epsilon``, ``sinkhorn_iterations`` and ``sinkhorn_backend`` as
            keywords, as before ``options`` (deprecated: they set its fields ``epsilon``,
            ``max_iter`` and ``backend`` and warn once).

    Attributes:
        backbone: the converted ViT in its :class:`~reidkit.parts.backbones.ViTAdapter`.
        part_tokens: ``(P, width)`` the learnable [PART] tokens fed to the first block.
        part_groups: the [PART] group sizes; ``num_parts`` is their sum ``P``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        part_groups: Sequence[int] = (2, 3),
        *,
        assignment: PartAssignment = "sinkhorn",
        similarity: Similarity | Distance = "cosine",
        options: SinkhornOptions = ASSIGNMENT_OPTIONS,
        part_init_std: float = 0.02,
        checkpoint_activations: bool = False,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        self.part_groups = check_part_groups(part_groups)
        self.num_parts = sum(self.part_groups)
        check_assignment(assignment, similarity, PART_ASSIGNMENTS)
        options = consumer_options("reidkit.AAformer", options, deprecated, OLD_LAYER_KEYWORDS)
        make_attention = partial(
            PartTokenAttention,
            part_groups=self.part_groups,
            assignment=assignment,
            similarity=similarity,
            options=options,
        )
        self.backbone = wrap_backbone(backbone, make_attention, checkpoint_activations)
        reference = next(self.backbone.parameters())
        self.part_tokens = nn.Parameter(
            torch.empty(self.num_parts, self.backbone.width, dtype=reference.dtype)
        )
        nn.init.trunc_normal_(self.part_tokens, std=part_init_std)

    @property
    def output_dim(self) -> int:
        """Width ``C`` of each output token."""
        return self.backbone.output_dim

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` patch grid of the expected image size."""
        return self.backbone.grid_size

    def forward(self, images: Tensor) -> PartFeatures:
        """Encode ``(B, 3, H, W)`` images into the CLS and [PART] features."""
        tokens = self.backbone.embed(images)  # (B, prefix + N, width) after the pre-norm
        prefix = self.backbone.num_prefix_tokens
        parts = self.backbone.pre_norm(self.part_tokens.to(tokens.dtype))
        parts = parts.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :prefix], parts, tokens[:, prefix:]], dim=1)
        tokens = self.backbone.run_blocks(tokens)
        selected = torch.cat([tokens[:, :1], tokens[:, prefix : prefix + self.num_parts]], dim=1)
        return PartFeatures(tokens=self.backbone.finalize(selected))

    def attention_layers(self) -> list[PartTokenAttention]:
        """The :class:`PartTokenAttention` of every block, first to last."""
        return [module for module in self.modules() if isinstance(module, PartTokenAttention)]

    def part_attention_maps(self, layer: int = 2, head: int = 0) -> Tensor:
        """Attention of each [PART] over the patch grid in the last forward pass (Fig. 5).

        Args:
            layer: block index (the paper shows the third block, ``layer=2``).
            head: attention head (the paper shows the first).

        Returns:
            ``(B, P, h, w)`` attention weights of eq. 2, zero on the patches not assigned to the
            [PART].
        """
        layers = self.attention_layers()
        checks.check_integer("layer", layer, -len(layers), len(layers) - 1)
        attention = layers[layer]
        checks.check_integer("head", head, 0, attention.num_heads - 1)
        weights = attention.last_part_attention
        if weights is None:
            raise ValueError("part_attention_maps needs a forward pass with [PART] tokens first")
        grid_h, grid_w = self.grid_size
        if weights.shape[-1] != grid_h * grid_w:
            raise ValueError(
                f"the last forward pass had {weights.shape[-1]} patches, not the {grid_h}x{grid_w}"
                " grid"
            )
        return weights[:, head].reshape(weights.shape[0], -1, grid_h, grid_w)
