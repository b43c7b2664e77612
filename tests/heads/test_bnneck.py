"""BNNeck: bias-free BN and classifier, computed by hand."""

from __future__ import annotations

import pytest
import torch

from reidkit.heads import BNNeck


def test_training_output_is_batch_normalised_then_classified() -> None:
    neck = BNNeck(4, 3).double()
    with torch.no_grad():
        neck.bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    features = torch.randn(5, 4, dtype=torch.float64)
    normalised, logits = neck(features)
    mean = features.mean(0)
    variance = features.var(0, unbiased=False)
    expected = (features - mean) / torch.sqrt(variance + neck.bn.eps) * neck.bn.weight
    torch.testing.assert_close(normalised, expected)
    torch.testing.assert_close(logits, expected @ neck.classifier.weight.T)


def test_only_the_bn_scale_and_the_classifier_learn() -> None:
    neck = BNNeck(6, 10)
    assert neck.classifier.bias is None
    assert not neck.bn.bias.requires_grad
    trainable = {name for name, p in neck.named_parameters() if p.requires_grad}
    assert trainable == {"bn.weight", "classifier.weight"}
    _, logits = neck(torch.randn(4, 6))
    logits.sum().backward()
    assert neck.bn.bias.grad is None
    assert torch.all(neck.bn.bias == 0)


def test_evaluation_uses_running_statistics() -> None:
    neck = BNNeck(3, 2)
    neck(torch.randn(8, 3) * 3 + 1)
    neck.eval()
    features = torch.randn(2, 3)
    expected = (features - neck.bn.running_mean) / torch.sqrt(neck.bn.running_var + neck.bn.eps)
    torch.testing.assert_close(neck(features).features, expected * neck.bn.weight)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="in_features"):
        BNNeck(0, 3)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 4\)"):
        BNNeck(4, 3)(torch.randn(2, 5))
