"""SinkhornOptions: validated once, frozen, plain data; the keywords of the OT entry points; the
backend decision; the consumers' former keywords."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

import numpy as np
import pytest
import torch

from reidkit import PatchToTokenAlignment, SinkhornOT, pairwise_ot_distance, sinkhorn
from reidkit.distances import EuclideanDistance
from reidkit.kernels import triton_available, triton_supports
from reidkit.ot import SinkhornOptions
from reidkit.ot.backend import use_triton
from reidkit.selection.alignment import ALIGNMENT_OPTIONS


def _raises(error: type[Exception], message: str):
    return pytest.raises(error, match=f"^{re.escape(message)}$")


def test_defaults_are_the_solvers() -> None:
    options = SinkhornOptions(epsilon=0.1)
    assert dataclasses.asdict(options) == {
        "epsilon": 0.1,
        "max_iter": 50,
        "tol": 1e-3,
        "stop_rule": "marginal",
        "grad": "implicit",
        "backend": "auto",
        "on_nonconvergence": "warn",
        "check_every": 10,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must be a finite number > 0, got 0.0"),
        ({"epsilon": -1}, "epsilon must be a finite number > 0, got -1.0"),
        ({"epsilon": float("nan")}, "epsilon must be a finite number > 0, got nan"),
        ({"epsilon": float("inf")}, "epsilon must be a finite number > 0, got inf"),
        ({"epsilon": True}, "epsilon must be a finite number > 0, got True"),
        ({"epsilon": "0.1"}, "epsilon must be a finite number > 0, got '0.1'"),
        (
            {"epsilon": torch.tensor([0.1])},
            "epsilon must be a finite number > 0, got tensor([0.1000])",
        ),
        ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
        ({"max_iter": 2.0}, "max_iter must be an integer >= 1, got 2.0"),
        ({"max_iter": True}, "max_iter must be an integer >= 1, got True"),
        ({"tol": -1e-3}, "tol must be None or >= 0, got -0.001"),
        ({"tol": "small"}, "tol must be None or >= 0, got 'small'"),
        ({"check_every": 0}, "check_every must be an integer >= 1, got 0"),
        (
            {"stop_rule": "never"},
            "stop_rule must be one of ('marginal', 'update'), got 'never'",
        ),
        (
            {"grad": "magic"},
            "grad must be one of ('implicit', 'envelope', 'unrolled'), got 'magic'",
        ),
        ({"backend": "cuda"}, "backend must be one of ('auto', 'torch', 'triton'), got 'cuda'"),
        (
            {"on_nonconvergence": "never"},
            "on_nonconvergence must be one of ('ignore', 'warn', 'raise'), got 'never'",
        ),
    ],
)
def test_bad_fields_are_refused_by_name(fields: dict, message: str) -> None:
    with _raises(ValueError, message):
        SinkhornOptions(**{"epsilon": 0.1, **fields})


def test_numpy_scalars_and_0d_tensors_are_stored_as_python_numbers() -> None:
    options = SinkhornOptions(
        epsilon=np.float32(0.25),
        max_iter=np.int64(7),
        tol=torch.tensor(0.5),
        check_every=np.int8(3),
    )
    assert options == SinkhornOptions(epsilon=0.25, max_iter=7, tol=0.5, check_every=3)
    assert [type(value) for value in dataclasses.astuple(options)[:3]] == [float, int, float]
    assert type(options.check_every) is int
    assert SinkhornOptions(epsilon=1, tol=0).tol == 0.0
    assert SinkhornOptions(epsilon=1, tol=None).tol is None


def test_options_are_frozen_keyword_only_and_validated_again_when_replaced() -> None:
    options = SinkhornOptions(epsilon=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.epsilon = 0.2  # type: ignore[misc]
    with pytest.raises(TypeError):
        SinkhornOptions(0.1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        SinkhornOptions()  # type: ignore[call-arg]
    with _raises(ValueError, "max_iter must be an integer >= 1, got 0"):
        dataclasses.replace(options, max_iter=0)
    assert hash(options) == hash(SinkhornOptions(epsilon=0.1))


def test_options_round_trip_through_a_dict_and_json() -> None:
    options = SinkhornOptions(
        epsilon=0.05, max_iter=3, tol=None, stop_rule="update", grad="envelope", backend="torch"
    )
    stored = json.loads(json.dumps(dataclasses.asdict(options)))
    assert SinkhornOptions(**stored) == options


def _cost(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 6, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_entry_points_take_options_or_their_fields_as_keywords() -> None:
    cost = _cost()
    options = SinkhornOptions(epsilon=0.2, max_iter=80, tol=1e-6)
    by_keywords = sinkhorn(cost, epsilon=0.2, max_iter=80, tol=1e-6)
    by_options = sinkhorn(cost, options=options)
    assert torch.equal(by_keywords.plan, by_options.plan)
    assert torch.equal(by_keywords.n_iter, by_options.n_iter)
    # keywords override the given options' fields
    overridden = sinkhorn(cost, options=dataclasses.replace(options, max_iter=2), max_iter=80)
    assert torch.equal(overridden.plan, by_options.plan)
    assert SinkhornOT(options).options is options
    assert SinkhornOT(epsilon=0.2, max_iter=80, tol=1e-6).options == options
    assert SinkhornOT(options, max_iter=5).options == dataclasses.replace(options, max_iter=5)
    assert torch.equal(SinkhornOT(options)(cost).plan, by_options.plan)
    assert repr(SinkhornOT(options)) == (
        "SinkhornOT(epsilon=0.2, max_iter=80, tol=1e-06, stop_rule='marginal', grad='implicit', "
        "backend='auto', on_nonconvergence='warn', check_every=10)"
    )
    x, y = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
    assert torch.equal(
        pairwise_ot_distance(x, y, options=options), pairwise_ot_distance(x, y, **vars(options))
    )
    # pairwise_ot_distance alone has a default epsilon, MMPL's 0.1
    assert torch.equal(pairwise_ot_distance(x, y), pairwise_ot_distance(x, y, epsilon=0.1))


def test_entry_points_name_a_wrong_or_missing_keyword() -> None:
    fields = "epsilon, max_iter, tol, stop_rule, grad, backend, on_nonconvergence, check_every"
    with _raises(
        TypeError,
        "sinkhorn got an unexpected keyword argument 'maxiter'; its solver settings are the "
        f"fields of SinkhornOptions: {fields}",
    ):
        sinkhorn(_cost(), epsilon=0.1, maxiter=5)
    with _raises(TypeError, "sinkhorn needs epsilon= (or options=SinkhornOptions(epsilon=...))"):
        sinkhorn(_cost())
    with _raises(TypeError, "SinkhornOT needs epsilon= (or options=SinkhornOptions(epsilon=...))"):
        SinkhornOT()
    with _raises(TypeError, "options must be a reidkit.SinkhornOptions or None, got dict"):
        sinkhorn(_cost(), options={"epsilon": 0.1})
    with _raises(ValueError, "epsilon must be a finite number > 0, got 0.0"):
        SinkhornOT(epsilon=0.0)


def test_the_backend_decision() -> None:
    cost = torch.rand(2, 4, 3)
    torch_only = SinkhornOptions(epsilon=0.1, backend="torch")
    assert not use_triton(torch_only, triton_supports, "", cost=cost)
    # "auto" runs the kernels only on CUDA tensors, even where the interpreter could run them
    auto = SinkhornOptions(epsilon=0.1)
    assert use_triton(auto, triton_supports, "", cost=cost) == (
        cost.is_cuda and triton_available() and triton_supports(cost)
    )
    never = SinkhornOptions(epsilon=0.1, backend="triton")
    with _raises(
        ValueError,
        "backend='triton' needs Triton, grad 'implicit' or 'envelope' and what it needs; got "
        "x (2, 4, 3), y (1,), grad='implicit'",
    ):
        use_triton(never, lambda x, y: False, "what it needs", x=cost, y=torch.ones(1))
    unrolled = SinkhornOptions(epsilon=0.1, backend="triton", grad="unrolled")
    with pytest.raises(ValueError, match="grad='unrolled'"):
        use_triton(unrolled, lambda cost: True, "anything", cost=cost)


# Triton is a Linux-only dependency: the refusal is raised by the Triton path
@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_the_kernels_compute_the_cosine_cost_only() -> None:
    x, y = torch.randn(2, 4, 8), torch.randn(3, 2, 8)
    with pytest.raises(ValueError, match="grad 'implicit' or 'envelope' and the cosine distance"):
        pairwise_ot_distance(x, y, distance="sqeuclidean", backend="triton")
    # "auto" takes the torch path for any other distance
    assert torch.isfinite(pairwise_ot_distance(x, y, distance="sqeuclidean", epsilon=10.0)).all()


def test_consumers_keep_their_former_keywords_for_one_release(fresh_deprecations: None) -> None:
    options = dataclasses.replace(ALIGNMENT_OPTIONS, max_iter=80, tol=1e-6, backend="torch")
    message = (
        "the keyword arguments max_iter, tol, backend of reidkit.PatchToTokenAlignment are "
        f"deprecated and will be removed in the next release; use options={options!r}"
    )
    with pytest.warns(DeprecationWarning) as records:
        old = PatchToTokenAlignment(max_iter=80, tol=1e-6, backend="torch")
    assert [str(record.message) for record in records] == [message]
    assert records[0].filename == __file__  # the caller's line
    assert old.options == options
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PatchToTokenAlignment(epsilon=0.2)  # once per process
        assert PatchToTokenAlignment(options=options).options is options
    unknown = "reidkit.PatchToTokenAlignment got an unexpected keyword argument 'check_every'"
    with _raises(TypeError, unknown):
        PatchToTokenAlignment(check_every=2)  # never one of its keywords


def test_pairwise_ot_distance_takes_any_distance_as_its_ground_cost() -> None:
    from ot.bregman import sinkhorn_log

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(3, 2, 5, generator=generator, dtype=torch.float64)
    tight = SinkhornOptions(epsilon=2.0, max_iter=20_000, tol=1e-11)
    squared = pairwise_ot_distance(x, y, distance=EuclideanDistance(squared=True), options=tight)
    negative_dot = pairwise_ot_distance(x, y, distance="dot", options=tight)
    for b in range(2):
        for cls in range(3):
            for got, cost in (
                (squared, ((x[b][:, None] - y[cls][None]) ** 2).sum(-1)),
                (negative_dot, -(x[b] @ y[cls].T)),  # a similarity enters as its negative
            ):
                plan = sinkhorn_log(
                    np.full(4, 1 / 4), np.full(2, 1 / 2), cost.numpy(), 2.0, stopThr=1e-12,
                    numItermax=20_000,
                )  # fmt: skip
                assert abs(float(got[b, cls]) - float((plan * cost.numpy()).sum())) < 1e-9
    leaf_x = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: pairwise_ot_distance(a, b, distance="sqeuclidean", options=tight),
        (leaf_x[:1, :3], y[:2].clone().requires_grad_()),
    )
