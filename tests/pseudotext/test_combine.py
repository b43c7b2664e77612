"""Combine: templates with optional blanks, synonyms and articles, deterministic per image."""

from __future__ import annotations

import math
import re

import pytest

from reidkit.pseudotext import (
    SYNTHETIC_TEMPLATES,
    Attribute,
    AttributeVocabulary,
    CaptionTemplate,
    PseudoTextComposer,
    synthetic_vocabulary,
)

VOCABULARY = AttributeVocabulary(
    (
        Attribute("gender", ("man", "woman"), True),
        Attribute("upper", ("grey coat", "orange shirt"), True),
        Attribute("bag", ("backpack", "umbrella"), False),
    ),
    {"grey": ("gray",), "backpack": ("rucksack",), "grey coat": ("grey jacket",)},
)


def test_templates_split_required_and_optional_blanks() -> None:
    template = CaptionTemplate.parse("A <gender> in a <upper>.[ They carry a <bag>.]")
    assert template.required == {"gender", "upper"} and template.optional == {"bag"}
    phrases = {"gender": "man", "upper": "coat", "bag": None}
    assert template.fill(phrases) == "A man in a coat."
    assert template.fill({**phrases, "bag": "bag"}) == "A man in a coat. They carry a bag."
    with pytest.raises(ValueError, match="needs phrases for \\['upper'\\]"):
        template.fill({"gender": "man", "upper": None})
    for bad, message in (
        ("A [b [<bag>]]", "not nested"),
        ("A <gender>]", "balanced"),
        ("A <gender>[ nothing]", "needs a <blank>"),
        ("no blank", "has no <blank>"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            CaptionTemplate.parse(bad)


def test_captions_are_deterministic_per_image_and_use_distinct_templates() -> None:
    templates = ["A <gender> in a <upper>.", "The <gender> wears a <upper>.[ With a <bag>.]"]
    composer = PseudoTextComposer(VOCABULARY, templates, seed=3)
    phrases = {"gender": "woman", "upper": "orange shirt", "bag": "umbrella"}
    first = composer.compose(phrases, "img/1.jpg", count=2)
    assert first == PseudoTextComposer(VOCABULARY, templates, seed=3).compose(
        phrases, "img/1.jpg", count=2
    )
    # one caption per template, "a" turned into "an" before a vowel
    assert set(first) == {
        "A woman in an orange shirt.",
        "The woman wears an orange shirt. With an umbrella.",
    }
    others = {
        PseudoTextComposer(VOCABULARY, templates, seed=s).compose(phrases, "k") for s in range(20)
    }
    assert len(others) == 2  # the seed changes the draw


def test_a_template_whose_required_blank_was_not_selected_is_never_drawn() -> None:
    composer = PseudoTextComposer(VOCABULARY, ["A <gender> with a <bag>.", "A <gender>.[ <bag>]"])
    for key in range(30):
        caption = composer.compose({"gender": "man", "upper": "x", "bag": None}, str(key))[0]
        assert caption == "A man."
    with pytest.raises(ValueError, match="no template can describe image 'k'"):
        PseudoTextComposer(VOCABULARY, ["A <bag>."]).compose({"bag": None}, "k")
    with pytest.raises(ValueError, match="names attributes the vocabulary lacks: \\['shoes'\\]"):
        PseudoTextComposer(VOCABULARY, ["<shoes>"])


def test_synonyms_are_drawn_uniformly_longest_match_first() -> None:
    composer = PseudoTextComposer(VOCABULARY, ["A <gender> in a <upper> with a <bag>."])
    phrases = {"gender": "man", "upper": "grey coat", "bag": "backpack"}
    captions = [composer.compose(phrases, f"image{i}")[0] for i in range(2000)]
    jackets = sum("grey jacket" in c for c in captions)
    coats = sum("grey coat" in c for c in captions)
    # "grey coat" is replaced as a whole (never "gray coat"): half stay, half become jackets
    assert jackets + coats == 2000 and not any("gray" in c for c in captions)
    rucksacks = sum("rucksack" in c for c in captions)
    for count in (jackets, rucksacks):
        assert abs(count - 1000) <= 4.5 * math.sqrt(2000 * 0.25)


def test_synthetic_templates_write_sentences_with_every_selected_attribute() -> None:
    vocabulary = synthetic_vocabulary()
    composer = PseudoTextComposer(vocabulary, SYNTHETIC_TEMPLATES, seed=0)
    phrases = {a.name: a.phrases[0] for a in vocabulary.attributes}
    phrases.update(upper_colour="olive", hat=None)
    for key in range(20):
        (caption,) = composer.compose(phrases, str(key))
        words = re.findall(r"[\w-]+", caption.lower())
        assert "olive" in words and "a olive" not in caption.lower()
        assert "hat" not in words and "cap" not in words
        # every selected phrase (or a synonym of it) is in the caption
        for name in ("sleeve_length", "lower_garment", "shoe_colour"):
            options = (phrases[name], *vocabulary.synonyms.get(phrases[name], ()))
            assert any(option in caption for option in options), (name, caption)
        assert caption[0].isupper() and caption.endswith(".") and "  " not in caption
