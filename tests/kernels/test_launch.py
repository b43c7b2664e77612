"""Launch settings: every accepted shape picks an enumerated setting, the compile check's
declarations match the kernels, and its resource arithmetic against hand-computed values."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from reidkit.kernels import aot, launch
from tests.kernels.helpers import KERNEL_MARKS

pytestmark = KERNEL_MARKS


def test_every_shape_the_cost_tile_kernel_accepts_picks_an_enumerated_setting() -> None:
    settings = set(launch.cost_tile_launches())
    chosen = set()
    for m in range(1, launch.MAX_TILE + 1):
        for n in range(1, launch.MAX_TILE // launch.padded_block(m, launch.MIN_COST_BLOCK) + 1):
            if launch.cost_tile_fits(m, n):
                chosen.add(launch.cost_tile_launch(m, n))
    assert chosen == settings
    assert not launch.cost_tile_fits(1, 4097) and not launch.cost_tile_fits(129, 32)


@pytest.mark.parametrize("backward", [False, True])
def test_every_shape_the_feature_kernels_accept_picks_an_enumerated_setting(
    backward: bool,
) -> None:
    settings = set(launch.pairwise_launches(backward))
    chosen = {
        launch.pairwise_launch(m, n, backward)
        for m in range(1, 300)
        for n in range(1, 40)
        if launch.pairwise_fits(m, n)
    }
    assert chosen == settings
    assert launch.pairwise_fits(256, 16) and not launch.pairwise_fits(257, 16)
    assert launch.pairwise_fits(128, 32) and not launch.pairwise_fits(2, 33)


def test_settings_respect_the_rules_of_the_launch_module() -> None:
    threads_per_warp = launch.THREADS_PER_WARP
    for setting in launch.cost_tile_launches():
        tile = setting.problems * setting.block_m * setting.block_n
        assert launch.MIN_WARPS <= setting.num_warps <= launch.MAX_WARPS
        assert setting.block_m * setting.block_n <= launch.MAX_TILE
        assert setting.problems <= launch.MAX_PROBLEMS
        assert tile // (setting.num_warps * threads_per_warp) <= 4 * launch.TILE_ENTRIES_PER_THREAD
    for backward in (False, True):
        for setting in launch.pairwise_launches(backward):
            assert launch.MIN_DOT_BLOCK <= setting.block_d <= launch.MAX_BLOCK_D
            assert min(setting.block_m, setting.block_n) >= launch.MIN_DOT_BLOCK
            assert setting.num_warps <= launch.MAX_BACKWARD_WARPS
    # The shapes of the papers each get their own setting.
    assert launch.cost_tile_launch(10, 4) == launch.CostTileLaunch(16, 4, 16, 8)
    assert launch.pairwise_launch(80, 8) == launch.PairwiseLaunch(128, 16, 32, 8)


def test_aligned_and_padded_features() -> None:
    features = torch.randn(3, 5, 21)
    view = features.flatten()[1:64].reshape(7, 9)  # 4 bytes past an aligned start
    assert view.data_ptr() % launch.POINTER_ALIGNMENT != 0
    copied = launch.aligned(view)
    assert copied.data_ptr() % launch.POINTER_ALIGNMENT == 0 and torch.equal(copied, view)
    padded = launch.padded_features(features)
    assert padded.shape == (3, 5, 32)
    assert torch.equal(padded[..., :21], features) and not padded[..., 21:].any()
    already = torch.randn(2, 3, 16)
    assert launch.padded_features(already).data_ptr() == already.data_ptr()


def test_the_declared_compile_signatures_match_the_kernels() -> None:
    variants = aot.kernel_variants()
    for variant in variants:
        aot.check_signature(variant)
    # 45 cost-tile settings, 9 feature-level settings x 3 dtypes, backward x 2 gradient modes.
    assert len(variants) == 45 + 27 + 54
    broken = variants[0]
    missing = dict(broken.signature)
    missing.pop("batch")
    with pytest.raises(ValueError, match="do not match the kernel's parameters"):
        aot.check_signature(dataclasses.replace(broken, signature=missing))
    specialised = dict(broken.signature, epsilon="i32")  # an integer the JIT would specialise
    with pytest.raises(ValueError, match=r"\['epsilon'\] are not in the kernel's do_not_spec"):
        aot.check_signature(dataclasses.replace(broken, signature=specialised))


def test_occupancy_follows_registers_shared_memory_and_warps() -> None:
    sm80, sm90 = aot.ARCHITECTURES
    # 255 registers round up to 256 per thread: 8192 per warp, 8 warps per SM.
    assert sm90.occupancy(255, 0, 8) == (1, 8 / 64)
    assert sm90.occupancy(255, 0, 2) == (4, 8 / 64)
    # 64 registers: 2048 per warp, 32 warps; 32 programs of 1 warp fill half the SM.
    assert sm90.occupancy(64, 0, 4) == (8, 32 / 64)
    assert sm90.occupancy(64, 0, 1) == (32, 32 / 64)
    # 33 registers round up to 40 per thread (1280 per warp): 51 warps, 12 programs of 4.
    assert sm80.occupancy(33, 0, 4) == (12, 48 / 64)
    # Shared memory: 100 KiB + 1 KiB reserved per program: one program on an A100 SM, two on
    # an H100 SM.
    assert sm80.occupancy(32, 100 * 1024, 4)[0] == 1
    assert sm90.occupancy(32, 100 * 1024, 4)[0] == 2


def test_violations_name_what_is_wrong() -> None:
    good = aot.CompileReport("k", "s", "sm_90a", 4, 128, 0, 0, 1024, 4, 0.25)
    assert good.violations() == []
    spilling = dataclasses.replace(good, spill_stores=8, spill_loads=4)
    assert spilling.violations() == ["spills 8 B stored, 4 B loaded"]
    too_much = dataclasses.replace(good, shared_bytes=232449, programs_per_sm=0)
    assert too_much.violations() == ["232449 B shared > 232448", "no program fits on an SM"]
    failed = dataclasses.replace(good, error="CompilationError: no")
    assert failed.violations() == ["does not compile: CompilationError: no"]


def test_ptxas_log_parsing() -> None:
    log = (
        "ptxas info    : 11 bytes gmem\n"
        "ptxas info    : Compiling entry function 'kernel' for 'sm_90a'\n"
        "ptxas info    : Function properties for kernel\n"
        "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 80 registers, used 1 barriers, 512 bytes smem, 8 bytes "
        "cumulative stack size\n"
    )
    assert aot.parse_ptxas_log(log) == (80, 4, 12, 512)
    with pytest.raises(ValueError, match="no register count"):
        aot.parse_ptxas_log("ptxas fatal   : Unresolved extern function")


class _Recorder:
    """Stands in for a ``triton.jit`` kernel and records its launches instead of running."""

    def __init__(self) -> None:
        self.launches: list[tuple[tuple, dict]] = []

    def __getitem__(self, grid: tuple):
        def launch(*args: object, **kwargs: object) -> None:
            self.launches.append((args, kwargs))

        return launch


def _launch(monkeypatch: pytest.MonkeyPatch, module: object, kernel: str, call) -> tuple:
    """The arguments ``call()`` launches ``module.kernel`` with, by parameter name."""
    original, recorder = getattr(module, kernel), _Recorder()
    monkeypatch.setattr(module, kernel, recorder)
    call()
    ((args, kwargs),) = recorder.launches
    options = {name: kwargs.pop(name, None) for name in ("num_warps", "num_stages")}
    bound = inspect.signature(original.fn).bind(*args, **kwargs)
    return original, bound.arguments, options


# Listed before any kernel is replaced by a recorder.
VARIANTS = aot.kernel_variants()


def _assert_compiled_variant(kernel, arguments: dict, options: dict, name: str) -> None:
    """The launch is one of the variants the compile check compiles, argument by argument."""
    matches = [
        variant
        for variant in VARIANTS
        if variant.kernel is kernel
        and variant.name == name
        and all(arguments[key] == value for key, value in variant.constexprs.items())
        and all(
            launch.TRITON_TYPES.get(arguments[key].dtype) == kind[1:]
            for key, kind in variant.signature.items()
            if kind[1:] in launch.TRITON_TYPES.values() and isinstance(arguments[key], torch.Tensor)
        )
    ]
    assert len(matches) == 1
    variant = matches[0]
    assert options == {"num_warps": variant.num_warps, "num_stages": variant.num_stages}
    python_types = {"i32": int, "fp32": float}
    for key, kind in variant.signature.items():
        value = arguments[key]
        if kind.startswith("*"):
            assert isinstance(value, torch.Tensor) and value.is_contiguous()
            assert value.data_ptr() % launch.POINTER_ALIGNMENT == 0
        else:
            assert type(value) is python_types[kind], (key, value)


def test_launchers_launch_exactly_the_compiled_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    from reidkit.kernels import cost_tile, pairwise_backward, pairwise_forward

    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(5, 10, 4, generator=generator).half()  # converted to float32 first
    marginal_a, marginal_b = torch.full((5, 10), 0.1), torch.full((5, 4), 0.25)
    kernel, arguments, options = _launch(
        monkeypatch, cost_tile, "_sinkhorn_cost_kernel",
        lambda: cost_tile.sinkhorn_potentials(cost, marginal_a, marginal_b, 0.1, 9, 1e-3, "update"),
    )  # fmt: skip
    _assert_compiled_variant(kernel, arguments, options, "cost_tile")
    assert arguments["PROBLEMS"] == 16 and arguments["stop_rule"] == 2

    x = torch.randn(3, 80, 70, generator=generator).to(torch.bfloat16)  # D padded to 80
    y = torch.randn(4, 8, 70, generator=generator).to(torch.bfloat16)[1:]  # an offset view
    kernel, arguments, options = _launch(
        monkeypatch, pairwise_forward, "_pairwise_kernel",
        lambda: pairwise_forward.pairwise_potentials(x, y, None, 0.1, 50, None, "marginal"),
    )  # fmt: skip
    _assert_compiled_variant(kernel, arguments, options, "pairwise_forward")
    assert arguments["d"] == 80 and arguments["stop_rule"] == 0

    f, g = torch.zeros(3, 3, 80), torch.zeros(3, 3, 8)
    kernel, arguments, options = _launch(
        monkeypatch, pairwise_backward, "_similarity_gradient_kernel",
        lambda: pairwise_backward.pairwise_feature_grads(
            x, y, f, g, torch.ones(3, 3), 0.1, "implicit"
        ),
    )  # fmt: skip
    _assert_compiled_variant(kernel, arguments, options, "pairwise_backward_implicit")


def test_architectures_by_capability() -> None:
    assert aot.architecture(90).name == "sm_90a" and aot.architecture(80).name == "sm_80"
    with pytest.raises(ValueError, match=r"capability must be one of \[80, 90\], got 86"):
        aot.architecture(86)
