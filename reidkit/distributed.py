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

Bad input on one rank must not leave the others waiting in a collective. Components that check
their arguments and then call a collective run the checks inside :func:`raise_on_every_rank`:
every rank checks, one ``all_reduce`` of an error flag tells every rank whether any failed, and
then all of them raise the same error. The gathers check that every rank sends a tensor of the
same trailing shape and dtype in the exchange of row counts they need anyway, and
:func:`all_reduce_mean` exchanges the same header before reducing. A collective that
still never completes (a rank that died, a rank that skipped a call) fails after the process
group's ``timeout`` (:func:`init_distributed`).
"""

from __future__ import annotations

import datetime
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor

_DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
"""How long a collective waits for the other ranks before it fails (:func:`init_distributed`):
long enough for rank 0 to evaluate MSMT17 while the other ranks wait for its metrics."""


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


def init_distributed(
    device: str | torch.device = "auto",
    timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
) -> DistributedContext:
    """Join the process group described by ``torchrun``'s environment, if there is one.

    With ``WORLD_SIZE`` > 1 in the environment the default process group is created (``nccl``
    on CUDA, ``gloo`` on the CPU) unless it already exists; otherwise nothing is initialised.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` (the GPU of index
            ``LOCAL_RANK``), ``"cuda:N"``, or a :class:`torch.device`.
        timeout: how long joining the group and every later collective wait for the other
            ranks before failing instead of hanging: a :class:`datetime.timedelta` or a number
            of seconds, > 0 (default :data:`DEFAULT_TIMEOUT`, 30 minutes, for both backends;
            torch's own ``nccl`` default is 10). ``gloo`` raises a ``RuntimeError`` on the
            waiting ranks; ``nccl`` aborts the collective and ends the process. It must exceed
            the longest time one rank works alone while the others wait in a collective
            (rank 0's evaluation). Ignored when the group already exists.

    Returns:
        The :class:`DistributedContext` of this process.
    """
    timeout = _as_timeout(timeout)
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
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    return DistributedContext(rank, local_rank, world_size, selected, backend)


def _as_timeout(timeout: datetime.timedelta | float) -> datetime.timedelta:
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    elif isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    else:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(
            f"timeout must be a datetime.timedelta or a number of seconds > 0, got {timeout!r}"
        )
    return datetime.timedelta(seconds=seconds)


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


_SYNC_BATCHNORM = [False]  # the default of data_parallel, set by set_sync_batchnorm


def set_sync_batchnorm(enabled: bool) -> None:
    """Whether :func:`data_parallel` converts BatchNorm layers by default (``--sync-bn``)."""
    _SYNC_BATCHNORM[0] = bool(enabled)


def data_parallel(
    module: torch.nn.Module, *, sync_batchnorm: bool | None = None
) -> torch.nn.Module:
    """Wrap ``module`` for data-parallel training when several processes run.

    Returns :class:`~torch.nn.parallel.DistributedDataParallel` around ``module`` when the world
    size is above 1, ``module`` itself otherwise. Call it after :func:`init_distributed` and
    after moving ``module`` to its device.

    Args:
        module: the model.
        sync_batchnorm: first replace its BatchNorm layers, in place, by
            :class:`SyncBatchNorm` (:func:`convert_sync_batchnorm`); ``None``: as
            :func:`set_sync_batchnorm` set it (off by default). Without it each process
            normalises with the statistics of its own share of the batch.
    """
    if get_world_size() > 1:
        if _SYNC_BATCHNORM[0] if sync_batchnorm is None else sync_batchnorm:
            convert_sync_batchnorm(module)
        return torch.nn.parallel.DistributedDataParallel(module)
    return module


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks, with the sum over ranks of the gradients in backward."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        reduced = tensor.detach().to(_backend_device(), copy=True)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.to(tensor.device)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        grad = grad_output.detach().to(_backend_device(), copy=True)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.to(grad_output.device)


class SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of every process, on any device and backend.

    In training, the per-channel sums and sums of squares of every rank's ``(B_r, C, ...)``
    input are summed over the ranks (one ``all_reduce`` of ``2C + 1`` numbers, with
    gradients), so every rank normalises with the mean and the biased variance of the
    concatenated batch and updates its running statistics alike (with the unbiased variance,
    as :class:`torch.nn.BatchNorm1d` does). In evaluation, or alone, it is plain BatchNorm.
    Unlike :class:`torch.nn.SyncBatchNorm` it also runs on the CPU with ``gloo``. Its
    ``state_dict`` is that of the BatchNorm layer it replaces.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"input must be (B, C, ...), got shape {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed() and get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        values = input.double()
        count = torch.tensor([values.numel() / values.shape[1]], dtype=torch.float64)
        local = torch.cat([values.sum(dims), (values * values).sum(dims), count.to(input.device)])
        total = _AllReduceSum.apply(local)
        channels = input.shape[1]
        size = total[-1]
        mean = total[:channels] / size
        variance = (total[channels : 2 * channels] / size - mean * mean).clamp(min=0)
        if self.track_running_stats:
            # tracked statistics: the three buffers exist
            batches = cast(Tensor, self.num_batches_tracked)
            running_mean, running_var = (
                cast(Tensor, self.running_mean),
                cast(Tensor, self.running_var),
            )
            with torch.no_grad():
                batches.add_(1)
                momentum = self.momentum
                if momentum is None:  # a cumulative moving average
                    momentum = 1.0 / float(batches)
                unbiased = variance * size / (size - 1).clamp(min=1)
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
                running_var.lerp_(unbiased.to(running_var.dtype), momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        output = (values - mean.view(shape)) / torch.sqrt(variance.view(shape) + self.eps)
        output = output.to(input.dtype)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return cast(Tensor, output)


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every BatchNorm layer inside ``module`` by a :class:`SyncBatchNorm`
    that holds the same parameter and buffer tensors (so an optimiser built before keeps
    them); returns ``module``, or the new layer when ``module`` itself is one."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SyncBatchNorm
    ):
        converted = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        # the same parameter and buffer tensors: optimisers and checkpoints keep them
        for name in ("weight", "bias"):
            setattr(converted, name, getattr(module, name))
        for name, buffer in module.named_buffers(recurse=False):
            setattr(converted, name, buffer)
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        replaced = convert_sync_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
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


@contextmanager
def raise_on_every_rank(enabled: bool = True) -> Iterator[None]:
    """Run argument checks so that an error raised on any rank is raised on every rank.

    Wrap the checks a component makes before a collective: when the input is bad on one rank
    only (a NaN, a batch of another width), that rank would raise while the others wait in the
    collective until the timeout. Inside this block every rank runs its checks; on leaving it,
    one ``all_reduce`` of an error flag (a collective: every rank must enter the block) tells
    each rank whether any failed. If one did, every rank raises the error of the lowest failing
    rank: a :class:`ValueError` or :class:`TypeError` as it was raised (other exceptions become
    a :class:`RuntimeError`), its message followed by ``" (raised on rank r of w)"``, chained to
    the local error on the ranks where the check failed::

        with raise_on_every_rank():
            check_features("features", features)
        features = all_gather(features)

    Single-process, or with ``enabled=False`` (a component that calls no collective), the block
    is a plain block: errors pass unchanged.
    """
    if not enabled or not is_distributed() or get_world_size() == 1:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as caught:  # every rank must learn of any failure
        error = caught
    flag = torch.tensor([int(error is not None)], device=_backend_device())
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    if int(flag.item()):
        _raise_first_error(error)


def _raise_first_error(error: Exception | None) -> None:
    """Raise the error of the lowest failing rank on every rank (a collective).

    Call on every rank once all of them know that at least one has an ``error``.
    """
    summary = None
    if error is not None:
        kind: type[Exception] = next(
            (k for k in (ValueError, TypeError) if isinstance(error, k)), RuntimeError
        )
        message = str(error) if kind is not RuntimeError else f"{type(error).__name__}: {error}"
        summary = (kind.__name__, message)
    summaries = all_gather_object(summary)
    rank = next(r for r, s in enumerate(summaries) if s is not None)
    kind_name, message = summaries[rank]
    kind = {"ValueError": ValueError, "TypeError": TypeError}.get(kind_name, RuntimeError)
    raise kind(f"{message} (raised on rank {rank} of {len(summaries)})") from error


def _agree_on_layout(tensor: Any, *, rows_may_differ: bool) -> list[int]:
    """Exchange every rank's row count and check that the ranks send tensors of one layout.

    A collective. With the row counts go a flag for a rank whose ``tensor`` is not a tensor (of
    at least one dimension when ``rows_may_differ``) and a checksum of its dtype and shape (the
    trailing shape when ``rows_may_differ``): when one rank sent something else, every rank
    raises the same :class:`ValueError`.

    Returns:
        The number of rows of every rank's ``tensor``.
    """
    error = None
    try:
        _check_collective_input(tensor, rows_may_differ)
    except ValueError as caught:
        error = caught
    layout, rows = "", 0
    if error is None:
        layout = f"{tuple(tensor.shape[1:] if rows_may_differ else tensor.shape)} {tensor.dtype}"
        rows = tensor.shape[0] if tensor.dim() else 0
    checksum = zlib.crc32(layout.encode())
    header = torch.tensor([int(error is not None), rows, checksum], device=_backend_device())
    headers = [torch.empty_like(header) for _ in range(get_world_size())]
    dist.all_gather(headers, header)
    counts: list[int]
    failed, counts, checksums = torch.stack(headers).T.tolist()
    if any(failed):
        _raise_first_error(error)
    if len(set(checksums)) > 1:
        compared = "trailing shape" if rows_may_differ else "shape"
        received = all_gather_object(layout)
        raise ValueError(
            f"tensor must have the same {compared} and dtype on every rank, got "
            + ", ".join(f"{sent} on rank {r}" for r, sent in enumerate(received))
        )
    return counts


def _check_collective_input(tensor: Any, needs_rows: bool) -> None:
    if not isinstance(tensor, Tensor) or (needs_rows and tensor.dim() < 1):
        expected = "a torch.Tensor" + (
            " with at least one dimension (B, ...)" if needs_rows else ""
        )
        got = (
            f"shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor) else type(tensor).__name__
        )
        raise ValueError(f"tensor must be {expected}, got {got}")


def _gather_padded(tensor: Any) -> tuple[list[Tensor], list[int]]:
    """All-gather tensors whose first dimension may differ between ranks (see
    :func:`_agree_on_layout` for what is checked first)."""
    world_size = get_world_size()
    counts = _agree_on_layout(tensor, rows_may_differ=True)
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
            shape and the dtype may not (every rank raises the same :class:`ValueError`).

    Returns:
        ``(sum_r B_r, ...)``: rank 0's rows first, then rank 1's, and so on. When not
        distributed, ``tensor`` itself. In backward, the gradient reaching this rank's slice is
        the sum over ranks of their gradients for it (see the module docstring).
    """
    if not is_distributed() or get_world_size() == 1:
        _check_collective_input(tensor, needs_rows=True)
        return tensor
    gathered: Tensor = _AllGatherWithGrad.apply(tensor)
    return gathered


def all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, without gradients.

    Args:
        tensor: ``(B_r, ...)`` on rank ``r`` (labels, detached features); ``B_r`` may differ,
            the trailing shape and the dtype may not (every rank raises the same
            :class:`ValueError`).

    Returns:
        ``(sum_r B_r, ...)`` in rank order; ``tensor`` itself when not distributed.
    """
    if not is_distributed() or get_world_size() == 1:
        _check_collective_input(tensor, needs_rows=True)
        return tensor
    with torch.no_grad():
        local = tensor.detach().to(_backend_device()) if isinstance(tensor, Tensor) else tensor
        parts, _ = _gather_padded(local)
    return torch.cat(parts, dim=0).to(tensor.device)


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over ranks (a new tensor, no gradient); ``tensor`` when alone.

    Every rank must pass a tensor of the same shape and dtype; otherwise every rank raises the
    same :class:`ValueError` (without the check, ``gloo`` returns a wrong sum on some ranks).
    """
    if not is_distributed() or get_world_size() == 1:
        _check_collective_input(tensor, needs_rows=False)
        return tensor
    _agree_on_layout(tensor, rows_may_differ=False)
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
