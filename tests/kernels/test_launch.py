"""Launch settings: every accepted shape picks an enumerated setting, the compile check's
declarations match the kernels, and its resource arithmetic against hand-computed values."""

from __future__ import annotations

import dataclasses

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
