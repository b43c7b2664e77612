"""Old import paths: each gives the object of its new home and warns once, naming both paths."""

from __future__ import annotations

import importlib
import re
import warnings

import numpy as np
import pytest
import torch

MOVED = {
    "reidkit.eval": {
        "ExtractedFeatures": "reidkit.retrieval.ExtractedFeatures",
        "extract_features": "reidkit.retrieval.extract_features",
        "k_reciprocal_jaccard_distance": "reidkit.retrieval.k_reciprocal_jaccard_distance",
        "re_ranking": "reidkit.retrieval.re_ranking",
    },
    "reidkit.eval.features": {
        "ExtractedFeatures": "reidkit.retrieval.ExtractedFeatures",
        "extract_features": "reidkit.retrieval.extract_features",
    },
    "reidkit.eval.reranking": {
        name: f"reidkit.retrieval.reranking.{name}"
        for name in (
            "DistanceRows",
            "SparseRows",
            "jaccard_rows",
            "k_reciprocal_features",
            "k_reciprocal_jaccard_distance",
            "re_ranking",
            "rerank_from_rows",
        )
    },
    "reidkit.eval.validation": {
        "as_matrix": "reidkit.checks.as_matrix",
        "check_finite": "reidkit.checks.check_finite",
        "is_finite": "reidkit.checks.is_finite",
    },
    "reidkit.losses": {
        "BNNeck": "reidkit.heads.BNNeck",
        "BNNeckOutput": "reidkit.heads.BNNeckOutput",
        "similarity_logits": "reidkit.distances.similarity_logits",
    },
    "reidkit.losses.bnneck": {
        "BNNeck": "reidkit.heads.BNNeck",
        "BNNeckOutput": "reidkit.heads.BNNeckOutput",
    },
    "reidkit.losses.base": {
        "check_features": "reidkit.checks.check_float_matrix",
        "check_labels": "reidkit.checks.check_labels",
        "describe": "reidkit.checks.describe",
    },
    "reidkit.losses.similarity": {"similarity_logits": "reidkit.distances.similarity_logits"},
    "reidkit.selection": {
        "ClassPromptFeatures": "reidkit.prompts.ClassPromptFeatures",
        "class_token_attention": "reidkit.clip.class_token_attention",
        "encode_class_prompts": "reidkit.prompts.encode_class_prompts",
        "multi_granularity_loss": "reidkit.losses.multi_granularity_loss",
        "patch_grid": "reidkit.selection.partition_grid",
    },
    "reidkit.selection.alignment": {
        "ClassPromptFeatures": "reidkit.prompts.ClassPromptFeatures",
        "encode_class_prompts": "reidkit.prompts.encode_class_prompts",
    },
    "reidkit.selection.attention": {"class_token_attention": "reidkit.clip.class_token_attention"},
    "reidkit.selection.objectives": {
        "multi_granularity_loss": "reidkit.losses.multi_granularity_loss"
    },
    "reidkit.selection.partition": {"patch_grid": "reidkit.selection.partition_grid"},
    "reidkit.clip.resize": {"patch_grid": "reidkit.clip.resize.patch_embedding_grid"},
    "reidkit.ot.sinkhorn": {
        name: f"reidkit.ot.options.{name}"
        for name in ("Backend", "GradMode", "OnNonconvergence", "StopRule")
    },
    "reidkit.ot.validation": {
        "check_choice": "reidkit.checks.check_choice",
        "check_finite": "reidkit.checks.check_finite",
        "real_number": "reidkit.checks.real_number",
        **{
            name: f"reidkit.ot.options.{name}"
            for name in ("GRAD_MODES", "BACKENDS", "STOP_RULES", "NONCONVERGENCE_ACTIONS")
        },
    },
}
CASES = [(old, name, new) for old, names in MOVED.items() for name, new in names.items()]


pytestmark = pytest.mark.usefixtures("fresh_deprecations")  # as a new process sees them


def _resolve(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("old_module", "name", "new_path"), CASES)
def test_an_old_path_gives_the_new_object_and_warns_once(old_module, name, new_path) -> None:
    module = importlib.import_module(old_module)
    expected = re.escape(f"{old_module}.{name} is deprecated") + ".*" + re.escape(f"use {new_path}")
    with pytest.warns(DeprecationWarning, match=expected):
        value = getattr(module, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = getattr(module, name)  # warns once per process
    assert value is _resolve(new_path) and again is value


def test_the_warning_points_at_the_importing_line() -> None:
    with pytest.warns(DeprecationWarning) as records:
        from reidkit.losses import BNNeck  # noqa: F401
    assert records[0].filename == __file__


def test_names_that_never_existed_still_raise_attribute_error() -> None:
    import reidkit.eval

    with pytest.raises(AttributeError, match=r"module 'reidkit\.eval' has no attribute 'nothing'"):
        reidkit.eval.nothing


def test_the_public_names_of_reidkit_do_not_warn() -> None:
    import reidkit

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reidkit.re_ranking is _resolve("reidkit.retrieval.re_ranking")
        assert reidkit.BNNeck is _resolve("reidkit.heads.BNNeck")


def _deprecated(module: str, name: str) -> object:
    with pytest.warns(DeprecationWarning, match=re.escape(f"{module}.{name} is deprecated")):
        return getattr(importlib.import_module(module), name)


def test_the_former_distance_functions_keep_their_defaults() -> None:
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    by_losses = _deprecated("reidkit.losses.similarity", "pairwise_distance")
    assert _deprecated("reidkit.losses", "pairwise_distance") is by_losses
    distances = by_losses(x, x)  # Euclidean, floored at 1e-12 before the root
    torch.testing.assert_close(distances.diagonal(), torch.full((4,), 1e-6, dtype=torch.float64))
    manual = (x[:, None] - x[None]).square().sum(-1).clamp_min(1e-12).sqrt()
    torch.testing.assert_close(distances, manual)
    cosine = 1 - torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    torch.testing.assert_close(by_losses(x, x, "cosine"), cosine)
    with pytest.raises(ValueError, match="metric must be one of"):
        by_losses(x, x, "sqeuclidean")

    by_evaluation = _deprecated("reidkit.eval.distance", "pairwise_distance")
    torch.testing.assert_close(by_evaluation(x, x), cosine)  # cosine by default
    half = by_evaluation(x.detach().half(), x.detach().half(), "sqeuclidean")
    assert half.dtype == torch.float32  # half input computed in float32
    torch.testing.assert_close(half, manual.detach().square().float(), atol=1e-2, rtol=1e-2)


def test_the_former_check_of_the_solver_settings_keeps_its_signature() -> None:
    check = _deprecated("reidkit.ot.validation", "check_solver_options")
    assert check(np.float32(0.5), 20, None, "envelope", "torch", "update") == (0.5, 20, None)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1, got 0"):
        check(0.1, 0, 1e-3, "implicit", "auto", "marginal")


def test_the_former_checks_keep_their_signatures() -> None:
    check_positive_int = _deprecated("reidkit.eval.validation", "check_positive_int")
    with pytest.raises(ValueError, match="topk must be an integer >= 1, got 0"):
        check_positive_int("topk", 0)
    check_metric = _deprecated("reidkit.eval.validation", "check_metric")
    check_metric("sqeuclidean")
    with pytest.raises(ValueError, match="metric must be one of"):
        check_metric("dot")
    assert _deprecated("reidkit.eval.validation", "METRICS") == (
        "cosine",
        "euclidean",
        "sqeuclidean",
    )
    check_count = _deprecated("reidkit.prompts.template", "check_count")
    with pytest.raises(ValueError, match="n_ctx must be an integer >= 1, got 0"):
        check_count("n_ctx", 0)
    check_logit_scale = _deprecated("reidkit.losses.similarity", "check_logit_scale")
    with pytest.raises(ValueError, match=r"logit_scale must be finite and > 0, got -1\.0"):
        check_logit_scale(-1.0)
    assert _deprecated("reidkit.losses.similarity", "DISTANCES") == ("euclidean", "cosine")
