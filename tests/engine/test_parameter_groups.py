"""bias_parameter_groups: weights and biases split, frozen and shared parameters handled."""

from __future__ import annotations

import pytest
from torch import nn

from reidkit.engine import bias_parameter_groups, module_parameter_groups


def test_biases_get_the_factor_and_frozen_or_shared_parameters_are_handled() -> None:
    shared = nn.Linear(3, 3)
    first, second = nn.Sequential(shared, nn.Linear(3, 2)), nn.Sequential(shared)
    first[1].weight.requires_grad_(False)
    weights, biases = bias_parameter_groups([first, second], lr=1e-3, bias_lr_factor=2.0)
    assert weights["lr"] == 1e-3 and biases["lr"] == 2e-3
    assert [id(p) for p in weights["params"]] == [id(shared.weight)]
    assert [id(p) for p in biases["params"]] == [id(shared.bias), id(first[1].bias)]


def test_non_positive_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="lr and bias_lr_factor must be positive"):
        bias_parameter_groups(nn.Linear(2, 2), lr=0.0)


def test_each_named_submodule_gets_its_rate_and_the_rest_the_default() -> None:
    model = nn.ModuleDict(
        {
            "text_encoder": nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)),
            "image_encoder": nn.Linear(2, 2),
            "head": nn.Linear(2, 2),
        }
    )
    model["text_encoder"][1].weight.requires_grad_(False)
    model["head"].weight = model["image_encoder"].weight  # shared: listed once
    groups = module_parameter_groups(
        model, {"text_encoder": 1e-5, "text_encoder.1": 3e-5}, default_lr=1e-4
    )
    named = {id(p): name for name, p in model.named_parameters()}
    assert [(g["name"], g["lr"], [named[id(p)] for p in g["params"]]) for g in groups] == [
        ("text_encoder", 1e-5, ["text_encoder.0.weight", "text_encoder.0.bias"]),
        ("text_encoder.1", 3e-5, ["text_encoder.1.bias"]),
        ("default", 1e-4, ["image_encoder.weight", "image_encoder.bias", "head.bias"]),
    ]


def test_a_rate_for_nothing_or_a_bad_rate_is_an_error() -> None:
    model = nn.ModuleDict({"text": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="without trainable parameters: \\['texts'\\]"):
        module_parameter_groups(model, {"texts": 1e-5}, default_lr=1e-4)
    with pytest.raises(ValueError, match="learning rates must be positive"):
        module_parameter_groups(model, {"text": 0.0}, default_lr=1e-4)
