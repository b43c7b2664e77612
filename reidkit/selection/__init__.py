"""MMPL's hierarchical prompt learning (sec. 3.2): patch partition, selection and alignment.

- :class:`HierarchicalPatchPartition` cuts the patch-token map into ``M_c`` pooled patches per
  granularity level and scores each against the global feature (the agent's state);
- :class:`InformationSelectorAgent` selects ``M`` of them with a policy-gradient Bi-LSTM
  (eq. 7-12); :func:`class_token_attention` ranks them by attention instead (ablation);
- :class:`PatchToTokenAlignment` aligns the selected patches with each identity's learnable
  prompt tokens by optimal transport (eq. 13-19);
- :func:`stage1_objective` and :func:`multi_granularity_loss` combine the per-level losses
  (eq. 20, 24); :class:`HierarchicalPromptLearning` assembles the whole of stage 1.
"""

from reidkit.selection.agent import (
    AgentOutput,
    InformationSelectorAgent,
    budget_penalty,
    gather_patches,
    selection_reward,
)
from reidkit.selection.alignment import (
    AlignmentOutput,
    ClassPromptFeatures,
    PatchToTokenAlignment,
    encode_class_prompts,
)
from reidkit.selection.attention import class_token_attention, top_indices
from reidkit.selection.hierarchical import HierarchicalPromptLearning
from reidkit.selection.objectives import multi_granularity_loss, stage1_objective
from reidkit.selection.partition import HierarchicalPatchPartition, PatchLevel, patch_grid

__all__ = [
    "AgentOutput",
    "AlignmentOutput",
    "ClassPromptFeatures",
    "HierarchicalPatchPartition",
    "HierarchicalPromptLearning",
    "InformationSelectorAgent",
    "PatchLevel",
    "PatchToTokenAlignment",
    "budget_penalty",
    "class_token_attention",
    "encode_class_prompts",
    "gather_patches",
    "multi_granularity_loss",
    "patch_grid",
    "selection_reward",
    "stage1_objective",
    "top_indices",
]
