"""The package itself: a light import, lazily resolved public names, a version."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import reidkit


def test_import_reidkit_imports_neither_triton_nor_open_clip() -> None:
    code = (
        "import sys, reidkit; heavy = [m for m in ('triton', 'open_clip') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == ""


def test_the_ot_losses_and_selection_work_without_open_clip() -> None:
    # The GPU check times MMPL's OT part on machines that have torch and nothing else.
    code = (
        "import sys; sys.modules['open_clip'] = None\n"
        "import torch\n"
        "from reidkit import PatchToTokenAlignment, InformationSelectorAgent, SinkhornOT\n"
        "from reidkit.selection import stage1_diagnostics, HierarchicalPatchPartition\n"
        "loss = PatchToTokenAlignment()(torch.randn(2, 3, 8), torch.randn(4, 2, 8),"
        " torch.tensor([0, 3])).loss\n"
        "assert torch.isfinite(loss)\n"
        "try:\n"
        "    from reidkit.selection import HierarchicalPromptLearning\n"
        "except ImportError:\n"
        "    print('needs open_clip')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "needs open_clip"  # stage 1 as a whole encodes text


def test_version_is_a_release_string() -> None:
    major, minor, patch = reidkit.__version__.split(".")
    assert major.isdigit() and minor.isdigit() and patch.isdigit()


@pytest.mark.parametrize("name", sorted(reidkit._PUBLIC_NAMES))
def test_every_public_name_resolves_from_its_subpackage(name: str) -> None:
    module_name = reidkit._PUBLIC_NAMES[name]
    if importlib.util.find_spec(module_name) is None:
        pytest.fail(f"{name} is mapped to {module_name}, which does not exist")
    value = getattr(reidkit, name)
    assert value is getattr(importlib.import_module(module_name), name)
    assert name in dir(reidkit)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        reidkit.no_such_thing
