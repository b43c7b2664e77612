"""Attribute vocabularies: UniPT's divide stage (sec. 3.1).

"We divide the person characteristics into attribute phrases": each attribute (``<upper
clothes>``, ``<bag>``, ...) has a list of phrases (``"a blue striped shirt"``, ...), belongs to
the required set (every person has one of its phrases) or to the optional set (a person may
show none), and becomes CLIP prompts through a template, ``"A photo of a person {}."``
("with minor modifications based on different phrases", e.g. ``"A photo of a {}."`` for the
gender). Synonyms enrich the captions in the combine stage.

UniPT's 14 attributes are :data:`UNIPT_ATTRIBUTES`; their phrases are in the paper's
supplementary material and are user data here (:func:`unipt_vocabulary`, or a JSON file read
by :meth:`AttributeVocabulary.from_json`). :func:`synthetic_vocabulary` derives a vocabulary
from the attributes the built-in synthetic pedestrians are drawn with
(:data:`~reidkit.data.attributes.PEDESTRIAN_ATTRIBUTES`).

A JSON vocabulary looks like::

    {
      "attributes": [
        {"name": "upper clothes", "required": true,
         "phrases": ["a blue striped shirt", "a white t-shirt"],
         "prompt_template": "A photo of a person wearing {}."},
        {"name": "bag", "required": false, "phrases": ["a backpack", "a handbag"],
         "prompt_template": "A photo of a person carrying {}.",
         "absent_prompts": ["A photo of a person carrying nothing."]}
      ],
      "synonyms": {"t-shirt": ["tee"], "backpack": ["rucksack"]}
    }
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidkit.data.attributes import PEDESTRIAN_ATTRIBUTES
from reidkit.data.captions import NOUNS

DEFAULT_PROMPT_TEMPLATE = "A photo of a person {}."
"""UniPT's prompt format, "A photo of a person <phrases>"."""

UNIPT_REQUIRED_ATTRIBUTES = (
    "age",
    "gender",
    "upper clothes",
    "lower clothes",
    "action",
    "hair length",
)
"""UniPT's required set: every person shows one phrase of each."""

UNIPT_OPTIONAL_ATTRIBUTES = (
    "bag",
    "glasses",
    "smoke",
    "hat",
    "cellphone",
    "umbrella",
    "gloves",
    "vehicle",
)
"""UniPT's optional set: attributes a person is likely, not certain, to have."""

UNIPT_ATTRIBUTES = UNIPT_REQUIRED_ATTRIBUTES + UNIPT_OPTIONAL_ATTRIBUTES
"""UniPT's 14 attribute names, required ones first."""


@dataclass(frozen=True)
class Attribute:
    """One attribute of a vocabulary.

    Attributes:
        name: the attribute's name, also its blank in caption templates (``<name>``).
        phrases: the texts a caption may state it with, e.g. ``("a blue striped shirt", ...)``.
        required: whether every person shows one of its phrases (UniPT's required set).
        prompt_template: the CLIP prompt with ``{}`` where a phrase goes.
        prompt_phrases: what fills the prompt for each phrase (same length as ``phrases``);
            empty: the phrases themselves.
        absent_prompts: whole prompts stating that an optional attribute is absent
            (``"A photo of a person carrying nothing."``); they compete with the phrases in
            the softmax but are never written in a caption.
    """

    name: str
    phrases: tuple[str, ...]
    required: bool
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    prompt_phrases: tuple[str, ...] = ()
    absent_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("phrases", "prompt_phrases", "absent_prompts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        where = f"attribute {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip() or "<" in self.name:
            raise ValueError(f"name must be a non-blank string without '<', got {self.name!r}")
        if not self.phrases or any(not isinstance(p, str) or not p.strip() for p in self.phrases):
            raise ValueError(f"{where}: phrases must be non-blank strings, at least one")
        if len(set(self.phrases)) != len(self.phrases):
            raise ValueError(f"{where}: phrases must be distinct, got {list(self.phrases)}")
        if self.prompt_template.count("{}") != 1:
            raise ValueError(
                f"{where}: prompt_template must hold one '{{}}' for the phrase, got "
                f"{self.prompt_template!r}"
            )
        if self.prompt_phrases and len(self.prompt_phrases) != len(self.phrases):
            raise ValueError(
                f"{where}: prompt_phrases must give one prompt phrase per phrase "
                f"({len(self.phrases)}), got {len(self.prompt_phrases)}"
            )
        if self.required and self.absent_prompts:
            raise ValueError(f"{where}: a required attribute has no absent_prompts")

    def prompts(self) -> tuple[str, ...]:
        """The prompt of every phrase, in order (absent prompts not included)."""
        fillers = self.prompt_phrases or self.phrases
        return tuple(self.prompt_template.format(filler) for filler in fillers)

    def to_dict(self) -> dict[str, Any]:
        """The attribute as JSON-able data (:meth:`AttributeVocabulary.to_dict`)."""
        data: dict[str, Any] = {
            "name": self.name,
            "required": self.required,
            "phrases": list(self.phrases),
            "prompt_template": self.prompt_template,
        }
        if self.prompt_phrases:
            data["prompt_phrases"] = list(self.prompt_phrases)
        if self.absent_prompts:
            data["absent_prompts"] = list(self.absent_prompts)
        return data


@dataclass(frozen=True)
class PromptOwner:
    """Which attribute a prompt of :meth:`AttributeVocabulary.prompts` states, and how.

    Attributes:
        attribute: the attribute's index in the vocabulary.
        phrase: the phrase's index in the attribute, or ``None`` for an absent prompt.
    """

    attribute: int
    phrase: int | None


@dataclass(frozen=True)
class AttributeVocabulary:
    """Attributes with their phrases and prompts, and synonyms for the captions.

    Attributes:
        attributes: the attributes, with distinct names.
        synonyms: a word or phrase of the captions mapped to its alternatives, e.g.
            ``{"backpack": ("rucksack",)}``; the combine stage replaces each occurrence by
            one of the word and its alternatives.
    """

    attributes: tuple[Attribute, ...]
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(
            self, "synonyms", {key: tuple(values) for key, values in dict(self.synonyms).items()}
        )
        if not self.attributes or not all(isinstance(a, Attribute) for a in self.attributes):
            raise ValueError("attributes must be a non-empty sequence of Attribute")
        names = [attribute.name for attribute in self.attributes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"attributes must have distinct names; repeated: {repeated}")
        for key, values in self.synonyms.items():
            if not key.strip() or not values or any(not v.strip() for v in values):
                raise ValueError(
                    f"synonyms must map non-blank words to non-blank alternatives, got "
                    f"{key!r}: {list(values)}"
                )

    @property
    def names(self) -> tuple[str, ...]:
        """The attribute names, in order."""
        return tuple(attribute.name for attribute in self.attributes)

    def attribute(self, name: str) -> Attribute:
        """The attribute called ``name``."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise ValueError(f"name must be one of {list(self.names)}, got {name!r}")

    def prompts(self) -> tuple[list[str], list[PromptOwner]]:
        """Every prompt of the vocabulary and what it states.

        Returns:
            ``(prompts, owners)``: for each attribute in order, the prompts of its phrases
            then its absent prompts; ``owners[p]`` says whose prompt ``p`` is.
        """
        prompts: list[str] = []
        owners: list[PromptOwner] = []
        for index, attribute in enumerate(self.attributes):
            for phrase, prompt in enumerate(attribute.prompts()):
                prompts.append(prompt)
                owners.append(PromptOwner(index, phrase))
            for prompt in attribute.absent_prompts:
                prompts.append(prompt)
                owners.append(PromptOwner(index, None))
        return prompts, owners

    def to_dict(self) -> dict[str, Any]:
        """The vocabulary as JSON-able data, the format :meth:`from_dict` reads."""
        return {
            "attributes": [attribute.to_dict() for attribute in self.attributes],
            "synonyms": {key: list(values) for key, values in self.synonyms.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeVocabulary:
        """A vocabulary from ``{"attributes": [...], "synonyms": {...}}`` (see the module).

        Raises:
            ValueError: a missing or unknown key, or an attribute that fails its checks.
        """
        if not isinstance(data, Mapping) or "attributes" not in data:
            raise ValueError("a vocabulary must be a mapping with an 'attributes' list")
        unknown = set(data) - {"attributes", "synonyms"}
        if unknown:
            raise ValueError(f"a vocabulary has 'attributes' and 'synonyms', got {sorted(unknown)}")
        fields = {f.name for f in dataclasses.fields(Attribute)}
        attributes = []
        for entry in data["attributes"]:
            if not isinstance(entry, Mapping) or not {"name", "phrases", "required"} <= set(entry):
                raise ValueError(
                    f"attribute entries need 'name', 'phrases' and 'required', got {entry!r}"
                )
            if set(entry) - fields:
                raise ValueError(
                    f"attribute {entry['name']!r} has unknown keys {sorted(set(entry) - fields)}"
                )
            if not isinstance(entry["required"], bool):
                raise ValueError(
                    f"attribute {entry['name']!r}: required must be true or false, got "
                    f"{entry['required']!r}"
                )
            attributes.append(Attribute(**entry))
        return cls(tuple(attributes), data.get("synonyms", {}))

    @classmethod
    def from_json(cls, path: str | Path) -> AttributeVocabulary:
        """The vocabulary of a JSON file (see the module docstring for the format)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_json(self, path: str | Path) -> Path:
        """Write the vocabulary to ``path`` as JSON; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path


def unipt_vocabulary(
    phrases: Mapping[str, Sequence[str]],
    *,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    prompt_templates: Mapping[str, str] | None = None,
    absent_prompts: Mapping[str, Sequence[str]] | None = None,
) -> AttributeVocabulary:
    """A vocabulary of UniPT's attributes with the phrases the caller gives.

    Args:
        phrases: phrases of some of :data:`UNIPT_ATTRIBUTES` (the paper's supplementary lists
            them), e.g. ``{"upper clothes": ["a blue striped shirt", ...], "bag": [...]}``; the
            attributes are kept in UniPT's order, required (the first six) or optional as the
            paper groups them.
        synonyms: words of the captions and their alternatives.
        prompt_templates: a template per attribute name where it differs from
            :data:`DEFAULT_PROMPT_TEMPLATE` (``{"gender": "A photo of a {}."}``).
        absent_prompts: prompts stating the absence of optional attributes.

    Raises:
        ValueError: a name that is not one of UniPT's 14, or no attribute at all.
    """
    templates = dict(prompt_templates or {})
    absent = dict(absent_prompts or {})
    for argument, names in (("phrases", phrases), ("prompt_templates", templates)):
        unknown = sorted(set(names) - set(UNIPT_ATTRIBUTES))
        if unknown:
            raise ValueError(
                f"{argument} must name attributes of UniPT {list(UNIPT_ATTRIBUTES)}, got {unknown}"
            )
    unknown = sorted(set(absent) - set(UNIPT_OPTIONAL_ATTRIBUTES))
    if unknown:
        raise ValueError(f"absent_prompts must name optional attributes of UniPT, got {unknown}")
    attributes = tuple(
        Attribute(
            name,
            tuple(phrases[name]),
            required=name in UNIPT_REQUIRED_ATTRIBUTES,
            prompt_template=templates.get(name, DEFAULT_PROMPT_TEMPLATE),
            absent_prompts=tuple(absent.get(name, ())),
        )
        for name in UNIPT_ATTRIBUTES
        if name in phrases
    )
    return AttributeVocabulary(
        attributes, {key: tuple(values) for key, values in (synonyms or {}).items()}
    )


_SYNTHETIC_ABSENT_PROMPTS = {
    "hair_colour": ("A photo of a bald person.",),
    "bag": ("A photo of a person carrying no bag.",),
    "hat": ("A photo of a person with no hat.",),
}


def synthetic_vocabulary() -> AttributeVocabulary:
    """The vocabulary of the built-in synthetic pedestrians.

    One attribute per :data:`~reidkit.data.attributes.PEDESTRIAN_ATTRIBUTES` entry, with the
    same name and required flag; one phrase per value that has words (the canonical word, e.g.
    ``"red"``, ``"long-sleeved"``, ``"short hair"``), in the order of
    :data:`~reidkit.data.attributes.ATTRIBUTE_LABELS`, prompted with the attribute's own
    phrase after "A photo of a person" (``"A photo of a person wearing a red top."``); absent
    prompts for the optional ones; the other words of each value and the garment nouns of
    :data:`~reidkit.data.captions.NOUNS` as synonyms. :data:`SYNTHETIC_TEMPLATES
    <reidkit.pseudotext.combine.SYNTHETIC_TEMPLATES>` are caption templates for it.
    """
    attributes = []
    synonyms: dict[str, tuple[str, ...]] = {}
    for spec in PEDESTRIAN_ATTRIBUTES:
        values = [value for value in spec.values if spec.words[value]]
        attributes.append(
            Attribute(
                spec.name,
                tuple(spec.words[value][0] for value in values),
                required=spec.required,
                prompt_phrases=tuple(spec.phrases[value][0] for value in values),
                absent_prompts=_SYNTHETIC_ABSENT_PROMPTS.get(spec.name, ()),
            )
        )
        for value in values:
            canonical, *others = spec.words[value]
            if others:
                synonyms[canonical] = tuple(others)
    for canonical, *others in NOUNS.values():
        synonyms[canonical] = tuple(others)
    return AttributeVocabulary(tuple(attributes), synonyms)
