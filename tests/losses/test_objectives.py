"""The papers' objectives: UniPT eq. 3 and 7 and VAL-PAT eq. 5 from the written-out terms."""

from __future__ import annotations

import math

import pytest
import torch

from reidkit.losses import (
    CrossModalIdentityLoss,
    UnifiedFeatures,
    UniPTFinetuningLoss,
    UniPTPretrainingLoss,
    VALPATBatch,
    VALPATLoss,
    attribute_imbalance_weights,
)
from tests.losses.test_attribute_losses import reference_bce
from tests.losses.test_contrastive import reference_contrastive
from tests.losses.test_queue_contrastive import reference_infonce
from tests.losses.test_ranking import cosine, reference_ranking


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _cross_entropy(logits: torch.Tensor, label: int) -> float:
    row = [float(v) for v in logits]
    return -(row[label] - math.log(sum(math.exp(v) for v in row)))


@pytest.mark.parametrize("mlm_weight", [1.0, 0.0])
def test_pretraining_is_contrastive_plus_beta_mlm(mlm_weight: float) -> None:
    generator = torch.Generator().manual_seed(0)
    images, texts = _randn(generator, 5, 4), _randn(generator, 5, 4)
    logits, targets = _randn(generator, 6, 9), torch.tensor([0, 8, 2, 2, 5, 1])
    output = UniPTPretrainingLoss(mlm_weight)(images, texts, logits, targets)
    contrastive = reference_contrastive(images, texts, 1.0).mean().item()
    mlm = sum(_cross_entropy(logits[s], int(targets[s])) for s in range(6)) / 6
    assert output.terms["contrastive"].item() == pytest.approx(contrastive, rel=1e-12)
    assert output.loss.item() == pytest.approx(contrastive + mlm_weight * mlm, rel=1e-12)
    if mlm_weight:
        assert output.terms["mlm"].item() == pytest.approx(mlm, rel=1e-12)
        with pytest.raises(ValueError, match="mlm_logits and mlm_targets are needed"):
            UniPTPretrainingLoss(mlm_weight)(images, texts)
    else:  # β = 0: no MLM input needed
        assert "mlm" not in output.terms
        torch.testing.assert_close(UniPTPretrainingLoss(0.0)(images, texts).loss, output.loss)


def test_finetuning_is_identity_plus_ranking_and_gamma_needs_unified_features() -> None:
    generator = torch.Generator().manual_seed(1)
    images, texts = _randn(generator, 6, 4), _randn(generator, 6, 4)
    image_logits, text_logits = _randn(generator, 6, 3), _randn(generator, 6, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    output = UniPTFinetuningLoss()(images, texts, image_logits, text_logits, labels)
    identity = (
        sum(
            _cross_entropy(image_logits[i], int(labels[i]))
            + _cross_entropy(text_logits[i], int(labels[i]))
            for i in range(6)
        )
        / 6
    )
    ranking_values, _ = reference_ranking(images, texts, labels, 0.2, "semi-hard", cosine)
    ranking = sum(ranking_values) / 6
    assert output.terms["id"].item() == pytest.approx(identity, rel=1e-12)
    assert output.terms["ranking"].item() == pytest.approx(ranking, rel=1e-12, abs=1e-12)
    assert output.loss.item() == pytest.approx(identity + ranking, rel=1e-12)
    assert set(output.terms) == {"id", "ranking"}

    with_pgu = UniPTFinetuningLoss(unified_weight=1.0)
    with pytest.raises(ValueError, match="unified must hold the granularity-unified features"):
        with_pgu(images, texts, image_logits, text_logits, labels)
    unified = UnifiedFeatures(texts, images, text_logits, image_logits)  # any second set
    both = with_pgu(images, texts, image_logits, text_logits, labels, unified)
    swapped = UniPTFinetuningLoss()(texts, images, text_logits, image_logits, labels)
    torch.testing.assert_close(both.terms["unified"], swapped.loss)
    torch.testing.assert_close(both.loss, output.loss + swapped.loss)


def test_identity_loss_needs_pairs() -> None:
    with pytest.raises(ValueError, match="text_logits must have the image_logits' shape"):
        CrossModalIdentityLoss()(torch.randn(3, 2), torch.randn(2, 2), torch.tensor([0, 1, 1]))


def test_valpat_objective_is_eq_5_with_the_papers_weights() -> None:
    generator = torch.Generator().manual_seed(2)
    n, d, m = 4, 5, 6
    labels = (torch.rand(n, m, generator=generator) > 0.5).double()
    batch = VALPATBatch(
        ssl_queries=_randn(generator, n, 3),
        ssl_keys=_randn(generator, n, 3),
        ssl_queue=_randn(generator, 7, 3),
        image_queries=_randn(generator, n, d),
        text_queries=_randn(generator, n, d),
        image_keys=_randn(generator, n, d),
        text_keys=_randn(generator, n, d),
        image_queue=_randn(generator, 8, d),
        text_queue=_randn(generator, 9, d),
        image_attribute_logits=_randn(generator, n, m),
        text_attribute_logits=_randn(generator, n, m),
        image_key_attribute_logits=_randn(generator, n, m),
        text_key_attribute_logits=_randn(generator, n, m),
        attribute_labels=labels,
    )
    positive, negative = (w.double() for w in attribute_imbalance_weights(labels))
    loss_fn = VALPATLoss(positive_weights=positive, negative_weights=negative).double()
    output = loss_fn(batch)
    tau = loss_fn.cross_modal.temperature.value()  # 0.07 stored as a float32 logarithm

    def bce(logits, targets) -> float:
        return sum(reference_bce(logits, targets, positive.tolist(), negative.tolist())) / n

    ssl = reference_infonce(batch.ssl_queries, batch.ssl_keys, batch.ssl_queue, 0.07).mean()
    i2t = reference_infonce(batch.image_queries, batch.text_keys, batch.text_queue, tau).mean()
    t2i = reference_infonce(batch.text_queries, batch.image_keys, batch.image_queue, tau).mean()
    hard = bce(batch.image_attribute_logits, labels) + bce(batch.text_attribute_logits, labels)
    from_image = torch.sigmoid(batch.image_key_attribute_logits)
    from_text = torch.sigmoid(batch.text_key_attribute_logits)
    soft = bce(batch.image_attribute_logits, from_text) + bce(
        batch.text_attribute_logits, from_image
    )
    expected = ssl.item() + 0.5 * (i2t.item() + t2i.item()) + 0.01 * (0.8 * hard + 0.2 * soft)
    assert output.loss.item() == pytest.approx(expected, rel=1e-10)
    assert output.terms["hard_attributes"].item() == pytest.approx(hard, rel=1e-10)
    assert output.terms["soft_attributes"].item() == pytest.approx(soft, rel=1e-10)
    assert output.terms["temperature"].item() == pytest.approx(0.07)
    # the soft targets are fixed: no gradient reaches the momentum classifier's logits
    key_logits = batch.text_key_attribute_logits.clone().requires_grad_()
    VALPATLoss().double()(batch._replace(text_key_attribute_logits=key_logits)).loss.backward()
    assert key_logits.grad is None


def test_objective_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="soft_weight must be in \\[0, 1\\]"):
        VALPATLoss(soft_weight=1.5)
    with pytest.raises(ValueError, match="mlm_weight must be"):
        UniPTPretrainingLoss(mlm_weight=-1.0)
