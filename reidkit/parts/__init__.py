"""[PART] tokens and Multi-head Auto-Alignment (AAformer).

:class:`PartTokenAttention` is the attention layer, :class:`AAformer` converts a pretrained ViT
(timm or open_clip) into the Auto-Aligned Transformer, :func:`assign_patches` is the
optimal-transport patch assignment, :class:`AAformerLoss` the per-token heads and losses of
eq. 6-8, and :func:`save_part_assignment_maps` draws the [PART] attention maps of Fig. 5.
"""

from reidkit.parts.aaformer import AAformer, PartFeatures
from reidkit.parts.assignment import assign_patches, assignment_mask
from reidkit.parts.attention import PartTokenAttention
from reidkit.parts.objective import AAformerLoss, AAformerLossOutput
from reidkit.parts.visualization import render_part_maps, save_part_assignment_maps

__all__ = [
    "AAformer",
    "AAformerLoss",
    "AAformerLossOutput",
    "PartFeatures",
    "PartTokenAttention",
    "assign_patches",
    "assignment_mask",
    "render_part_maps",
    "save_part_assignment_maps",
]
