"""Data loaders for training (P×K batches), testing (query then gallery) and cached features.

The random augmentation of every training item is seeded from the run's seed, the epoch, the
rank and the item's position in the epoch, never from a loader process's own generator: a run
draws the same augmentation with any number of loader workers, and a run resumed at any epoch
draws what the uninterrupted run drew.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from reidkit.data.image_dataset import ReIDImageDataset
from reidkit.data.sampler import CameraAwareIdentitySampler, RandomIdentitySampler
from reidkit.data.splits import ReIDRecord
from reidkit.distributed import get_rank, get_world_size

Transform = Callable[[Image.Image], Any]
ItemT_co = TypeVar("ItemT_co", covariant=True)
_AUGMENTATION_STREAM = 0x5EED  # tells the augmentation seeds apart from the sampler's draws


@contextlib.contextmanager
def _seeded_generators(seed: int) -> Iterator[None]:
    """Seed Python's and torch's CPU generators with the 63-bit ``seed``, NumPy's with its
    32 high bits.

    In the main process (a loader without workers) they are put back afterwards, so that the
    training step draws what it would draw without the loader; a loader worker's generators
    serve nothing else, and saving NumPy's costs more than the seeding.
    """
    in_worker = get_worker_info() is not None
    if not in_worker:
        python, cpu = random.getstate(), torch.get_rng_state()
        numpy = np.random.get_state()  # noqa: NPY002
    random.seed(seed)
    np.random.seed(seed >> 31)  # noqa: NPY002
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if not in_worker:
            random.setstate(python)
            np.random.set_state(numpy)  # noqa: NPY002
            torch.set_rng_state(cpu)


class _Items(Protocol[ItemT_co]):
    """A map-style dataset with a length."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> ItemT_co: ...


class _SeededItems(Dataset[ItemT_co]):
    """``dataset`` read at ``(index, seed)`` keys: the item's transform draws from generators
    seeded with ``seed``, in whichever process reads it."""

    def __init__(self, dataset: _Items[ItemT_co]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> ItemT_co:
        index, seed = key
        with _seeded_generators(seed):
            return self.dataset[index]


class _IdentitySamplerWithSeeds(Sampler[tuple[int, int]]):
    """A :class:`~reidkit.data.RandomIdentitySampler`'s indices, each with its augmentation seed.

    The ``i``-th index of an epoch comes with a 63-bit seed drawn from a generator seeded with
    ``(seed, epoch, rank)`` of the identity sampler, so the seeds depend on nothing a loader
    worker holds.

    Args:
        identity_sampler: gives the indices, the seed, the epoch and the rank.
    """

    def __init__(self, identity_sampler: RandomIdentitySampler) -> None:
        self.identity_sampler = identity_sampler

    @property
    def epoch(self) -> int:
        """The epoch selected by :meth:`set_epoch`."""
        return self.identity_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the indices and of the augmentation seeds."""
        self.identity_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.identity_sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sampler = self.identity_sampler
        seeds = np.random.default_rng(
            [sampler.seed, sampler.epoch, sampler.rank, _AUGMENTATION_STREAM]
        )
        for index in sampler:
            yield index, int(seeds.integers(2**63))


def make_train_loader(
    records: Sequence[ReIDRecord],
    transform: Transform,
    batch_size: int,
    num_instances: int,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    camera_aware: bool = False,
) -> DataLoader[tuple[Any, int, int, str]]:
    """A loader of ``P × K`` batches over a train split.

    Batches are ``(images, pids, camids, paths)`` with ``images`` of shape
    ``(batch_size, 3, H, W)`` and ``pids``, ``camids`` of shape ``(batch_size,)``. The indices
    come from a :class:`~reidkit.data.RandomIdentitySampler` (distributed-aware,
    ``loader.sampler.identity_sampler``), which ``loader.sampler`` pairs with the augmentation
    seed of every item: call ``loader.sampler.set_epoch(epoch)`` before each epoch. The
    transform of each item runs with Python's, NumPy's and torch's generators seeded from
    ``(seed, epoch, rank, position in the epoch)``, so the batches are the same for any
    ``num_workers`` and for an epoch run again after a resume; the generators of the process
    that iterates are left untouched.

    Args:
        records: the train split, e.g. ``dataset.train``.
        transform: e.g. :func:`~reidkit.data.build_train_transforms`.
        batch_size: ``P × K``.
        num_instances: ``K``, images per identity in a batch.
        num_workers: loader processes.
        seed: seed of the identity sampling and of the augmentation.
        pin_memory: pin batches in page-locked memory (for GPU training).
        camera_aware: spread each identity's ``K`` images over its cameras
            (:class:`~reidkit.data.CameraAwareIdentitySampler`).
    """
    sampler_type = CameraAwareIdentitySampler if camera_aware else RandomIdentitySampler
    sampler = sampler_type(records, batch_size, num_instances, seed=seed)
    return DataLoader(
        _SeededItems(ReIDImageDataset(records, transform)),
        batch_size=batch_size,
        sampler=_IdentitySamplerWithSeeds(sampler),
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
) -> DataLoader[tuple[Any, int, int, str]]:
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


def make_feature_loader(
    *tensors: Tensor, batch_size: int, seed: int = 0
) -> DataLoader[tuple[Tensor, ...]]:
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
        sampler: DistributedSampler[int] = DistributedSampler(
            dataset, get_world_size(), get_rank(), seed=seed
        )
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)
