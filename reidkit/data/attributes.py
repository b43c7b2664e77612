"""The attributes a synthetic pedestrian is drawn with, as words, phrases and multi-hot labels.

:data:`PEDESTRIAN_ATTRIBUTES` lists ten attributes of
:class:`~reidkit.data.pedestrians.PedestrianIdentity` that a caption can state: upper-body
colour, pattern and sleeve length, lower-body colour and garment, shoe colour, hair style and
colour, bag and hat. Each :class:`AttributeSpec` gives the attribute's possible values, the
words that name each value in a caption (synonyms first to last) and self-contained phrases
for a prompt such as ``"A photo of a person {phrase}."`` (UniPT's divide stage), so that an
attribute vocabulary can be derived from the synthetic pedestrians.

An attribute's value is a string, or ``None`` where it cannot be seen (the hair colour of a
bald person). Values with no words (``"none"`` for bag and hat) are real values that a caption
states by silence. The multi-hot label vector has one column per (attribute, value) pair that
has words (:data:`ATTRIBUTE_LABELS`), so absent and hidden attributes leave their columns 0.

Colours are read back from an identity by the nearest palette colour in the max-channel
(Chebyshev) distance: every drawn colour is a palette colour shifted by at most
:data:`~reidkit.data.pedestrians.CLOTHING_JITTER` per channel, and the palette colours are
further apart than twice that, so the nearest palette colour is the one drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reidkit.data.pedestrians import (
    CLOTHING_COLOUR_NAMES,
    CLOTHING_PALETTE,
    HAIR_COLOUR_NAMES,
    HAIR_COLOURS,
    SHOE_PALETTE,
    Colour,
    PedestrianIdentity,
)

AttributeValues = Mapping[str, str | None]
"""An attribute name → value (``None``: not visible) mapping, as :func:`pedestrian_attributes`
returns."""


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its values, the words that name them and phrases that state them.

    Attributes:
        name: attribute name, e.g. ``"upper_colour"``.
        values: the possible values, e.g. ``("black", "white", ...)``.
        words: for each value, the words that name it in a caption (synonyms; the first is
            the canonical one); empty for a value a caption states by silence (``"none"``).
        phrases: for each value, self-contained phrases stating it after "a person", e.g.
            ``("wearing a red top", "wearing a red shirt")``; empty where ``words`` is.
        required: whether every person shows a stated value (UniPT's required set); optional
            attributes may be absent (``"none"``) or hidden (``None``).
    """

    name: str
    values: tuple[str, ...]
    words: Mapping[str, tuple[str, ...]]
    phrases: Mapping[str, tuple[str, ...]]
    required: bool


def indefinite_article(word: str) -> str:
    """``"an"`` before a word that starts with a vowel letter, else ``"a"``."""
    return "an" if word[0] in "aeiou" else "a"


def _spec(
    name: str,
    words: Mapping[str, tuple[str, ...]],
    phrase: str,
    required: bool,
) -> AttributeSpec:
    """An attribute whose phrases fill ``phrase``'s ``{word}`` (and ``{a}``, its article)."""
    return AttributeSpec(
        name=name,
        values=tuple(words),
        words=dict(words),
        phrases={
            value: tuple(phrase.format(word=word, a=indefinite_article(word)) for word in synonyms)
            for value, synonyms in words.items()
        },
        required=required,
    )


_COLOUR_SYNONYMS = {
    "grey": ("grey", "gray"),
    "navy": ("navy", "navy blue"),
    "dark red": ("dark red", "maroon"),
    "olive": ("olive", "olive green"),
    "khaki": ("khaki", "beige"),
    "purple": ("purple", "violet"),
}
_SHOE_COLOUR_NAMES = tuple(
    CLOTHING_COLOUR_NAMES[CLOTHING_PALETTE.index(colour)] for colour in SHOE_PALETTE
)


def _colour_words(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return {name: _COLOUR_SYNONYMS.get(name, (name,)) for name in names}


PEDESTRIAN_ATTRIBUTES: tuple[AttributeSpec, ...] = (
    _spec("upper_colour", _colour_words(CLOTHING_COLOUR_NAMES), "wearing {a} {word} top", True),
    _spec(
        "upper_pattern",
        {
            "plain": ("plain", "solid"),
            "horizontal_stripes": ("horizontally striped",),
            "vertical_stripes": ("vertically striped",),
            "checks": ("checked", "plaid"),
        },
        "wearing {a} {word} top",
        True,
    ),
    _spec(
        "sleeve_length",
        {"long": ("long-sleeved",), "short": ("short-sleeved",)},
        "wearing {a} {word} top",
        True,
    ),
    _spec("lower_colour", _colour_words(CLOTHING_COLOUR_NAMES), "wearing {word} bottoms", True),
    _spec(
        "lower_garment",
        {"trousers": ("trousers", "pants"), "shorts": ("shorts",), "skirt": ("skirt",)},
        "wearing {word}",
        True,
    ),
    _spec("shoe_colour", _colour_words(_SHOE_COLOUR_NAMES), "wearing {word} shoes", True),
    _spec(
        "hair_style",
        {
            "short": ("short hair", "cropped hair"),
            "long": ("long hair",),
            "bald": ("a bald head", "a shaved head"),
        },
        "with {word}",
        True,
    ),
    _spec("hair_colour", _colour_words(HAIR_COLOUR_NAMES), "with {word} hair", False),
    _spec(
        "bag",
        {"none": (), "backpack": ("backpack", "rucksack"), "shoulder_bag": ("shoulder bag",)},
        "carrying {a} {word}",
        False,
    ),
    _spec(
        "hat", {"none": (), **_colour_words(CLOTHING_COLOUR_NAMES)}, "wearing {a} {word} hat", False
    ),
)
"""The attributes of a synthetic pedestrian, in caption order."""

ATTRIBUTE_SPECS: dict[str, AttributeSpec] = {spec.name: spec for spec in PEDESTRIAN_ATTRIBUTES}
""":data:`PEDESTRIAN_ATTRIBUTES` by name."""

ATTRIBUTE_LABELS: tuple[tuple[str, str], ...] = tuple(
    (spec.name, value)
    for spec in PEDESTRIAN_ATTRIBUTES
    for value in spec.values
    if spec.words[value]
)
"""The ``(attribute, value)`` pair of each column of a multi-hot label vector."""


def nearest_colour_name(colour: Colour, palette: Sequence[Colour], names: Sequence[str]) -> str:
    """Name of the ``palette`` colour nearest to ``colour`` in the max-channel distance."""
    distances = np.abs(np.asarray(palette) - np.asarray(colour)).max(axis=1)
    return names[int(np.argmin(distances))]


def pedestrian_attributes(identity: PedestrianIdentity) -> dict[str, str | None]:
    """The value of every attribute of :data:`PEDESTRIAN_ATTRIBUTES` that ``identity`` shows.

    The accent colour of a patterned top, skin, body proportions and local cues are not
    attributes. The hair colour is ``None`` (not visible) for a bald person.
    """

    def clothing(colour: Colour) -> str:
        return nearest_colour_name(colour, CLOTHING_PALETTE, CLOTHING_COLOUR_NAMES)

    bald = identity.hair_style == "bald"
    return {
        "upper_colour": clothing(identity.top_colour),
        "upper_pattern": identity.top_pattern,
        "sleeve_length": "long" if identity.long_sleeves else "short",
        "lower_colour": clothing(identity.lower_colour),
        "lower_garment": identity.lower_garment,
        "shoe_colour": nearest_colour_name(identity.shoe_colour, SHOE_PALETTE, _SHOE_COLOUR_NAMES),
        "hair_style": identity.hair_style,
        "hair_colour": None
        if bald
        else nearest_colour_name(identity.hair_colour, HAIR_COLOURS, HAIR_COLOUR_NAMES),
        "bag": identity.bag,
        "hat": "none" if identity.hat_colour is None else clothing(identity.hat_colour),
    }


def attribute_labels(attributes: AttributeValues) -> np.ndarray:
    """Multi-hot ``(len(ATTRIBUTE_LABELS),)`` uint8 vector of ``attributes``.

    Column ``j`` is 1 when ``attributes[ATTRIBUTE_LABELS[j][0]] == ATTRIBUTE_LABELS[j][1]``.

    Raises:
        ValueError: an attribute is missing or has a value outside its spec.
    """
    validate_attributes(attributes)
    return np.array([attributes[name] == value for name, value in ATTRIBUTE_LABELS], dtype=np.uint8)


def corrupt_attributes(
    attributes: AttributeValues, probability: float, rng: np.random.Generator
) -> dict[str, str | None]:
    """Replace each visible attribute, with ``probability``, by another of its values.

    Stands in for the errors of scoring attribute prompts with CLIP (UniPT's conquer stage):
    each attribute independently keeps its value with probability ``1 - probability`` and
    otherwise takes one of its other values, uniformly. A hidden value (``None``) stays hidden,
    and the hair colour is hidden when the hair style becomes ``"bald"``. ``rng`` draws the same
    numbers whatever the outcome, so the corruption of an attribute does not depend on that of
    the others.

    Raises:
        ValueError: ``probability`` outside ``[0, 1]``, or malformed ``attributes``.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability={probability!r}; expected a number in [0, 1]")
    validate_attributes(attributes)
    corrupted: dict[str, str | None] = {}
    for spec in PEDESTRIAN_ATTRIBUTES:
        value = attributes[spec.name]
        flip, pick = rng.random(), int(rng.integers(len(spec.values) - 1))
        if value is not None and flip < probability:
            value = [other for other in spec.values if other != value][pick]
        corrupted[spec.name] = value
    if corrupted["hair_style"] == "bald":
        corrupted["hair_colour"] = None
    return corrupted


def validate_attributes(attributes: AttributeValues) -> None:
    """Raise ``ValueError`` unless ``attributes`` gives every attribute a value of its spec."""
    for spec in PEDESTRIAN_ATTRIBUTES:
        if spec.name not in attributes:
            raise ValueError(
                f"attributes lack {spec.name!r}; expected every attribute of PEDESTRIAN_ATTRIBUTES"
            )
        value = attributes[spec.name]
        if value is not None and value not in spec.values:
            raise ValueError(
                f"attributes[{spec.name!r}]={value!r}; expected None or one of {list(spec.values)}"
            )
