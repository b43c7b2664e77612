"""Caption templates filled with the selected phrases: UniPT's combine stage (sec. 3.1).

"We pre-defined 456 templates with "blank" positions for phrases [...]. For a person image, we
randomly choose one template, then automatically fill its candidate phrases from the conquer
stage into the corresponding blanks [...] we also use synonym substitution to enrich the
diversity of the textual descriptions."

A template is text with blanks ``<name>`` (an attribute of the vocabulary) and optional
segments in square brackets, which are written only when every blank inside them has a phrase:

    ``"A <gender> wearing <upper clothes> and <lower clothes>.[ They carry <bag>.]"``

A blank outside brackets must be filled, so a template is drawn among those whose bracket-free
blanks all have a phrase for the image. After filling, every word or phrase of the
vocabulary's synonyms is replaced by one of itself and its alternatives, drawn uniformly (one
pass, longest match first, so a replacement is never replaced again); ``a`` becomes ``an``
before a vowel letter (and back), and each sentence starts with a capital. Every draw comes
from a generator seeded with the composer's seed and the image's key, so the captions of an
image do not depend on the other images or on their order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reidkit.pseudotext.vocabulary import AttributeVocabulary

_BLANK = re.compile(r"<([^<>\[\]]+)>")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

SYNTHETIC_TEMPLATES = (
    "A person wearing a <sleeve_length> <upper_pattern> <upper_colour> top and <lower_colour> "
    "<lower_garment>, with <shoe_colour> shoes and <hair_style>.[ Their hair is <hair_colour>.]"
    "[ They carry a <bag>.][ They wear a <hat> hat.]",
    "A pedestrian with <hair_style>[ of <hair_colour> colour] in a <upper_colour> <upper_pattern>"
    " <sleeve_length> top, <lower_colour> <lower_garment> and <shoe_colour> shoes.[ On their head"
    " is a <hat> hat.][ They have a <bag> with them.]",
    "Someone in <lower_colour> <lower_garment> and a <sleeve_length> <upper_colour> top that is "
    "<upper_pattern>.[ They carry a <bag>.] Their shoes are <shoe_colour> and they have "
    "<hair_style>.",
    "The person has <hair_style> and wears a <sleeve_length> <upper_pattern> <upper_colour> top, "
    "<lower_colour> <lower_garment> and <shoe_colour> shoes.[ A <hat> hat is on their head.]",
)
"""Caption templates for :func:`~reidkit.pseudotext.vocabulary.synthetic_vocabulary`."""


@dataclass(frozen=True)
class CaptionTemplate:
    """A parsed caption template.

    Attributes:
        text: the template.
        required: the attribute names of the blanks outside brackets.
        optional: the attribute names of the blanks inside brackets.
    """

    text: str
    required: frozenset[str]
    optional: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> CaptionTemplate:
        """Parse ``text``.

        Raises:
            ValueError: nested or unbalanced brackets, a bracket with no blank, or no blank.
        """
        depth = 0
        for character in text:
            depth += {"[": 1, "]": -1}.get(character, 0)
            if depth not in (0, 1):
                raise ValueError(f"template {text!r}: brackets must be balanced, not nested")
        if depth:
            raise ValueError(f"template {text!r}: brackets must be balanced, not nested")
        segments = _SEGMENT.findall(text)
        if any(not _BLANK.search(segment) for segment in segments):
            raise ValueError(f"template {text!r}: every [...] segment needs a <blank>")
        outside = _SEGMENT.sub("", text)
        required = frozenset(_BLANK.findall(outside))
        optional = frozenset(name for segment in segments for name in _BLANK.findall(segment))
        if not required and not optional:
            raise ValueError(f"template {text!r} has no <blank>")
        return cls(text, required, optional)

    @property
    def blanks(self) -> frozenset[str]:
        """Every attribute name the template names."""
        return self.required | self.optional

    def fill(self, phrases: Mapping[str, str | None]) -> str:
        """The template with its blanks filled and the segments with an empty blank dropped.

        Args:
            phrases: attribute name to phrase (``None``: the attribute was not selected).

        Raises:
            ValueError: a blank outside brackets has no phrase.
        """
        missing = sorted(name for name in self.required if phrases.get(name) is None)
        if missing:
            raise ValueError(f"template {self.text!r} needs phrases for {missing}")

        def segment(match: re.Match[str]) -> str:
            names = _BLANK.findall(match.group(1))
            return match.group(1) if all(phrases.get(name) for name in names) else ""

        text = _SEGMENT.sub(segment, self.text)
        return _BLANK.sub(lambda match: str(phrases[match.group(1)]), text)


class PseudoTextComposer:
    """Write captions from selected phrases with templates and synonyms, deterministically.

    Args:
        vocabulary: the attributes the templates name and the synonyms.
        templates: caption templates (see the module docstring), at least one.
        seed: the base seed of every draw.

    Raises:
        ValueError: a template names an attribute the vocabulary lacks.
    """

    def __init__(
        self, vocabulary: AttributeVocabulary, templates: Sequence[str], seed: int = 0
    ) -> None:
        if isinstance(templates, str) or not templates:
            raise ValueError("templates must be a non-empty sequence of template strings")
        self.vocabulary = vocabulary
        self.templates = tuple(CaptionTemplate.parse(text) for text in templates)
        self.seed = seed
        for template in self.templates:
            unknown = sorted(template.blanks - set(vocabulary.names))
            if unknown:
                raise ValueError(
                    f"template {template.text!r} names attributes the vocabulary lacks: {unknown}"
                )
        keys = sorted(vocabulary.synonyms, key=len, reverse=True)
        self._synonym_pattern = (
            re.compile(r"\b(" + "|".join(re.escape(key) for key in keys) + r")\b") if keys else None
        )

    def generator(self, key: str) -> np.random.Generator:
        """The generator of the draws for the image ``key`` (e.g. its relative path)."""
        digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
        return np.random.default_rng([self.seed, digest])

    def compose(
        self, phrases: Mapping[str, str | None], key: str, count: int = 1
    ) -> tuple[str, ...]:
        """``count`` captions of one image, from distinct templates where there are enough.

        Args:
            phrases: attribute name to selected phrase, ``None`` where none was selected
                (:func:`~reidkit.pseudotext.conquer.select_phrases`).
            key: the image's key; the same key, phrases and seed give the same captions.
            count: captions to write (>= 1).

        Raises:
            ValueError: no template has all its bracket-free blanks selected.
        """
        if count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        usable = [t for t in self.templates if all(phrases.get(name) for name in t.required)]
        if not usable:
            selected = sorted(name for name, phrase in phrases.items() if phrase)
            raise ValueError(
                f"no template can describe image {key!r}: each needs an attribute that was not "
                f"selected (selected: {selected})"
            )
        rng = self.generator(key)
        order = rng.permutation(len(usable))
        captions = []
        for index in range(count):
            template = usable[int(order[index % len(usable)])]
            captions.append(self._finish(template.fill(phrases), rng))
        return tuple(captions)

    def _finish(self, text: str, rng: np.random.Generator) -> str:
        if self._synonym_pattern is not None:
            synonyms = self.vocabulary.synonyms

            def substitute(match: re.Match[str]) -> str:
                options = (match.group(1), *synonyms[match.group(1)])
                return options[int(rng.integers(len(options)))]

            text = self._synonym_pattern.sub(substitute, text)
        text = re.sub(r"\b([Aa])n? (?=\w)", _article, text)
        text = re.sub(r"\s+", " ", text).strip()
        return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _article(match: re.Match[str]) -> str:
    """``a`` or ``an`` (capitalised as found) for the word that follows the match."""
    following = match.string[match.end() : match.end() + 1]
    article = "an" if following.lower() in "aeiou" else "a"
    return (article.capitalize() if match.group(1) == "A" else article) + " "
