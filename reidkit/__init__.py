"""reidkit: losses, layers, kernels and evaluation for CLIP-based person re-identification.

Importing :mod:`reidkit` is cheap: every public name below is resolved lazily on first
access, so ``import reidkit`` imports neither Triton nor open_clip. Names are grouped by the
subpackage that defines them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC_NAMES: dict[str, str] = {
    # optimal transport (reidkit.ot)
    "sinkhorn": "reidkit.ot",
    "SinkhornOT": "reidkit.ot",
    "SinkhornOptions": "reidkit.ot",
    "SinkhornResult": "reidkit.ot",
    "pairwise_ot_distance": "reidkit.ot",
    # data (reidkit.data)
    "Market1501": "reidkit.data",
    "DukeMTMCreID": "reidkit.data",
    "MSMT17": "reidkit.data",
    "OccludedDuke": "reidkit.data",
    "ImageFolderReID": "reidkit.data",
    "CUHK03NP": "reidkit.data",
    "SyntheticReID": "reidkit.data",
    "CUHKPEDES": "reidkit.data",
    "ICFGPEDES": "reidkit.data",
    "RSTPReid": "reidkit.data",
    "SyntheticCaptionedReID": "reidkit.data",
    "ImageTextDataset": "reidkit.data",
    "ReIDImageDataset": "reidkit.data",
    "RandomIdentitySampler": "reidkit.data",
    "build_train_transforms": "reidkit.data",
    "build_test_transforms": "reidkit.data",
    # pairwise geometry (reidkit.distances)
    "CosineDistance": "reidkit.distances",
    "EuclideanDistance": "reidkit.distances",
    "DotProductSimilarity": "reidkit.distances",
    "get_distance": "reidkit.distances",
    # retrieval (reidkit.retrieval)
    "re_ranking": "reidkit.retrieval",
    "k_reciprocal_jaccard_distance": "reidkit.retrieval",
    "extract_features": "reidkit.retrieval",
    # evaluation (reidkit.eval)
    "evaluate_rank": "reidkit.eval",
    "RankResult": "reidkit.eval",
    "evaluate_t2i": "reidkit.eval",
    "ReIDEvaluator": "reidkit.eval",
    "evaluate_model": "reidkit.eval",
    "save_rank_grid": "reidkit.eval",
    # CLIP backbone (reidkit.clip)
    "load_clip": "reidkit.clip",
    "TokenMasking": "reidkit.clip",
    "CLIPTextEncoder": "reidkit.clip",
    "CLIPImageEncoder": "reidkit.clip",
    # prompt learners (reidkit.prompts)
    "PromptLearner": "reidkit.prompts",
    "SharedContextPromptLearner": "reidkit.prompts",
    "MultiGranularityPromptLearner": "reidkit.prompts",
    "VisualPromptGenerator": "reidkit.prompts",
    # losses (reidkit.losses) and heads (reidkit.heads)
    "SupConLoss": "reidkit.losses",
    "ImageToTextCrossEntropy": "reidkit.losses",
    "CrossEntropyLabelSmooth": "reidkit.losses",
    "TripletLoss": "reidkit.losses",
    "TransformationLoss": "reidkit.losses",
    "PCLLoss": "reidkit.losses",
    "CLIPReIDLoss": "reidkit.losses",
    "ImageTextContrastiveLoss": "reidkit.losses",
    "QueueInfoNCELoss": "reidkit.losses",
    "MaskedLanguageModelingLoss": "reidkit.losses",
    "CrossModalRankingLoss": "reidkit.losses",
    "CrossModalIdentityLoss": "reidkit.losses",
    "AttributeBCELoss": "reidkit.losses",
    "UniPTPretrainingLoss": "reidkit.losses",
    "UniPTFinetuningLoss": "reidkit.losses",
    "VALPATLoss": "reidkit.losses",
    "BNNeck": "reidkit.heads",
    "MaskedLanguageModelHead": "reidkit.heads",
    "SharedIdentityClassifier": "reidkit.heads",
    # patch selection and alignment (reidkit.selection)
    "HierarchicalPatchPartition": "reidkit.selection",
    "InformationSelectorAgent": "reidkit.selection",
    "PatchToTokenAlignment": "reidkit.selection",
    "HierarchicalPromptLearning": "reidkit.selection",
    # [PART] tokens (reidkit.parts)
    "PartTokenAttention": "reidkit.parts",
    "AAformer": "reidkit.parts",
    # models (reidkit.models)
    "CLIPReIDModel": "reidkit.models",
    "PCLCLIPModel": "reidkit.models",
    "AAformerReID": "reidkit.models",
    "UniPTPretrainingModel": "reidkit.models",
    "TextToImageModel": "reidkit.models",
    "VALPATModel": "reidkit.models",
    "load_model": "reidkit.models",
    # memory (reidkit.memory)
    "PrototypeMemory": "reidkit.memory",
    "FeatureQueue": "reidkit.memory",
    "MomentumEncoder": "reidkit.memory",
    # pseudo captions (reidkit.pseudotext)
    "PseudoTextComposer": "reidkit.pseudotext",
    "generate_pseudo_texts": "reidkit.pseudotext",
}

__all__ = ["__version__", *_PUBLIC_NAMES]


def __getattr__(name: str) -> Any:
    module_name = _PUBLIC_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'reidkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
