"""bias_parameter_groups: weights and biases split, frozen and shared parameters handled."""

from __future__ import annotations

import pytest
from torch import nn

from reidkit.engine import bias_parameter_groups


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
