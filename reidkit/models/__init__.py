"""Ready-made ReID models assembled from reidkit's parts.

* :class:`CLIPReIDModel`: CLIP's image encoder with CLIP-ReID's two BNNecks; with ``K``
  visual prompts it is also MMPL's stage-2 (and deployed) model.
* :class:`PCLCLIPModel`: CLIP's image encoder with PCL-CLIP's two BNNecks.
* :class:`AAformerReID`: :class:`reidkit.AAformer` with its per-token heads and losses.
"""

from reidkit.models.aaformer import AAformerReID
from reidkit.models.clip_reid import CLIPReIDModel, CLIPReIDOutput
from reidkit.models.pcl_clip import PCLCLIPModel, PCLCLIPOutput

__all__ = ["AAformerReID", "CLIPReIDModel", "CLIPReIDOutput", "PCLCLIPModel", "PCLCLIPOutput"]
