"""Ready-made ReID models assembled from reidkit's parts.

* :class:`CLIPReIDModel`: CLIP's image encoder with CLIP-ReID's two BNNecks; with ``K``
  visual prompts it is also MMPL's stage-2 (and deployed) model.
* :class:`PCLCLIPModel`: CLIP's image encoder with PCL-CLIP's batch-normalised features and
  its ID classifier (one on the concatenated feature, as released, or one per neck).
* :class:`AAformerReID`: :class:`reidkit.AAformer` with its per-token heads and losses.
* :class:`UniPTImageEncoder`, :class:`UniPTTextEncoder` and :class:`UniPTPretrainingModel`:
  UniPT's dual encoder on CLIP's towers and its pre-training with MLM.
* :class:`TextToImageModel`: two encoders and a shared identity classifier, the model of
  text-to-image fine-tuning (UniPT eq. 4-5).
* :class:`VALPATModel`: VAL-PAT's query and momentum encoders, attribute classifiers and key
  queues.

A trained model is saved as a description and its weights and comes back, without the training
code, as an :class:`InferenceModel` (:func:`load_model`, :mod:`reidkit.models.saved`).
"""

from reidkit.models.aaformer import AAformerReID, build_vit
from reidkit.models.clip_reid import CLIPReIDModel, CLIPReIDOutput
from reidkit.models.pcl_clip import PCLCLIPModel, PCLCLIPOutput
from reidkit.models.saved import (
    InferenceModel,
    ModelSpec,
    TextToImageInferenceModel,
    build_model,
    load_model,
    read_spec,
)
from reidkit.models.text_to_image import TextToImageModel, TextToImageOutput
from reidkit.models.unipt import (
    UniPTImageEncoder,
    UniPTPretrainingModel,
    UniPTPretrainingOutput,
    UniPTTextEncoder,
)
from reidkit.models.valpat import VALPATImageEncoder, VALPATModel, VALPATTextEncoder

__all__ = [
    "AAformerReID",
    "CLIPReIDModel",
    "CLIPReIDOutput",
    "InferenceModel",
    "ModelSpec",
    "PCLCLIPModel",
    "PCLCLIPOutput",
    "TextToImageInferenceModel",
    "TextToImageModel",
    "TextToImageOutput",
    "UniPTImageEncoder",
    "UniPTPretrainingModel",
    "UniPTPretrainingOutput",
    "UniPTTextEncoder",
    "VALPATImageEncoder",
    "VALPATModel",
    "VALPATTextEncoder",
    "build_model",
    "build_vit",
    "load_model",
    "read_spec",
]
