"""The package's argument checks: what they accept, and the exact words of what they refuse."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from reidkit import checks


def _raises(message: str):
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(
    ("arguments", "keywords"),
    [(("k1", 1, 1), {}), (("k", 5, 1, 5), {}), (("epochs", 0, 0), {}), (("n", -3), {})],
)
def test_integers_in_range_pass(arguments, keywords) -> None:
    checks.check_integer(*arguments, **keywords)
    checks.check_integer("chunk_size", None, 1, optional=True)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: checks.check_integer("k1", 0, 1), "k1 must be an integer >= 1, got 0"),
        (lambda: checks.check_integer("k1", True, 1), "k1 must be an integer >= 1, got True"),
        (lambda: checks.check_integer("k1", 2.0, 1), "k1 must be an integer >= 1, got 2.0"),
        (lambda: checks.check_integer("k1", None, 1), "k1 must be an integer >= 1, got None"),
        (
            lambda: checks.check_integer("chunk_size", "8", 1, optional=True),
            "chunk_size must be None or an integer >= 1, got '8'",
        ),
        (lambda: checks.check_integer("k", 6, 1, 5), "k must be an integer in [1, 5], got 6"),
        (lambda: checks.check_integer("k", 6, None, 5), "k must be an integer <= 5, got 6"),
        (lambda: checks.check_integer("total", 1.5), "total must be an integer, got 1.5"),
    ],
)
def test_bad_integers_are_named_with_their_range(call, message) -> None:
    with _raises(message):
        call()


def test_numbers_in_range_pass() -> None:
    checks.check_number("temperature", 0.07, above=0)
    checks.check_number("epsilon", 0, at_least=0, below=1)
    checks.check_number("gamma", np.float32(1.0), above=0, at_most=1)
    checks.check_number("margin", None, above=0, optional=True)
    checks.check_number("scale", float("inf"), above=0)
    checks.check_number("offset", -2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: checks.check_number("temperature", 0, above=0),
            "temperature must be > 0, got 0",
        ),
        (
            lambda: checks.check_number("temperature", float("nan"), above=0),
            "temperature must be > 0, got nan",
        ),
        (
            lambda: checks.check_number("temperature", True, above=0),
            "temperature must be > 0, got True",
        ),
        (
            lambda: checks.check_number("margin", -1.0, at_least=0),
            "margin must be >= 0, got -1.0",
        ),
        (
            lambda: checks.check_number("epsilon", 1.0, at_least=0, below=1),
            "epsilon must be in [0, 1), got 1.0",
        ),
        (
            lambda: checks.check_number("eps", 0.0, above=0, at_most=1),
            "eps must be in (0, 1], got 0.0",
        ),
        (lambda: checks.check_number("rate", 2, at_most=1), "rate must be <= 1, got 2"),
        (
            lambda: checks.check_number("epsilon", float("inf"), above=0, finite=True),
            "epsilon must be a finite number > 0, got inf",
        ),
        (
            lambda: checks.check_number("margin", "0.3", above=0, optional=True),
            "margin must be None or > 0, got '0.3'",
        ),
        (lambda: checks.check_number("weight", "x"), "weight must be a number, got 'x'"),
    ],
)
def test_bad_numbers_are_named_with_their_bounds(call, message) -> None:
    with _raises(message):
        call()


def test_choices() -> None:
    checks.check_choice("reduction", "sum", ("mean", "sum", "none"))
    with _raises("reduction must be one of ('mean', 'sum', 'none'), got 'max'"):
        checks.check_choice("reduction", "max", ("mean", "sum", "none"))


def test_scales() -> None:
    for scale in (None, 2.0, 3, torch.tensor(1.5), torch.ones(1, requires_grad=True)):
        checks.check_scale("logit_scale", scale)
    with _raises("logit_scale must be finite and > 0, got -1.0"):
        checks.check_scale("logit_scale", -1.0)
    with _raises("logit_scale must be a number or a one-element floating-point tensor, got str"):
        checks.check_scale("logit_scale", "2")
    with _raises(
        "logit_scale must be a number or a one-element floating-point tensor, got a "
        "torch.int64 tensor of shape (1,)"
    ):
        checks.check_scale("logit_scale", torch.ones(1, dtype=torch.long))


def test_tensor_checks() -> None:
    features = torch.randn(3, 4)
    checks.check_float_matrix("features", features)
    checks.check_labels("labels", torch.tensor([0, 2, 1]), 3)
    checks.check_same_width("targets", torch.randn(5, 4), "anchors", features)
    with _raises(
        "features must be a floating-point tensor of shape (N, D), got shape (3,) and dtype "
        "torch.float32"
    ):
        checks.check_float_matrix("features", torch.randn(3))
    with _raises("features must be a floating-point tensor of shape (N, D), got list"):
        checks.check_float_matrix("features", [[1.0]])
    with _raises(
        "labels must be an integer tensor of shape (3,), got shape (3,) and dtype torch.bool"
    ):
        checks.check_labels("labels", torch.zeros(3, dtype=torch.bool), 3)
    with _raises("targets must have the anchors' width 4, got shape (5, 3)"):
        checks.check_same_width("targets", torch.randn(5, 3), "anchors", features)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_finiteness(bad) -> None:
    values = torch.zeros(4, 5)
    assert checks.is_finite(values) and checks.is_finite(torch.zeros(0, 3))
    values[2, 3] = bad
    assert not checks.is_finite(values)
    with _raises("distmat must be finite; found NaN or inf"):
        checks.check_finite("distmat", values)


def test_matrices_from_numpy_torch_and_lists() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    shared = checks.as_matrix("distmat", array)
    array[0, 0] = 7.0
    assert shared[0, 0] == 7.0  # numpy memory is shared, not copied
    assert checks.as_matrix("distmat", [[1.0, 2.0]]).shape == (1, 2)
    half = torch.zeros(2, 2, dtype=torch.float16, requires_grad=True)
    as_given = checks.as_matrix("distmat", half)
    assert as_given.dtype == torch.float16 and not as_given.requires_grad
    with _raises("distmat must have shape (M, N), got shape (3,)"):
        checks.as_matrix("distmat", np.zeros(3))
    with _raises("distmat must hold floating-point values, got dtype torch.int64"):
        checks.as_matrix("distmat", torch.zeros(2, 2, dtype=torch.long))
    with _raises("distmat must be a numpy array, a torch tensor or a list of numbers, got str"):
        checks.as_matrix("distmat", "0.5")
