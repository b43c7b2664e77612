"""Ready-made ReID models assembled from reidkit's parts.

* :class:`CLIPReIDModel`: CLIP's image encoder with CLIP-ReID's two BNNecks, optionally with
  MMPL's visual prompts (the stage-2 model of both pipelines).
"""

from reidkit.models.clip_reid import CLIPReIDModel, CLIPReIDOutput

__all__ = ["CLIPReIDModel", "CLIPReIDOutput"]
