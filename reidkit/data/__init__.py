"""Person ReID data: benchmark parsers, built-in synthetic data, sampler, transforms, loaders.

Every image data set exposes ``train``, ``query`` and ``gallery`` as lists of
``(path, pid, camid)`` records (``camid`` 0-based, train pids relabelled to ``0..C-1``),
``num_train_pids`` and ``num_train_cams``. Every text-to-image data set exposes ``train``,
``val`` and ``test`` as lists of :class:`CaptionedImage` records and the retrieval protocol of
its test split (:meth:`TextReIDSplits.protocol`).
"""

from reidkit.data.attributes import (
    ATTRIBUTE_LABELS,
    ATTRIBUTE_SPECS,
    PEDESTRIAN_ATTRIBUTES,
    AttributeSpec,
    attribute_labels,
    corrupt_attributes,
    pedestrian_attributes,
)
from reidkit.data.benchmarks import CUHK03NP, DukeMTMCreID, Market1501, OccludedDuke
from reidkit.data.captions import compose_captions
from reidkit.data.folder import ImageFolderReID
from reidkit.data.image_dataset import ReIDImageDataset
from reidkit.data.loaders import make_feature_loader, make_test_loader, make_train_loader
from reidkit.data.msmt17 import MSMT17
from reidkit.data.pedes import (
    CUHKPEDES,
    ICFGPEDES,
    CaptionJSONReID,
    RSTPReid,
    parse_caption_annotations,
)
from reidkit.data.registry import (
    DATASETS,
    SYNTHETIC_DATASETS,
    TEXT_DATASETS,
    build_dataset,
    build_text_dataset,
)
from reidkit.data.sampler import CameraAwareIdentitySampler, RandomIdentitySampler
from reidkit.data.splits import ReIDRecord, ReIDSplits, relabel_identities
from reidkit.data.synthetic import SyntheticReID, default_cache_dir, synthetic_identity
from reidkit.data.synthetic_captions import SyntheticCaptionedReID
from reidkit.data.text_loaders import (
    ImageTextDataset,
    count_truncated,
    make_image_text_loader,
)
from reidkit.data.text_splits import (
    CaptionedImage,
    ImageCaption,
    TextQuery,
    TextReIDSplits,
    TextToImageProtocol,
    caption_pairs,
)
from reidkit.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    build_contrastive_transforms,
    build_test_transforms,
    build_train_transforms,
)

__all__ = [
    "ATTRIBUTE_LABELS",
    "ATTRIBUTE_SPECS",
    "CLIP_MEAN",
    "CLIP_STD",
    "CUHK03NP",
    "CUHKPEDES",
    "DATASETS",
    "ICFGPEDES",
    "MSMT17",
    "PEDESTRIAN_ATTRIBUTES",
    "SYNTHETIC_DATASETS",
    "TEXT_DATASETS",
    "AttributeSpec",
    "CameraAwareIdentitySampler",
    "CaptionJSONReID",
    "CaptionedImage",
    "DukeMTMCreID",
    "ImageCaption",
    "ImageFolderReID",
    "ImageTextDataset",
    "Market1501",
    "OccludedDuke",
    "RSTPReid",
    "RandomIdentitySampler",
    "ReIDImageDataset",
    "ReIDRecord",
    "ReIDSplits",
    "SyntheticCaptionedReID",
    "SyntheticReID",
    "TextQuery",
    "TextReIDSplits",
    "TextToImageProtocol",
    "attribute_labels",
    "build_contrastive_transforms",
    "build_dataset",
    "build_test_transforms",
    "build_text_dataset",
    "build_train_transforms",
    "caption_pairs",
    "compose_captions",
    "corrupt_attributes",
    "count_truncated",
    "default_cache_dir",
    "make_feature_loader",
    "make_image_text_loader",
    "make_test_loader",
    "make_train_loader",
    "parse_caption_annotations",
    "pedestrian_attributes",
    "relabel_identities",
    "synthetic_identity",
]
