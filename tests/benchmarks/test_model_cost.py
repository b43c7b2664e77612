"""The cost benchmark counts every product of a model, attention included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "model_cost.py"


def test_flops_of_the_tiny_clip_reid_model_match_a_count_by_hand() -> None:
    spec = importlib.util.spec_from_file_location("model_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model_cost"] = module
    spec.loader.exec_module(module)
    from reidkit.recipes import clip_reid
    from reidkit.recipes.common import clip_model_spec

    tiny = clip_reid.PRESETS["tiny"]
    cost = module.model_cost(clip_model_spec("clip_reid", "clip_reid", tiny.clip, tiny.data, 10))
    # The tiny CLIP: width 64, 2 blocks of 4 heads, MLP 256, 16x16 patches of a 128x64 image:
    # 32 patches and N = 33 tokens; 2 FLOPs per multiply-add.
    tokens, width, hidden, patches = 33, 64, 256, 32
    embedding = 2 * patches * width * (3 * 16 * 16)
    block = (
        2 * tokens * width * 3 * width  # packed q, k, v projection
        + 4 * tokens * tokens * width  # q k^T and attention times v, over the heads
        + 2 * tokens * width * width  # output projection
        + 2 * 2 * tokens * width * hidden  # the MLP's two layers
    )
    projection = 2 * (1 + patches) * width * 64  # class token and patch map to the joint space
    assert cost["flops"] == embedding + 2 * block + projection
