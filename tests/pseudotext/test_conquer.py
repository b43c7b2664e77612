"""Conquer: phrase selection against a loop over attributes, CLIP scores against
open_clip's own encoders."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from reidkit.pseudotext import (
    Attribute,
    AttributeVocabulary,
    prompt_probabilities,
    score_prompts,
    select_phrases,
    synthetic_vocabulary,
)
from tests.clip.tiny_models import tiny_clip

VOCABULARY = AttributeVocabulary(
    (
        Attribute("gender", ("man", "woman"), True),
        Attribute("upper", ("a red shirt", "a blue shirt", "a coat"), True),
        Attribute("bag", ("a backpack", "a handbag"), False, absent_prompts=("no bag",)),
        Attribute("hat", ("a cap",), False),
    )
)
# prompt columns: gender 0-1, upper 2-4, bag 5-7 (7 absent), hat 8


def reference_selection(logits, threshold, scope):
    """One image, one attribute at a time, with the softmax written out."""
    _, owners = VOCABULARY.prompts()
    selections = []
    for row in logits.tolist():
        everything = sum(math.exp(v) for v in row)
        selection = {}
        for index, attribute in enumerate(VOCABULARY.attributes):
            columns = [p for p, owner in enumerate(owners) if owner.attribute == index]
            best = max(columns, key=lambda p: row[p])
            phrase = owners[best].phrase
            if attribute.required:
                selection[attribute.name] = attribute.phrases[phrase]
                continue
            total = everything if scope == "all" else sum(math.exp(row[p]) for p in columns)
            probability = math.exp(row[best]) / total
            keep = phrase is not None and probability > threshold
            selection[attribute.name] = attribute.phrases[phrase] if keep else None
        selections.append(selection)
    return selections


@pytest.mark.parametrize("scope", ["attribute", "all"])
@pytest.mark.parametrize("threshold", [0.9, 0.3])
def test_selection_matches_the_written_out_rule(scope: str, threshold: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(200, 9, generator=generator, dtype=torch.float64)
    selections = select_phrases(logits, VOCABULARY, threshold, scope)
    assert selections == reference_selection(logits, threshold, scope)
    # both outcomes occur for the optional attributes at these settings
    if scope == "attribute":
        assert {s["bag"] is None for s in selections} == {True, False}


def test_probabilities_sum_to_one_within_the_scope() -> None:
    logits = torch.randn(5, 9, dtype=torch.float64)
    per_attribute = prompt_probabilities(logits, VOCABULARY, "attribute")
    for columns in ([0, 1], [2, 3, 4], [5, 6, 7], [8]):
        torch.testing.assert_close(per_attribute[:, columns].sum(1), torch.ones(5).double())
    torch.testing.assert_close(per_attribute[:, 8], torch.ones(5).double())
    torch.testing.assert_close(
        prompt_probabilities(logits, VOCABULARY, "all").sum(1).double(), torch.ones(5).double()
    )


def test_an_absent_prompt_is_never_selected_and_a_lone_phrase_always_is_per_attribute() -> None:
    logits = torch.zeros(1, 9)
    logits[0, 7] = 20.0  # "no bag" wins by far
    logits[0, 8] = -5.0  # the only hat phrase: probability 1 within its attribute
    attribute_scope = select_phrases(logits, VOCABULARY, 0.9, "attribute")[0]
    assert attribute_scope["bag"] is None and attribute_scope["hat"] == "a cap"
    assert select_phrases(logits, VOCABULARY, 0.9, "all")[0]["hat"] is None


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="logits must have one column per prompt"):
        select_phrases(torch.zeros(2, 8), VOCABULARY)
    with pytest.raises(ValueError, match="scope must be one of"):
        select_phrases(torch.zeros(2, 9), VOCABULARY, scope="image")
    with pytest.raises(ValueError, match="threshold must be in"):
        select_phrases(torch.zeros(2, 9), VOCABULARY, threshold=1.0)


def test_scores_are_clips_scaled_cosines() -> None:
    model, tokenizer = tiny_clip(image_size=None)
    vocabulary = synthetic_vocabulary()
    images = torch.randn(5, 3, 64, 64)
    batches = [(images[:3],), (images[3:],)]
    logits = score_prompts(model, tokenizer, batches, vocabulary)
    prompts, _ = vocabulary.prompts()
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
        image = F.normalize(model.encode_image(images), dim=-1)
    expected = model.logit_scale.exp().item() * image @ text.T
    assert logits.shape == (5, len(prompts))
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
