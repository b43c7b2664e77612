"""Which inputs the fused kernels take, and the torch fallback for the others."""

from __future__ import annotations

import pytest
import torch

from reidkit import pairwise_ot_distance, sinkhorn
from reidkit.kernels import triton_supports, triton_supports_pairwise
from tests.kernels.helpers import DEVICE, KERNEL_MARKS, unit_features

pytestmark = KERNEL_MARKS


@pytest.mark.parametrize(
    ("shape", "supported"),
    [
        ((2, 128, 32), True),  # the largest MMPL-like tile
        ((2, 5, 128), True),  # AAformer: 5 parts x 128 patches
        ((2, 1, 1), True),
        ((2, 129, 32), False),  # pads to 256 x 32 > 4096 entries
        ((2, 3, 4097), False),
        ((128, 32), False),  # not a flat batch
    ],
)
def test_cost_kernel_shape_limits(shape: tuple, supported: bool) -> None:
    assert triton_supports(torch.rand(shape, device=DEVICE)) is supported


def test_cost_kernel_rejects_float64() -> None:
    assert not triton_supports(torch.rand(2, 4, 4, device=DEVICE, dtype=torch.float64))


@pytest.mark.parametrize(
    ("m", "n", "supported"),
    [
        (80, 8, True),
        (128, 32, True),
        (200, 16, True),
        (1, 1, True),
        (5, 33, False),
        (257, 16, False),
    ],
)
def test_pairwise_kernel_shape_limits(m: int, n: int, supported: bool) -> None:
    x, y = unit_features(0, 2, m, 8), unit_features(1, 3, n, 8)
    assert triton_supports_pairwise(x, y) is supported


def test_pairwise_kernel_needs_one_supported_dtype() -> None:
    x, y = unit_features(0, 2, 4, 8), unit_features(1, 3, 2, 8)
    assert triton_supports_pairwise(x.half(), y.half())
    assert not triton_supports_pairwise(x, y.half())
    assert not triton_supports_pairwise(x.double(), y.double())


# On a GPU machine CPU tensors never reach the kernels; the check concerns CPU-only machines.
@pytest.mark.skipif(DEVICE == "cuda", reason="CPU tensors without the interpreter")
def test_cpu_tensors_need_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_supports(torch.rand(2, 4, 4))
    assert not triton_supports_pairwise(unit_features(0, 2, 4, 8), unit_features(1, 3, 2, 8))


def test_explicit_triton_backend_on_unsupported_input_raises() -> None:
    with pytest.raises(ValueError, match="backend='triton'"):
        sinkhorn(torch.rand(2, 200, 33, device=DEVICE), epsilon=0.1, backend="triton")
    x, y = unit_features(0, 2, 4, 8), unit_features(1, 3, 33, 8)
    with pytest.raises(ValueError, match="backend='triton'"):
        pairwise_ot_distance(x, y, backend="triton")
    with pytest.raises(ValueError, match=r"backend='triton'.*grad 'implicit' or 'envelope'"):
        pairwise_ot_distance(x, y[:, :4], backend="triton", grad="unrolled")
    with pytest.raises(ValueError, match="epsilon"):
        pairwise_ot_distance(x, y[:, :4], backend="triton", epsilon=0.0)


# backend="auto" is meant to pick Triton on CUDA: the CPU default only exists without a GPU.
@pytest.mark.skipif(DEVICE == "cuda", reason="checks the CPU default")
def test_auto_backend_keeps_cpu_tensors_on_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fused kernel ran on CPU tensors with backend='auto'")

    from reidkit.kernels import cost_tile, pairwise_forward

    monkeypatch.setattr(cost_tile, "sinkhorn_potentials", fail)
    monkeypatch.setattr(pairwise_forward, "pairwise_potentials", fail)
    result = sinkhorn(torch.rand(2, 4, 3), epsilon=0.1)
    assert torch.isfinite(result.distance).all()
    x, y = unit_features(0, 2, 4, 8), unit_features(1, 3, 2, 8)
    distance = pairwise_ot_distance(x, y, on_nonconvergence="ignore")
    assert torch.isfinite(distance).all()


def test_the_old_module_path_still_resolves_with_a_deprecation_warning() -> None:
    from reidkit.kernels import cost_tile, pairwise_backward, pairwise_forward
    from reidkit.kernels import sinkhorn_kernels as old

    moved = {
        "sinkhorn_potentials": cost_tile,
        "pairwise_potentials": pairwise_forward,
        "pairwise_feature_grads": pairwise_backward,
    }
    for name, home in moved.items():
        with pytest.warns(DeprecationWarning, match=f"moved to {home.__name__}.{name}"):
            assert getattr(old, name) is getattr(home, name)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        old.missing
