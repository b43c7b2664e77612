"""UniPT's embedding head, the shared identity classifier and the MLM head against formulas
written out in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from reidkit.heads import MaskedLanguageModelHead, SharedIdentityClassifier, TokenMaxPoolEmbedding


def test_max_pooled_embedding_is_the_maximum_over_valid_projected_tokens() -> None:
    torch.manual_seed(0)
    head = TokenMaxPoolEmbedding(6, 4).double()
    tokens = torch.randn(3, 5, 6, dtype=torch.float64)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    embeddings = head(tokens, valid).detach()
    weight, bias = head.projection.weight.detach(), head.projection.bias.detach()
    for b in range(3):
        for d in range(4):
            values = [
                sum(float(weight[d, k]) * float(tokens[b, t, k]) for k in range(6)) + float(bias[d])
                for t in range(5)
                if valid[b, t]
            ]
            assert embeddings[b, d].item() == pytest.approx(max(values), abs=1e-12)
    torch.testing.assert_close(head(tokens), head(tokens, torch.ones(3, 5, dtype=torch.bool)))


def test_the_maximums_gradient_reaches_the_winning_token_only() -> None:
    head = TokenMaxPoolEmbedding(2, 2)
    with torch.no_grad():
        head.projection.weight.copy_(torch.eye(2))
        head.projection.bias.zero_()
    tokens = torch.tensor([[[1.0, 5.0], [3.0, 0.0], [9.0, 9.0]]], requires_grad=True)
    valid = torch.tensor([[True, True, False]])  # the largest token is padding
    head(tokens, valid).sum().backward()
    expected = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(tokens.grad, expected)


def test_embedding_head_rejects_bad_input() -> None:
    head = TokenMaxPoolEmbedding(4, 2)
    with pytest.raises(ValueError, match="tokens must have shape"):
        head(torch.randn(2, 4))
    with pytest.raises(ValueError, match="valid must be a bool"):
        head(torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least one token in every row"):
        head(torch.randn(2, 3, 4), torch.tensor([[True, False, False], [False] * 3]))


def test_the_classifier_shares_its_weights_between_modalities() -> None:
    classifier = SharedIdentityClassifier(4, 3).double()
    images, texts = torch.randn(2, 4).double(), torch.randn(5, 4).double()
    logits = classifier(images, texts)
    weight, bias = classifier.classifier.weight, classifier.classifier.bias
    torch.testing.assert_close(logits.image, images @ weight.T + bias)
    torch.testing.assert_close(logits.text, texts @ weight.T + bias)
    with pytest.raises(ValueError, match="text_embeddings must have shape"):
        classifier(images, torch.randn(5, 3).double())


@pytest.mark.parametrize("tied", [False, True])
def test_mlm_head_is_berts_transform_and_decoder(tied: bool) -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(11, 6).double()
    head = MaskedLanguageModelHead(6, 11, embedding if tied else None).double()
    hidden = torch.randn(4, 6, dtype=torch.float64)
    dense, norm = head.transform[0], head.transform[2]
    x = hidden @ dense.weight.T + dense.bias
    x = 0.5 * x * (1 + torch.erf(x / 2**0.5))  # exact GELU
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    x = x * norm.weight + norm.bias
    decoder = embedding.weight if tied else head.decoder_weight
    torch.testing.assert_close(head(hidden), x @ decoder.T + head.decoder_bias)
    assert head.tied == tied
    # tied: the embedding table is trained by the head's loss too
    F.cross_entropy(head(hidden), torch.arange(4)).backward()
    assert (embedding.weight.grad is not None) == tied


def test_mlm_head_rejects_a_mismatched_table_and_input() -> None:
    with pytest.raises(ValueError, match=r"tied_embedding must be an nn.Embedding\(11, 6\)"):
        MaskedLanguageModelHead(6, 11, nn.Embedding(10, 6))
    with pytest.raises(ValueError, match="hidden must have shape"):
        MaskedLanguageModelHead(6, 11)(torch.randn(3, 5))
