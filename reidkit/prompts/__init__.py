"""Learnable prompts for CLIP: ID-specific, shared-context and multi-granularity textual
prompts, and image-conditioned visual prompts.

The textual learners return :class:`PromptBatch` (token embeddings and ids) for
:class:`reidkit.clip.CLIPTextEncoder`, and :func:`encode_class_prompts` turns a learner's
prompts for every identity into text features; :class:`VisualPromptGenerator` returns tokens
for the ``prompts`` argument of :class:`reidkit.clip.CLIPImageEncoder`.
"""

from reidkit.prompts.encoding import ClassPromptCache, ClassPromptFeatures, encode_class_prompts
from reidkit.prompts.id_specific import PromptLearner
from reidkit.prompts.multi_granularity import MultiGranularityPromptLearner
from reidkit.prompts.shared_context import SharedContextPromptLearner
from reidkit.prompts.template import PromptBatch, PromptTemplate
from reidkit.prompts.visual import VisualPromptGenerator

__all__ = [
    "ClassPromptCache",
    "ClassPromptFeatures",
    "MultiGranularityPromptLearner",
    "PromptBatch",
    "PromptLearner",
    "PromptTemplate",
    "SharedContextPromptLearner",
    "VisualPromptGenerator",
    "encode_class_prompts",
]
