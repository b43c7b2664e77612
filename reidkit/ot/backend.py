"""The backend decision of every OT entry point: the fused Triton kernels or plain torch."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from reidkit.ot.options import SinkhornOptions


def use_triton(
    options: SinkhornOptions,
    supports: Callable[..., bool],
    requirement: str,
    **inputs: Tensor,
) -> bool:
    """Whether a call runs in the fused Triton kernels of :mod:`reidkit.kernels`.

    ``backend="torch"`` never does; ``"triton"`` always does, and raises if the kernels cannot
    (Triton missing, ``grad="unrolled"``, or inputs the kernel does not handle); ``"auto"`` does
    when they can and the inputs are CUDA tensors.

    Args:
        options: the solver options (their ``backend`` and ``grad``).
        supports: whether the kernel handles ``inputs`` (called with them in order), e.g.
            :func:`reidkit.kernels.triton_supports`.
        requirement: what ``supports`` asks for, completing the message of an explicit
            ``backend="triton"`` (``"a supported shape (see ...)"``).
        inputs: the tensors the kernel would take, by argument name; the first decides the
            device.

    Raises:
        ValueError: with ``backend="triton"`` when the kernels cannot run the call.
    """
    if options.backend == "torch":
        return False
    from reidkit.kernels import triton_available

    supported = options.grad != "unrolled" and triton_available() and supports(*inputs.values())
    if options.backend == "triton":
        if not supported:
            shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in inputs.items())
            raise ValueError(
                f"backend='triton' needs Triton, grad 'implicit' or 'envelope' and {requirement};"
                f" got {shapes}, grad={options.grad!r}"
            )
        return True
    return supported and next(iter(inputs.values())).is_cuda
