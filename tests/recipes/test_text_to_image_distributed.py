"""UniPT and VAL-PAT under torchrun: two gloo processes train both stages, the queues hold the
keys of both ranks, and both ranks end with the same results (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidkit import distributed
from reidkit.data import SyntheticCaptionedReID, SyntheticReID
from reidkit.engine import read_checkpoint
from reidkit.recipes import Runtime, get_recipe, replace_field
from tests.gloo import WORLD_SIZE, join_group, run_on_ranks


def _worker(rank: int, port: int, name: str, output: str, results_dir: str) -> None:
    join_group(rank, port, timeout=300.0)
    try:
        recipe = get_recipe(name)
        # one epoch per stage, so no warm-up (a warm-up must be shorter than its stage)
        config = recipe.presets["tiny"]
        for stage in recipe.stage_epochs(config):
            config = replace_field(config, recipe.stage_field(config, stage, "warmup_epochs"), 0)
        config = recipe.with_epochs(config, [(None, 1)])
        results = recipe.train(
            config, Runtime(output_dir=output, device="cpu", num_workers=0, seed=3)
        )
        torch.save(results, Path(results_dir) / f"{rank}.pt")
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", ["unipt", "valpat"])
def test_two_processes_train_both_stages(tmp_path: Path, monkeypatch, name: str) -> None:
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path / "cache"))
    # the data are drawn once here, not by both ranks at once
    SyntheticCaptionedReID()
    SyntheticCaptionedReID(seed=1, num_train_ids=64, corruption_probability=0.2)
    SyntheticReID()
    output = tmp_path / "run"
    run_on_ranks(_worker, name, str(output), str(tmp_path), join_timeout=1800.0)
    first, second = (torch.load(tmp_path / f"{rank}.pt") for rank in range(WORLD_SIZE))
    assert first == second and name in first
    state = read_checkpoint(output / "last.pt")
    assert (state["stage"], state["stage_finished"]) == ("finetune", True)
    if name == "valpat":
        # 579 pre-training images in batches of 16 per rank: 18 steps of 2 x 16 gathered keys
        queue = state["objects"]["model"]["pretraining.model.text_queue.count"]
        assert int(queue) == 18 * 32
