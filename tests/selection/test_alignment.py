"""PatchToTokenAlignment against a per-pair POT loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ot.bregman import sinkhorn_log

from reidkit.ot import SinkhornOptions
from reidkit.selection import PatchToTokenAlignment

TIGHT = SinkhornOptions(epsilon=0.1, max_iter=1000, tol=1e-10)


def _pot_logits(patches, tokens, epsilon: float, temperature: float) -> torch.Tensor:
    """(1 - d_OT) / tau with one POT log-domain Sinkhorn per (image, class) pair, in float64."""
    x = F.normalize(patches.double(), dim=-1)
    y = F.normalize(tokens.double(), dim=-1)
    logits = torch.empty(x.shape[0], y.shape[0], dtype=torch.float64)
    for b in range(x.shape[0]):
        for cls in range(y.shape[0]):
            cost = (1 - x[b] @ y[cls].T).numpy()
            a = torch.full((x.shape[1],), 1 / x.shape[1], dtype=torch.float64).numpy()
            c = torch.full((y.shape[1],), 1 / y.shape[1], dtype=torch.float64).numpy()
            plan = sinkhorn_log(a, c, cost, reg=epsilon, numItermax=5000, stopThr=1e-12)
            distance = float((plan * cost).sum())
            logits[b, cls] = (1 - distance) / temperature
    return logits


@pytest.mark.parametrize(("batch", "m", "classes", "n"), [(3, 5, 4, 3), (1, 1, 2, 4), (2, 7, 1, 1)])
def test_logits_equal_pot_loop_over_classes(batch: int, m: int, classes: int, n: int) -> None:
    torch.manual_seed(batch * 100 + m)
    patches, tokens = torch.randn(batch, m, 6), torch.randn(classes, n, 6)
    alignment = PatchToTokenAlignment(temperature=0.05, options=TIGHT)
    expected = _pot_logits(patches, tokens, epsilon=0.1, temperature=0.05)
    torch.testing.assert_close(
        alignment.logits(patches.double(), tokens.double()), expected, atol=1e-7, rtol=1e-7
    )
    # The default settings (at most 50 iterations, marginal error 1e-3) in float32.
    distances = PatchToTokenAlignment().distances(patches, tokens).double()
    torch.testing.assert_close(distances, 1 - 0.05 * expected, atol=1e-3, rtol=0)


def test_loss_is_the_cross_entropy_with_its_log() -> None:
    torch.manual_seed(0)
    patches, tokens = torch.randn(4, 3, 5), torch.randn(6, 2, 5)
    labels = torch.tensor([0, 5, 2, 2])
    alignment = PatchToTokenAlignment(options=TIGHT)
    out = alignment(patches.double(), tokens.double(), labels)
    logits = _pot_logits(patches, tokens, epsilon=0.1, temperature=0.07)
    probabilities = logits.exp() / logits.exp().sum(dim=1, keepdim=True)  # eq. 18
    expected = -probabilities[torch.arange(4), labels].log().mean()
    torch.testing.assert_close(out.loss, expected, atol=1e-7, rtol=1e-7)


def test_gradients_match_finite_differences() -> None:
    torch.manual_seed(1)
    patches = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    tokens = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 2])
    alignment = PatchToTokenAlignment(
        options=SinkhornOptions(epsilon=0.1, max_iter=2000, tol=1e-13)
    )
    assert torch.autograd.gradcheck(
        lambda x, y: alignment(x, y, labels).loss, (patches, tokens), atol=1e-5, rtol=1e-4
    )


def test_bad_options_and_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="temperature"):
        PatchToTokenAlignment(temperature=0.0)
    with pytest.raises(TypeError, match=r"options must be a reidkit\.SinkhornOptions"):
        PatchToTokenAlignment(options={"epsilon": 0.1})
    with pytest.raises(ValueError, match="class_chunk_size must be None or an integer >= 1"):
        PatchToTokenAlignment(class_chunk_size=0)
    with pytest.raises(ValueError, match="labels"):
        PatchToTokenAlignment()(torch.randn(2, 3, 4), torch.randn(5, 2, 4), torch.zeros(3).long())
