"""The shared builders: the frozen-feature cache, the stages' optimisers, the registry."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from reidkit.recipes import RECIPES, get_recipe
from reidkit.recipes.common import (
    cache_frozen_features,
    image_stage_optimizer,
    prompt_stage_optimizer,
)
from reidkit.recipes.config import ImageStageConfig, PromptStageConfig


def test_the_cache_holds_every_output_of_every_image_in_order() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(7, 3, 4, 2, generator=generator)
    loader = DataLoader(TensorDataset(images, torch.arange(7)), batch_size=3)
    layer = torch.nn.Linear(8, 5)

    def encode(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return layer(batch.mean(1).flatten(1)), batch.amax(dim=(1, 2, 3))

    projected, peaks = cache_frozen_features(encode, loader, torch.device("cpu"))
    expected_projected, expected_peaks = encode(images)
    torch.testing.assert_close(projected, expected_projected)
    torch.testing.assert_close(peaks, expected_peaks)
    assert not projected.requires_grad  # computed once, outside any graph


def test_an_empty_loader_is_an_error() -> None:
    loader = DataLoader(TensorDataset(torch.zeros(0, 3, 2, 2)), batch_size=2)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        cache_frozen_features(lambda batch: (batch,), loader, torch.device("cpu"))


def test_the_prompt_stage_warms_up_then_decays_to_its_minimum() -> None:
    stage = PromptStageConfig(
        epochs=6, lr=1e-2, weight_decay=0.0, warmup_epochs=2, warmup_lr=1e-3, min_lr=1e-4
    )
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer, scheduler = prompt_stage_optimizer([parameter], stage)
    rates = []
    for _ in range(stage.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), scheduler.step()
    assert rates[0] == pytest.approx(1e-3) and rates[2] == pytest.approx(1e-2)
    assert rates[-1] > 1e-4 and all(a >= b for a, b in itertools.pairwise(rates[2:]))


def test_the_image_stage_gives_biases_their_factor_and_steps_at_the_milestones() -> None:
    stage = ImageStageConfig(
        epochs=5,
        lr=1e-3,
        weight_decay=1e-4,
        bias_lr_factor=2.0,
        warmup_epochs=1,
        warmup_factor=0.1,
        milestones=(3,),
    )
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = image_stage_optimizer(model, stage)
    weights, biases = optimizer.param_groups
    assert weights["params"] == [model.weight] and biases["params"] == [model.bias]
    rates = []
    for _ in range(stage.epochs):
        rates.append((weights["lr"], biases["lr"]))
        optimizer.step(), scheduler.step()
    expected = [(1e-4, 2e-4), (1e-3, 2e-3), (1e-3, 2e-3), (1e-4, 2e-4), (1e-4, 2e-4)]
    assert rates == [pytest.approx(pair) for pair in expected]


def test_the_registry_names_its_recipes() -> None:
    assert sorted(RECIPES) == ["aaformer", "clip_reid", "mmpl", "pcl_clip", "unipt", "valpat"]
    assert get_recipe("mmpl").name == "mmpl"
    with pytest.raises(ValueError, match=r"name must be one of \['aaformer'"):
        get_recipe("fastreid")
