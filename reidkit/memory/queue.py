"""A first-in, first-out queue of key features, the negatives of MoCo-style contrast.

MoCo (He et al., 2020) and VAL-PAT (eq. 1-2) contrast each query with its positive key and
with the ``K`` keys of earlier batches, held in a queue: after each step the batch's keys are
appended and the oldest ones dropped. Under ``torch.distributed`` the keys of every rank are
gathered before they are appended, rank 0's first, so every rank holds the same queue (as
MoCo's ``concat_all_gather`` does). The queue is a set of buffers (saved in the
``state_dict``, never trained); until ``K`` keys have arrived, :meth:`FeatureQueue.keys`
returns only the ones that have.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.distributed import all_gather, raise_on_every_rank


class FeatureQueue(nn.Module):
    """The last ``size`` keys, in a ring buffer.

    Args:
        size: ``K``, the number of keys held (65536 in VAL-PAT).
        dim: the key width.
        gather_distributed: under ``torch.distributed``, append the keys of every rank, in
            rank order (every rank must call :meth:`enqueue` at the same step); ``False``
            keeps a queue per rank. The arguments are checked on every rank before the
            gather: bad input on one rank raises the same error on all of them.

    Attributes:
        features: ``(K, dim)`` buffer; slot ``(pointer - n + i) mod K`` holds the ``i``-th
            oldest of the ``n`` keys held.
        pointer: the slot the next key goes to.
        count: how many keys have been appended in all (saturates at nothing; the number held
            is ``min(count, K)``).
    """

    features: Tensor
    pointer: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int, gather_distributed: bool = True) -> None:
        super().__init__()
        checks.check_integer("size", size, 1)
        checks.check_integer("dim", dim, 1)
        self.size = size
        self.dim = dim
        self.gather_distributed = gather_distributed
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        """The number of keys held, ``min(count, K)``."""
        return int(min(int(self.count), self.size))

    def keys(self) -> Tensor:
        """``(n, dim)`` the keys held (``n = min(count, K)``), in slot order, without gradient.

        Slot order is the order of insertion rotated by the pointer; a contrastive loss does
        not depend on the order of its negatives.
        """
        return self.features[: len(self)]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Append ``keys`` ``(B, dim)`` (of every rank, in rank order), dropping the oldest.

        More than ``K`` keys at once keep the last ``K``. The keys are detached and stored in
        the queue's dtype.
        """
        with raise_on_every_rank(enabled=self.gather_distributed):
            checks.check_float_matrix("keys", keys)
            if keys.shape[1] != self.dim:
                raise ValueError(f"keys must have shape (B, {self.dim}), got {tuple(keys.shape)}")
        keys = keys.detach()
        if self.gather_distributed:
            keys = all_gather(keys)
        total = keys.shape[0]
        keys = keys[-self.size :].to(self.features)
        start = (int(self.pointer) + total - keys.shape[0]) % self.size
        slots = (start + torch.arange(keys.shape[0], device=self.features.device)) % self.size
        self.features[slots] = keys
        self.pointer.fill_((int(self.pointer) + total) % self.size)
        self.count.add_(total)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, gather_distributed={self.gather_distributed}"
