"""Attribute vocabularies: UniPT's names, the synthetic pedestrians', JSON files, checks."""

from __future__ import annotations

import pytest

from reidkit.data import ATTRIBUTE_LABELS, PEDESTRIAN_ATTRIBUTES
from reidkit.pseudotext import (
    UNIPT_ATTRIBUTES,
    Attribute,
    AttributeVocabulary,
    PromptOwner,
    synthetic_vocabulary,
    unipt_vocabulary,
)


def test_unipt_has_six_required_and_eight_optional_attributes() -> None:
    assert len(UNIPT_ATTRIBUTES) == 14
    phrases = {name: [f"{name} one", f"{name} two"] for name in reversed(UNIPT_ATTRIBUTES)}
    vocabulary = unipt_vocabulary(
        phrases,
        prompt_templates={"gender": "A photo of a {}."},
        absent_prompts={"bag": ["A photo of a person carrying nothing."]},
    )
    assert vocabulary.names == UNIPT_ATTRIBUTES  # UniPT's order, whatever the mapping's
    assert [a.required for a in vocabulary.attributes] == [True] * 6 + [False] * 8
    assert vocabulary.attribute("gender").prompts() == (
        "A photo of a gender one.",
        "A photo of a gender two.",
    )
    assert vocabulary.attribute("age").prompts()[0] == "A photo of a person age one."
    with pytest.raises(ValueError, match="phrases must name attributes of UniPT"):
        unipt_vocabulary({"shoes": ["red shoes"]})
    with pytest.raises(ValueError, match="absent_prompts must name optional attributes"):
        unipt_vocabulary(phrases, absent_prompts={"age": ["x"]})


def test_prompts_list_phrases_then_absent_prompts_with_their_owners() -> None:
    vocabulary = AttributeVocabulary(
        (
            Attribute("gender", ("man", "woman"), True, "A photo of a {}."),
            Attribute("bag", ("a backpack",), False, absent_prompts=("no bag",)),
        )
    )
    prompts, owners = vocabulary.prompts()
    assert prompts == [
        "A photo of a man.",
        "A photo of a woman.",
        "A photo of a person a backpack.",
        "no bag",
    ]
    assert owners == [PromptOwner(0, 0), PromptOwner(0, 1), PromptOwner(1, 0), PromptOwner(1, None)]


def test_the_synthetic_vocabulary_has_a_phrase_per_attribute_label() -> None:
    vocabulary = synthetic_vocabulary()
    assert vocabulary.names == tuple(spec.name for spec in PEDESTRIAN_ATTRIBUTES)
    labels = [
        (attribute.name, value)
        for attribute, spec in zip(vocabulary.attributes, PEDESTRIAN_ATTRIBUTES, strict=True)
        for value, phrase in zip(
            [v for v in spec.values if spec.words[v]], attribute.phrases, strict=True
        )
        if spec.words[value][0] == phrase
    ]
    assert tuple(labels) == ATTRIBUTE_LABELS
    hair = vocabulary.attribute("hair_style")
    assert hair.prompts()[0] == "A photo of a person with short hair."
    assert vocabulary.synonyms["grey"] == ("gray",) and vocabulary.synonyms["top"] == ("shirt",)
    optional = [a.name for a in vocabulary.attributes if not a.required]
    assert optional == ["hair_colour", "bag", "hat"]
    assert all(vocabulary.attribute(name).absent_prompts for name in optional)


def test_a_vocabulary_survives_a_json_file(tmp_path) -> None:
    vocabulary = synthetic_vocabulary()
    path = vocabulary.to_json(tmp_path / "vocabulary.json")
    assert AttributeVocabulary.from_json(path) == vocabulary


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"attrs": []}, "a vocabulary must be a mapping with an 'attributes' list"),
        ({"attributes": [{"name": "a", "phrases": ["x"]}]}, "need 'name', 'phrases'"),
        (
            {"attributes": [{"name": "a", "phrases": ["x"], "required": "yes"}]},
            "required must be true or false",
        ),
        (
            {"attributes": [{"name": "a", "phrases": ["x"], "required": True, "colour": 1}]},
            "unknown keys \\['colour'\\]",
        ),
        (
            {"attributes": [{"name": "a", "phrases": ["x", "x"], "required": True}]},
            "phrases must be distinct",
        ),
        (
            {
                "attributes": [
                    {"name": "a", "phrases": ["x"], "required": True, "prompt_template": "{} {}"}
                ]
            },
            "must hold one",
        ),
        (
            {
                "attributes": [
                    {"name": "a", "phrases": ["x"], "required": True},
                    {"name": "a", "phrases": ["y"], "required": False},
                ]
            },
            "repeated: \\['a'\\]",
        ),
        (
            {
                "attributes": [
                    {"name": "a", "phrases": ["x"], "required": True, "absent_prompts": ["n"]}
                ]
            },
            "a required attribute has no absent_prompts",
        ),
    ],
)
def test_malformed_vocabularies_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttributeVocabulary.from_dict(data)
