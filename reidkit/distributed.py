"""Multi-process training under ``torchrun``: set-up, rank helpers and gathers with gradients.

Every helper also works in a single, non-distributed process (rank 0 of a world of size 1), so
the same code runs under ``python script.py`` and ``torchrun --nproc_per_node=N script.py``::

    context = init_distributed("auto")      # reads RANK, WORLD_SIZE, LOCAL_RANK
    model = model.to(context.device)
    network = data_parallel(model)          # DistributedDataParallel when world_size > 1
    ...
    cleanup_distributed()

Gradient convention of :func:`all_gather_with_grad`: every rank computes its own loss on the
gathered tensor, and the gradient that flows back into a rank's slice is the sum of the
gradients of all ranks' losses with respect to that slice. After
:class:`~torch.nn.parallel.DistributedDataParallel` averages the parameter gradients over the
ranks, they equal the gradients of the mean of the per-rank losses, which for a loss averaged
over its own anchors is the loss of one process on the concatenated batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

_DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        local_rank: rank on this machine (selects the GPU).
        world_size: number of processes; 1 when not distributed.
        device: the device this process computes on.
        backend: ``"nccl"``, ``"gloo"``, or ``None`` when no process group was created.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_main_process(self) -> bool:
        """Whether this is rank 0 (the process that writes logs, checkpoints and reports)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(
            f"environment variable {name} must be an integer, got {value!r}"
        ) from error


def _select_device(device: str | torch.device, local_rank: int) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device not in _DEVICE_CHOICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {_DEVICE_CHOICES} or 'cuda:N', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available")
    if device == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(device)


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """Join the process group described by ``torchrun``'s environment, if there is one.

    With ``WORLD_SIZE`` > 1 in the environment the default process group is created (``nccl``
    on CUDA, ``gloo`` on the CPU) unless it already exists; otherwise nothing is initialised.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` (the GPU of index
            ``LOCAL_RANK``), ``"cuda:N"``, or a :class:`torch.device`.

    Returns:
        The :class:`DistributedContext` of this process.
    """
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    selected = _select_device(device, local_rank)
    if selected.type == "cuda":
        torch.cuda.set_device(selected)
    backend = None
    if is_distributed():
        backend = dist.get_backend()
    elif world_size > 1:
        backend = "nccl" if selected.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(rank, local_rank, world_size, selected, backend)


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists (call once at the end of a run)."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process is rank 0."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    if is_distributed():
        dist.barrier()


def data_parallel(module: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``module`` for data-parallel training when several processes run.

    Returns :class:`~torch.nn.parallel.DistributedDataParallel` around ``module`` when the world
    size is above 1, ``module`` itself otherwise. Call it after :func:`init_distributed` and
    after moving ``module`` to its device.
    """
    if get_world_size() > 1:
        return torch.nn.parallel.DistributedDataParallel(module)
    return module


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper, if any."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _backend_device() -> torch.device:
    """The device collectives of the default group run on (CUDA for ``nccl``)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_padded(tensor: Tensor) -> tuple[list[Tensor], list[int]]:
    """All-gather tensors whose first dimension may differ between ranks."""
    world_size = get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.empty_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded.contiguous())
    return [part[:count] for part, count in zip(gathered, counts)], counts


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        parts, counts = _gather_padded(tensor)
        rank = get_rank()
        ctx.start = sum(counts[:rank])
        ctx.count = counts[rank]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        # Each rank's loss depends on every slice: sum their gradients, keep ours.
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.count]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, with gradients to each rank's slice.

    Args:
        tensor: ``(B_r, ...)`` on rank ``r``; ``B_r`` may differ between ranks, the trailing
            shape may not.

    Returns:
        ``(sum_r B_r, ...)``: rank 0's rows first, then rank 1's, and so on. When not
        distributed, ``tensor`` itself. In backward, the gradient reaching this rank's slice is
        the sum over ranks of their gradients for it (see the module docstring).
    """
    if not isinstance(tensor, Tensor) or tensor.dim() < 1:
        raise ValueError("tensor must be a torch.Tensor with at least one dimension (B, ...)")
    if not is_distributed() or get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, without gradients.

    Args:
        tensor: ``(B_r, ...)`` on rank ``r`` (labels, detached features); ``B_r`` may differ.

    Returns:
        ``(sum_r B_r, ...)`` in rank order; ``tensor`` itself when not distributed.
    """
    if not isinstance(tensor, Tensor) or tensor.dim() < 1:
        raise ValueError("tensor must be a torch.Tensor with at least one dimension (B, ...)")
    if not is_distributed() or get_world_size() == 1:
        return tensor
    with torch.no_grad():
        parts, _ = _gather_padded(tensor.detach().to(_backend_device()))
    return torch.cat(parts, dim=0).to(tensor.device)


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over ranks (a new tensor, no gradient); ``tensor`` when alone."""
    if not is_distributed() or get_world_size() == 1:
        return tensor
    reduced = tensor.detach().to(_backend_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return (reduced / get_world_size()).to(tensor.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank; ``obj`` when alone."""
    if not is_distributed() or get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (any picklable object) as a list in rank order; ``[obj]`` when alone."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
