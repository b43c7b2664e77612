"""CLIPReIDLoss against the stage-2 objective written out in float64 (CLIP-ReID eq. 6, MMPL
eq. 24), term by term."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reidkit.losses import CLIPReIDLoss, TransformationLoss


def _smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(value - top) for value in row))
        log_prob = [value - log_norm for value in row]
        classes = len(row)
        total -= sum(
            ((1 - epsilon) * (c == label) + epsilon / classes) * log_prob[c] for c in range(classes)
        )
    return total / len(labels)


def _batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    rows, ids = features.tolist(), labels.tolist()
    losses = []
    for i, anchor in enumerate(rows):
        distances = [math.dist(anchor, other) for other in rows]
        positives = [d for j, d in enumerate(distances) if j != i and ids[j] == ids[i]]
        negatives = [d for j, d in enumerate(distances) if ids[j] != ids[i]]
        if positives and negatives:
            losses.append(max(0.0, max(positives) - min(negatives) + margin))
    return sum(losses) / len(losses)


def _transformation(
    prompts: torch.Tensor, targets: torch.Tensor, projection: torch.Tensor, margin: float
) -> float:
    """Eq. 23 as TransformationLoss states it: mean |W P_v^k - T^k| summed over k, plus the
    hinge of every pair of projected prompts, averaged over the images."""
    total = 0.0
    for image_prompts, image_targets in zip(prompts, targets):
        projected = [projection @ prompt for prompt in image_prompts]
        total += sum(
            float((p - t).abs().mean()) for p, t in zip(projected, image_targets, strict=True)
        )
        for first, second in itertools.combinations(projected, 2):
            total += max(0.0, margin - float((first - second).abs().mean()))
    return total / prompts.shape[0]


def _inputs(seed: int, levels: int, with_prompts: bool) -> dict:
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    batch, classes, width, embed = 8, 5, 6, 4
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 4, 4])
    inputs = {
        "logits": (normal(batch, classes), normal(batch, classes)),
        "triplet_features": (normal(batch, width), normal(batch, width), normal(batch, embed)),
        "embedding": normal(batch, embed),
        "labels": labels,
        "text_features": [normal(classes, embed) for _ in range(levels)],
    }
    if with_prompts:
        inputs["visual_prompts"] = normal(batch, levels, width)
    return inputs


@given(
    seed=st.integers(0, 2**31 - 1),
    levels=st.integers(1, 3),
    with_prompts=st.booleans(),
    weights=st.tuples(*[st.floats(0.0, 2.0)] * 4),
)
def test_the_total_and_every_term_match_the_objective(
    seed: int, levels: int, with_prompts: bool, weights: tuple[float, ...]
) -> None:
    id_weight, triplet_weight, i2t_weight, tr_weight = weights
    epsilon, margin, tr_margin = 0.1, 0.3, 0.5
    inputs = _inputs(seed, levels, with_prompts)
    transformation = TransformationLoss(6, 4, margin=tr_margin).double()
    criterion = CLIPReIDLoss(
        id_weight=id_weight,
        triplet_weight=triplet_weight,
        image_to_text_weight=i2t_weight,
        transformation_weight=tr_weight,
        label_smoothing=epsilon,
        triplet_margin=margin,
        transformation=transformation,
    )
    output = criterion(**inputs)

    labels = inputs["labels"]
    ids = sum(_smoothed_cross_entropy(z, labels, epsilon) for z in inputs["logits"])
    triplets = sum(_batch_hard_triplet(f, labels, margin) for f in inputs["triplet_features"])
    image_to_text = sum(
        _smoothed_cross_entropy(inputs["embedding"] @ text.T, labels, epsilon)
        for text in inputs["text_features"]
    ) / len(inputs["text_features"])
    expected = {"id": ids, "triplet": triplets, "image_to_text": image_to_text}
    total = id_weight * ids + triplet_weight * triplets + i2t_weight * image_to_text
    if with_prompts:
        targets = torch.stack([text[labels] for text in inputs["text_features"]], dim=1)
        projection = transformation.projection.weight.detach()
        expected["transformation"] = _transformation(
            inputs["visual_prompts"], targets, projection, tr_margin
        )
        total += tr_weight * expected["transformation"]

    assert set(output.terms) == set(expected)
    for name, value in expected.items():
        assert output.terms[name].item() == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert output.loss.item() == pytest.approx(total, rel=1e-9, abs=1e-12)


def test_one_text_tensor_is_one_level() -> None:
    inputs = _inputs(0, 1, with_prompts=False)
    criterion = CLIPReIDLoss()
    as_list = criterion(**inputs)
    as_tensor = criterion(**{**inputs, "text_features": inputs["text_features"][0]})
    assert as_tensor.loss.item() == as_list.loss.item()


def test_the_projection_of_the_transformation_loss_learns() -> None:
    inputs = _inputs(1, 3, with_prompts=True)
    transformation = TransformationLoss(6, 4).double()
    CLIPReIDLoss(transformation=transformation)(**inputs).loss.backward()
    assert transformation.projection.weight.grad.abs().sum() > 0


def test_visual_prompts_without_a_transformation_loss_are_rejected() -> None:
    with pytest.raises(ValueError, match="transformation=TransformationLoss"):
        CLIPReIDLoss()(**_inputs(0, 2, with_prompts=True))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"id_weight": -0.1}, "id_weight must be a number >= 0"),
        ({"image_to_text_weight": float("nan")}, "image_to_text_weight must be a number >= 0"),
        ({"triplet_weight": True}, "triplet_weight must be a number >= 0"),
    ],
)
def test_bad_weights_are_named(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CLIPReIDLoss(**arguments)


def test_a_transformation_of_another_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="transformation must be a TransformationLoss"):
        CLIPReIDLoss(transformation=torch.nn.L1Loss())  # type: ignore[arg-type]


def test_empty_logits_are_rejected() -> None:
    inputs = _inputs(0, 1, with_prompts=False)
    with pytest.raises(ValueError, match="logits and triplet_features"):
        CLIPReIDLoss()(**{**inputs, "logits": ()})
