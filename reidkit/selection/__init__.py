"""MMPL's hierarchical prompt learning, stage 1 (sec. 3.2): patch partition, selection, alignment.

- :class:`HierarchicalPatchPartition` cuts the patch-token map into ``M_c`` pooled patches per
  granularity level (on the grid :func:`partition_grid` picks) and scores each against the
  global feature (the agent's state);
- :class:`InformationSelectorAgent` selects ``M`` of them with a policy-gradient Bi-LSTM
  (eq. 7-12); :func:`top_indices` of the class-token attention
  (:meth:`reidkit.clip.CLIPImageEncoder.class_token_attention`) selects them instead (ablation);
- :class:`PatchToTokenAlignment` aligns the selected patches with each identity's learnable
  prompt tokens by optimal transport (eq. 13-19);
- :func:`stage1_objective` combines the per-level losses (eq. 20);
  :class:`HierarchicalPromptLearning` assembles the whole of stage 1;
- :func:`stage1_diagnostics` measures whether its parts learn: the OT loss against its chance
  level (:func:`chance_cross_entropy`), the selection against the best one
  (:func:`selection_overlap`) and against random (:func:`random_selection_overlap`).

The prompts' text features come from :func:`reidkit.prompts.encode_class_prompts`; the text
term of stage 2 is :func:`reidkit.losses.multi_granularity_loss`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from reidkit._deprecation import moved_names
from reidkit.selection.agent import (
    AgentOutput,
    InformationSelectorAgent,
    budget_penalty,
    gather_patches,
    selection_reward,
)
from reidkit.selection.alignment import AlignmentOutput, PatchToTokenAlignment
from reidkit.selection.attention import top_indices
from reidkit.selection.diagnostics import (
    best_selection,
    chance_cross_entropy,
    random_selection_overlap,
    selection_overlap,
    stage1_diagnostics,
)
from reidkit.selection.objectives import stage1_objective
from reidkit.selection.partition import HierarchicalPatchPartition, PatchLevel, partition_grid

if TYPE_CHECKING:
    from reidkit.selection.hierarchical import HierarchicalPromptLearning

__all__ = [
    "AgentOutput",
    "AlignmentOutput",
    "HierarchicalPatchPartition",
    "HierarchicalPromptLearning",
    "InformationSelectorAgent",
    "PatchLevel",
    "PatchToTokenAlignment",
    "best_selection",
    "budget_penalty",
    "chance_cross_entropy",
    "gather_patches",
    "partition_grid",
    "random_selection_overlap",
    "selection_overlap",
    "selection_reward",
    "stage1_diagnostics",
    "stage1_objective",
    "top_indices",
]

_moved = moved_names(
    __name__,
    {
        "ClassPromptFeatures": "reidkit.prompts.ClassPromptFeatures",
        "class_token_attention": "reidkit.clip.class_token_attention",
        "encode_class_prompts": "reidkit.prompts.encode_class_prompts",
        "multi_granularity_loss": "reidkit.losses.multi_granularity_loss",
        "patch_grid": "reidkit.selection.partition_grid",
    },
)


def __getattr__(name: str) -> Any:
    # HierarchicalPromptLearning encodes prompts with CLIP's text tower, whose module imports
    # open_clip: it loads on first use, so that the selection and alignment import without it.
    if name == "HierarchicalPromptLearning":
        value = importlib.import_module("reidkit.selection.hierarchical").HierarchicalPromptLearning
        globals()[name] = value
        return value
    return _moved(name)
