"""CLIPReIDModel: outputs against the image encoder, the necks and the visual prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidkit import CLIPReIDModel
from reidkit.clip import CLIPImageEncoder


def test_eval_returns_the_normalised_class_token_and_projection(clip_model, images) -> None:
    model = CLIPReIDModel(clip_model, num_classes=5).eval()
    with torch.no_grad():
        retrieval = model(images)
        features = CLIPImageEncoder(clip_model)(images)
    expected = F.normalize(torch.cat([features.cls, features.embedding], dim=1), dim=1)
    assert retrieval.shape == (4, 64 + 32)
    torch.testing.assert_close(retrieval, expected)


def test_training_outputs_feed_the_necks_and_the_triplet_losses(clip_model, images) -> None:
    torch.manual_seed(0)
    model = CLIPReIDModel(clip_model, num_classes=5).train()
    output = model(images)
    assert [logits.shape for logits in output.logits] == [(4, 5), (4, 5)]
    assert [f.shape for f in output.triplet_features] == [(4, 64), (4, 64), (4, 32)]
    assert output.prompts is None
    with torch.no_grad():
        features = CLIPImageEncoder(clip_model, return_layers=(-2,))(images)
    torch.testing.assert_close(output.embedding, features.embedding)
    torch.testing.assert_close(output.triplet_features[0], features.layers[0][:, 0])
    torch.testing.assert_close(output.logits[0], model.neck(features.cls).logits)


def test_visual_prompts_change_the_features_and_receive_gradients(clip_model, images) -> None:
    torch.manual_seed(0)
    plain = CLIPReIDModel(clip_model, num_classes=5).eval()
    prompted = CLIPReIDModel(clip_model, num_classes=5, num_visual_prompts=3).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(images), prompted(images))
    output = prompted.train()(images)
    assert output.prompts.shape == (4, 3, 64)
    sum(logits.sum() for logits in output.logits).backward()
    assert prompted.prompt_generator.conv.weight.grad.abs().sum() > 0


def test_a_negative_prompt_count_is_rejected(clip_model) -> None:
    with pytest.raises(ValueError, match="num_visual_prompts must be >= 0"):
        CLIPReIDModel(clip_model, num_classes=5, num_visual_prompts=-1)
