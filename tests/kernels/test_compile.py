"""Every kernel variant compiles for sm_80 and sm_90a without spills, within the chip's limits.

Ahead-of-time compilation with Triton and its ptxas (:mod:`reidkit.kernels.aot`), on a machine
without a GPU; a few minutes on two cores, hence its own marker and CI step
(``pytest -m compile``). ``benchmarks/kernel_compile.py`` writes the same table to
``benchmarks/results/``.
"""

from __future__ import annotations

import pytest

from reidkit.kernels import aot, launch
from tests.kernels.helpers import KERNEL_MARKS

pytestmark = [*KERNEL_MARKS, pytest.mark.compile]


@pytest.fixture(scope="module")
def reports() -> list[aot.CompileReport]:
    return aot.compile_reports()


def test_every_variant_is_compiled_for_every_architecture(
    reports: list[aot.CompileReport], capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print("\n" + aot.format_table(reports))
    expected = {
        (variant.name, variant.setting, arch.name)
        for variant in aot.kernel_variants()
        for arch in aot.ARCHITECTURES
    }
    assert {(r.kernel, r.setting, r.arch) for r in reports} == expected
    assert len(reports) == len(expected)


def test_no_variant_fails_spills_or_exceeds_the_chip(reports: list[aot.CompileReport]) -> None:
    failures = {f"{r.kernel} {r.setting} {r.arch}": r.violations() for r in reports}
    assert {variant: found for variant, found in failures.items() if found} == {}


def test_the_paper_shapes_are_served(reports: list[aot.CompileReport]) -> None:
    for name in aot.NAMED_SHAPES:
        assert any(name in r.serves for r in reports), name
    mmpl = {r.setting for r in reports if r.kernel == "pairwise_forward" and "80x8" in r.serves}
    setting = launch.pairwise_launch(80, 8).describe()
    assert mmpl == {f"{setting} {dtype}" for dtype in launch.TRITON_TYPES.values()}
