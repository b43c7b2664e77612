"""Data loaders for training (P×K batches), testing (query then gallery) and cached features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from reidkit.data.image_dataset import ReIDImageDataset
from reidkit.data.sampler import RandomIdentitySampler
from reidkit.data.splits import ReIDRecord
from reidkit.distributed import get_rank, get_world_size

Transform = Callable[[Image.Image], Any]


def make_train_loader(
    records: Sequence[ReIDRecord],
    transform: Transform,
    batch_size: int,
    num_instances: int,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader of ``P × K`` batches over a train split.

    Batches are ``(images, pids, camids, paths)`` with ``images`` of shape
    ``(batch_size, 3, H, W)`` and ``pids``, ``camids`` of shape ``(batch_size,)``. The sampler
    (:class:`~reidkit.data.RandomIdentitySampler`, distributed-aware) is ``loader.sampler``:
    call ``loader.sampler.set_epoch(epoch)`` before each epoch.

    Args:
        records: the train split, e.g. ``dataset.train``.
        transform: e.g. :func:`~reidkit.data.build_train_transforms`.
        batch_size: ``P × K``.
        num_instances: ``K``, images per identity in a batch.
        num_workers: loader processes.
        seed: seed of the identity sampling and of the workers' augmentation.
        pin_memory: pin batches in page-locked memory (for GPU training).
    """
    sampler = RandomIdentitySampler(records, batch_size, num_instances, seed=seed)
    return DataLoader(
        ReIDImageDataset(records, transform),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def make_test_loader(
    query: Sequence[ReIDRecord],
    gallery: Sequence[ReIDRecord],
    transform: Transform,
    batch_size: int = 128,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over the query images followed by the gallery images, in order.

    The first ``len(query)`` items are the queries; the features extracted from it split as
    ``features[:len(query)]``, ``features[len(query):]``.

    Args:
        query: query records, e.g. ``dataset.query``.
        gallery: gallery records, e.g. ``dataset.gallery``.
        transform: e.g. :func:`~reidkit.data.build_test_transforms`.
        batch_size: images per batch (the last batch may be smaller).
        num_workers: loader processes.
        pin_memory: pin batches in page-locked memory.
    """
    return DataLoader(
        ReIDImageDataset([*query, *gallery], transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def make_feature_loader(*tensors: Tensor, batch_size: int, seed: int = 0) -> DataLoader:
    """A shuffling loader over tensors cached once, e.g. a frozen encoder's features.

    The stages that train prompts against fixed image features (CLIP-ReID and MMPL stage 1)
    iterate over such caches instead of images. Under ``torch.distributed`` every rank gets its
    own shard (a :class:`~torch.utils.data.distributed.DistributedSampler`; call
    ``loader.sampler.set_epoch(epoch)`` before each epoch, as
    :meth:`reidkit.engine.TrainingRun.fit` does).

    Args:
        tensors: tensors of one length ``N`` along dim 0, e.g. features ``(N, D)`` and
            identities ``(N,)``; batches hold one slice of each.
        batch_size: rows per batch.
        seed: seed of the shuffling under ``torch.distributed``; a single process shuffles
            with torch's global generator, which :func:`reidkit.engine.seed_everything` seeds
            and checkpoints restore.
    """
    if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
        lengths = [tuple(t.shape) for t in tensors]
        raise ValueError(f"tensors must share their first dimension, got shapes {lengths}")
    dataset = TensorDataset(*tensors)
    if get_world_size() > 1:
        sampler = DistributedSampler(dataset, get_world_size(), get_rank(), seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)
