"""P×K identity sampling for metric-learning losses (triplet, SupCon, PCL).

:class:`RandomIdentitySampler` draws each identity's ``K`` images at random;
:class:`CameraAwareIdentitySampler` spreads them over the identity's cameras, as the
unsupervised methods that PCL-CLIP builds on (ClusterContrast, CAP, O2CAP) sample their
clusters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from reidkit.data.splits import ReIDRecord


class RandomIdentitySampler(Sampler[int]):
    """Yields indices in batches of ``P = batch_size // num_instances`` identities × ``K`` images.

    Each epoch every identity's images are shuffled and cut into chunks of
    ``K = num_instances`` (the remainder is dropped); an identity with fewer than ``K`` images
    gives one chunk drawn with replacement. A batch takes one chunk from each of ``P`` distinct
    identities, chosen at random with probability proportional to their chunks left, so an
    epoch sees nearly every image once. When fewer than ``P`` identities have chunks left, the
    batch is completed with fresh chunks of other identities, so every batch is full.

    Under ``torch.distributed`` the identities are shuffled with a seed shared by all ranks
    and dealt out, so that each rank samples from its own identities; every rank yields the
    same number of batches, ``len(self) // batch_size``.

    Use it with ``DataLoader(dataset, batch_size=batch_size, sampler=sampler)`` and call
    :meth:`set_epoch` before each epoch.

    Args:
        data_source: ``(path, pid, camid)`` records, or any object with such a ``records``
            attribute (e.g. :class:`~reidkit.data.ReIDImageDataset`).
        batch_size: ``P × K`` indices per batch.
        num_instances: images per identity in a batch, ``K``.
        seed: seed of every random choice (combined with the epoch).
        num_replicas: number of ranks; defaults to the ``torch.distributed`` world size when it
            is initialised, else 1.
        rank: this rank; defaults to the ``torch.distributed`` rank when it is initialised,
            else 0.

    Raises:
        ValueError: ``batch_size`` not a positive multiple of ``num_instances``, ``rank``
            outside ``[0, num_replicas)``, a negative seed, or fewer than ``P`` identities per
            rank.
    """

    def __init__(
        self,
        data_source: Sequence[ReIDRecord],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size={batch_size}, num_instances={num_instances}; expected "
                "num_instances >= 1 and batch_size a positive multiple of num_instances"
            )
        if seed < 0:
            raise ValueError(f"seed={seed}; expected >= 0")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank={rank}, num_replicas={num_replicas}; expected 0 <= rank < num_replicas"
            )
        records = getattr(data_source, "records", data_source)
        indices_by_pid: dict[int, list[int]] = defaultdict(list)
        for index, (_, pid, _) in enumerate(records):
            indices_by_pid[pid].append(index)
        self.camids = [camid for _, _, camid in records]
        self.indices_by_pid = {pid: indices_by_pid[pid] for pid in sorted(indices_by_pid)}
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.ids_per_batch = batch_size // num_instances
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        if len(self.indices_by_pid) // num_replicas < self.ids_per_batch:
            raise ValueError(
                f"{len(self.indices_by_pid)} identities over {num_replicas} rank(s) leave fewer "
                f"than P = batch_size // num_instances = {self.ids_per_batch} identities per rank"
            )
        total_chunks = sum(
            max(1, len(indices) // num_instances) for indices in self.indices_by_pid.values()
        )
        self.num_batches = max(1, total_chunks // (self.ids_per_batch * num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; each epoch has its own shuffle (the same on every rank)."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch}; expected >= 0")
        self.epoch = epoch

    def __len__(self) -> int:
        """Indices per epoch on this rank: ``num_batches × batch_size``."""
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        all_pids = list(self.indices_by_pid)
        shared = np.random.default_rng([self.seed, self.epoch])
        order = shared.permutation(len(all_pids))[self.rank :: self.num_replicas]
        pids = [all_pids[i] for i in order]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        chunks_left = {pid: self._chunks(pid, rng) for pid in pids}
        for _ in range(self.num_batches):
            available = [pid for pid in pids if chunks_left[pid]]
            if len(available) >= self.ids_per_batch:
                weights = np.array([len(chunks_left[pid]) for pid in available], dtype=float)
                picks = rng.choice(
                    len(available), self.ids_per_batch, replace=False, p=weights / weights.sum()
                )
                chosen = [available[i] for i in picks]
            else:
                others = [pid for pid in pids if not chunks_left[pid]]
                extra = rng.choice(len(others), self.ids_per_batch - len(available), replace=False)
                chosen = available + [others[i] for i in extra]
            for pid in chosen:
                if not chunks_left[pid]:
                    chunks_left[pid] = self._chunks(pid, rng)
                yield from chunks_left[pid].pop()

    def _chunks(self, pid: int, rng: np.random.Generator) -> list[list[int]]:
        """One epoch of ``K``-image chunks of ``pid`` (one chunk with replacement if too few)."""
        indices = self.indices_by_pid[pid]
        k = self.num_instances
        if len(indices) < k:
            return [rng.choice(indices, k, replace=True).tolist()]
        shuffled = rng.permutation(indices).tolist()
        return [shuffled[start : start + k] for start in range(0, len(shuffled) - k + 1, k)]


class CameraAwareIdentitySampler(RandomIdentitySampler):
    """P×K batches in which each identity's ``K`` images come from as many cameras as it has.

    Like :class:`RandomIdentitySampler` (same batches of ``P`` identities, same epoch length,
    same distributed behaviour), except how an identity's images are cut into chunks of
    ``K``: each epoch the images that fill ``c = n // K`` chunks are drawn at random, grouped
    by camera (cameras and images in random order) and dealt round-robin into the chunks.
    The images of each camera are thereby spread evenly over the identity's chunks: in every
    chunk a camera has ``floor(m / c)`` or ``ceil(m / c)`` of its ``m`` images, so a chunk
    repeats a camera only when some camera has more images than there are chunks. A cluster
    of pseudo labels thus shows the model its members seen by different cameras together, the
    cross-camera positives an unsupervised run learns most from. An identity with fewer than
    ``K`` images gives one chunk with all its images and, to fill it, others drawn with
    replacement.

    Args: as :class:`RandomIdentitySampler`; the records' camera ids are read.
    """

    def _chunks(self, pid: int, rng: np.random.Generator) -> list[list[int]]:
        """One epoch of ``K``-image chunks of ``pid``, each camera spread over the chunks."""
        indices = self.indices_by_pid[pid]
        k = self.num_instances
        if len(indices) < k:
            extra = rng.choice(indices, k - len(indices), replace=True).tolist()
            return [rng.permutation(indices).tolist() + extra]
        num_chunks = len(indices) // k
        used = rng.permutation(indices)[: num_chunks * k].tolist()
        by_camera: dict[int, list[int]] = defaultdict(list)
        for index in used:
            by_camera[self.camids[index]].append(index)
        cameras = list(by_camera)
        ordered = [index for c in rng.permutation(len(cameras)) for index in by_camera[cameras[c]]]
        chunks: list[list[int]] = [ordered[start::num_chunks] for start in range(num_chunks)]
        return [rng.permutation(chunk).tolist() for chunk in chunks]
