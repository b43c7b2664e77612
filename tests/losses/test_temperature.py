"""The temperature of the contrastive losses: a fixed one is the number, a learned one starts
there, is capped at ``max_scale`` and gets no gradient beyond the cap."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.losses import Temperature


def test_a_fixed_temperature_is_a_number_and_no_parameter() -> None:
    temperature = Temperature(0.05)
    assert temperature.scale() == pytest.approx(20.0) and isinstance(temperature.scale(), float)
    assert temperature.value() == pytest.approx(0.05)
    assert list(temperature.parameters()) == []


def test_a_learned_temperature_is_capped_and_stops_its_gradient_at_the_cap() -> None:
    temperature = Temperature(0.07, learnable=True, max_scale=50.0).double()
    assert temperature.log_scale is not None
    assert temperature.value() == pytest.approx(0.07)
    # below the cap: d scale / d log_scale = scale
    (grad,) = torch.autograd.grad(temperature.scale(), temperature.log_scale)
    assert float(grad) == pytest.approx(1 / 0.07)
    with torch.no_grad():
        temperature.log_scale.fill_(math.log(80.0))  # past the cap
    scale = temperature.scale()
    assert float(scale.detach()) == pytest.approx(50.0)
    assert temperature.value() == pytest.approx(1 / 50)
    (grad,) = torch.autograd.grad(scale, temperature.log_scale)
    assert float(grad) == 0.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial": 0.0}, r"temperature must be a finite number > 0, got 0\.0"),
        ({"initial": float("inf")}, r"temperature must be a finite number > 0, got inf"),
        ({"initial": 0.07, "max_scale": -1.0}, r"max_scale must be a finite number > 0"),
        ({"initial": 0.001, "max_scale": 100.0}, r"temperature must be >= 1 / max_scale = 0\.01"),
    ],
)
def test_bad_temperatures_are_refused(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Temperature(**arguments)
