"""Person ReID data: benchmark parsers, built-in synthetic data, sampler, transforms, loaders.

Every data set exposes ``train``, ``query`` and ``gallery`` as lists of ``(path, pid, camid)``
records (``camid`` 0-based, train pids relabelled to ``0..C-1``), ``num_train_pids`` and
``num_train_cams``.
"""

from reidkit.data.benchmarks import CUHK03NP, DukeMTMCreID, Market1501, OccludedDuke
from reidkit.data.folder import ImageFolderReID
from reidkit.data.image_dataset import ReIDImageDataset
from reidkit.data.loaders import make_feature_loader, make_test_loader, make_train_loader
from reidkit.data.msmt17 import MSMT17
from reidkit.data.registry import DATASETS, SYNTHETIC_DATASETS, build_dataset
from reidkit.data.sampler import RandomIdentitySampler
from reidkit.data.splits import ReIDRecord, ReIDSplits, relabel_identities
from reidkit.data.synthetic import SyntheticReID, default_cache_dir, synthetic_identity
from reidkit.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    build_test_transforms,
    build_train_transforms,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CUHK03NP",
    "DATASETS",
    "MSMT17",
    "SYNTHETIC_DATASETS",
    "DukeMTMCreID",
    "ImageFolderReID",
    "Market1501",
    "OccludedDuke",
    "RandomIdentitySampler",
    "ReIDImageDataset",
    "ReIDRecord",
    "ReIDSplits",
    "SyntheticReID",
    "build_dataset",
    "build_test_transforms",
    "build_train_transforms",
    "default_cache_dir",
    "make_feature_loader",
    "make_test_loader",
    "make_train_loader",
    "relabel_identities",
    "synthetic_identity",
]
