"""AAformerReID: the retrieval feature and the loss terms against AAformer and AAformerLoss."""

from __future__ import annotations

import pytest
import torch

from reidkit.models import AAformerReID
from reidkit.parts import AAformer, AAformerLoss
from tests.parts.tiny_backbones import person_images, tiny_timm_vit


@pytest.fixture(scope="module")
def model() -> AAformerReID:
    aaformer = AAformer(tiny_timm_vit(), (2, 3))
    torch.manual_seed(0)
    return AAformerReID(aaformer, AAformerLoss(aaformer.output_dim, 1 + 5, num_classes=3))


def test_without_identities_it_returns_cls_and_parts_concatenated(model) -> None:
    images = person_images(batch=4)
    model.eval()
    with torch.no_grad():
        features = model(images)
        expected = model.aaformer(images).concatenated()
    assert features.shape == (4, 6 * model.aaformer.output_dim)
    torch.testing.assert_close(features, expected)


def test_with_identities_it_returns_the_loss_terms_of_its_criterion(model) -> None:
    images, pids = person_images(batch=4), torch.tensor([0, 0, 2, 2])
    model.train()
    torch.manual_seed(1)
    terms = model(images, pids)
    torch.manual_seed(1)
    expected = model.criterion(model.aaformer(images).tokens, pids)
    for name in ("loss", "id_loss", "triplet_loss"):
        torch.testing.assert_close(getattr(terms, name), getattr(expected, name))
    terms.loss.backward()
    assert model.criterion.necks[3].classifier.weight.grad.abs().sum() > 0
    assert model.aaformer.part_tokens.grad.abs().sum() > 0


def test_a_criterion_with_another_number_of_tokens_is_rejected() -> None:
    aaformer = AAformer(tiny_timm_vit(), (2,))
    with pytest.raises(ValueError, match=r"one neck per output token \(1 \+ 2\)"):
        AAformerReID(aaformer, AAformerLoss(aaformer.output_dim, 4, num_classes=3))
