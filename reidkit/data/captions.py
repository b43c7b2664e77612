"""Templated captions of synthetic pedestrians, with synonyms (UniPT's combine stage).

A caption states every attribute of :data:`~reidkit.data.attributes.PEDESTRIAN_ATTRIBUTES`
that has words for its value, and nothing else: one sentence from :data:`SENTENCES` names the
upper-body garment (sleeve length, pattern, colour), the lower garment and its colour, the
shoes and the hair; a hat and a bag, when worn, get one sentence each from
:data:`OPTIONAL_SENTENCES`. Every value is named by one of its synonyms and every garment by
one of its nouns, drawn with the caller's generator, and the texts refer to the person without
gender ("they").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from reidkit.data.attributes import (
    ATTRIBUTE_SPECS,
    AttributeValues,
    indefinite_article,
    validate_attributes,
)

SUBJECTS = ("A person", "A pedestrian", "Someone", "An individual")
"""How a sentence names the person."""

NOUNS = {"top": ("top", "shirt"), "shoes": ("shoes", "sneakers"), "hat": ("hat", "cap")}
"""Synonymous nouns of the garments whose attributes name only a property (colour, pattern)."""

SENTENCES = (
    "{subject} wearing {upper} and {lower}, with {shoes} and {hair}.",
    "{subject} with {hair} is dressed in {upper}, {lower} and {shoes}.",
    "{subject} has {hair} and wears {upper} with {lower} and {shoes}.",
    "{subject} in {upper} and {lower} walks by in {shoes}. They have {hair}.",
)
"""Templates of the sentence that states the required attributes."""

OPTIONAL_SENTENCES = {
    "hat": ("They wear {hat}.", "On their head is {hat}."),
    "bag": ("They carry {bag}.", "They have {bag} with them."),
}
"""Templates of the sentence stating each optional attribute, used when it has words."""


def compose_captions(
    attributes: AttributeValues, count: int, rng: np.random.Generator
) -> tuple[str, ...]:
    """``count`` captions of one person, each from a different sentence template.

    Args:
        attributes: the person's attribute values (as from
            :func:`~reidkit.data.attributes.pedestrian_attributes`).
        count: number of captions, 1 to ``len(SENTENCES)``.
        rng: source of the template, subject, synonym and noun choices.

    Raises:
        ValueError: ``count`` out of range or malformed ``attributes``.
    """
    if not 1 <= count <= len(SENTENCES):
        raise ValueError(f"count={count!r}; expected an integer in [1, {len(SENTENCES)}]")
    validate_attributes(attributes)
    templates = rng.choice(len(SENTENCES), count, replace=False)
    return tuple(_caption(attributes, SENTENCES[int(index)], rng) for index in templates)


def _caption(attributes: AttributeValues, template: str, rng: np.random.Generator) -> str:
    def words_of(name: str) -> tuple[str, ...]:
        value = attributes[name]
        if value is None:
            raise ValueError(f"attributes[{name!r}] is None (not visible): it has no words")
        return ATTRIBUTE_SPECS[name].words[value]

    def word(name: str) -> str:
        return _draw(rng, words_of(name))

    upper = f"{word('sleeve_length')} {word('upper_pattern')} {word('upper_colour')}"
    lower = f"{word('lower_colour')} {word('lower_garment')}"
    if attributes["lower_garment"] == "skirt":
        lower = _with_article(lower)
    hair = word("hair_style")
    if attributes["hair_style"] != "bald" and attributes["hair_colour"] is not None:
        length, noun = hair.rsplit(" ", 1)
        hair = f"{length} {word('hair_colour')} {noun}"
    text = template.format(
        subject=_draw(rng, SUBJECTS),
        upper=_with_article(f"{upper} {_draw(rng, NOUNS['top'])}"),
        lower=lower,
        shoes=f"{word('shoe_colour')} {_draw(rng, NOUNS['shoes'])}",
        hair=hair,
    )
    optional: dict[str, Callable[[], str]] = {
        "hat": lambda: _with_article(f"{word('hat')} {_draw(rng, NOUNS['hat'])}"),
        "bag": lambda: _with_article(word("bag")),
    }
    for name, phrase in optional.items():
        if words_of(name):
            text += " " + _draw(rng, OPTIONAL_SENTENCES[name]).format(**{name: phrase()})
    return text


def _draw(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(phrase: str) -> str:
    return f"{indefinite_article(phrase)} {phrase}"
