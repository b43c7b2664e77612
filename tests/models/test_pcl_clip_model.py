"""PCLCLIPModel: the necks' features and logits against the image encoder and the BNNecks."""

from __future__ import annotations

import pytest
import torch

from reidkit.clip import CLIPImageEncoder
from reidkit.models import PCLCLIPModel, PCLCLIPOutput


def test_training_output_is_both_necks_on_the_class_token_and_its_projection(
    clip_model, images
) -> None:
    torch.manual_seed(0)
    model = PCLCLIPModel(clip_model, num_classes=5, id_classifier="per_neck").train()
    output = model(images)
    assert isinstance(output, PCLCLIPOutput)
    assert model.feature_dim == 64 + 32 and output.features.shape == (4, 96)
    assert [logits.shape for logits in output.logits] == [(4, 5), (4, 5)]
    with torch.no_grad():
        encoded = CLIPImageEncoder(clip_model)(images)
    # In training mode BatchNorm normalises with the batch's own statistics.
    variance = encoded.cls.var(0, unbiased=False)
    cls = (encoded.cls - encoded.cls.mean(0)) / torch.sqrt(variance + 1e-5)
    torch.testing.assert_close(output.features[:, :64], cls, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        output.logits[1], output.features[:, 64:] @ model.neck_projected.classifier.weight.T
    )


def test_eval_returns_the_necks_features_with_their_running_statistics(clip_model, images) -> None:
    torch.manual_seed(0)
    model = PCLCLIPModel(clip_model, num_classes=5, id_classifier="per_neck")
    model.train()(images)  # moves the running statistics away from their start
    model.eval()
    with torch.no_grad():
        features = model(images)
        encoded = CLIPImageEncoder(clip_model)(images)
        expected = torch.cat(
            [model.neck(encoded.cls).features, model.neck_projected(encoded.embedding).features],
            dim=1,
        )
    assert isinstance(features, torch.Tensor) and features.shape == (4, 96)
    torch.testing.assert_close(features, expected)
    assert not torch.allclose(model.neck.bn.running_mean, torch.zeros(64))


def _batch_norm(x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch normalisation, per channel, with the initial scale 1 and shift 0."""
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)


def test_the_released_classifier_reads_the_concatenated_feature(clip_model, images) -> None:
    torch.manual_seed(0)
    model = PCLCLIPModel(clip_model, num_classes=5).train()
    assert model.id_classifier == "concatenated" and model.neck_projected is None
    output = model(images)
    with torch.no_grad():
        encoded = CLIPImageEncoder(clip_model)(images)
    torch.testing.assert_close(output.embeddings, torch.cat([encoded.cls, encoded.embedding], 1))
    # One neck on [v, V] normalises each part as two necks would: f = [BN(v), BN(V)].
    expected = torch.cat([_batch_norm(encoded.cls), _batch_norm(encoded.embedding)], dim=1)
    torch.testing.assert_close(output.features, expected, atol=1e-4, rtol=1e-4)
    assert len(output.logits) == 1 and model.neck.classifier.weight.shape == (5, 96)
    torch.testing.assert_close(output.logits[0], output.features @ model.neck.classifier.weight.T)


def test_unknown_id_classifier_is_refused(clip_model) -> None:
    with pytest.raises(ValueError, match="id_classifier must be one of"):
        PCLCLIPModel(clip_model, num_classes=5, id_classifier="shared")
