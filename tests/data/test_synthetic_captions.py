"""SyntheticCaptionedReID: captions parsed back against the drawn identities, attribute labels,
the corruption rate of the pseudo texts, determinism and caching."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reidkit.data.synthetic_captions as captions_module
from reidkit.data import (
    ATTRIBUTE_LABELS,
    ATTRIBUTE_SPECS,
    PEDESTRIAN_ATTRIBUTES,
    SyntheticCaptionedReID,
    attribute_labels,
    corrupt_attributes,
    pedestrian_attributes,
    synthetic_identity,
)
from reidkit.data.pedestrians import (
    BAGS,
    CLOTHING_COLOUR_NAMES,
    CLOTHING_JITTER,
    CLOTHING_PALETTE,
    HAIR_COLOUR_NAMES,
    HAIR_COLOURS,
    HAIR_STYLES,
    LOWER_GARMENTS,
    TOP_PATTERNS,
    PedestrianIdentity,
)

SMALL = dict(
    num_train_ids=6,
    num_test_ids=6,
    num_cameras=3,
    cameras_per_id=(2, 3),
    images_per_camera=2,
    num_distractors=2,
    num_junk=1,
)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCaptionedReID:
    return SyntheticCaptionedReID(tmp_path_factory.mktemp("captions"), seed=2, **SMALL)


def _alternation(name: str) -> tuple[str, dict[str, str]]:
    """A regex group matching any word of attribute ``name`` (longest first) and word → value."""
    value_of = {
        word: value for value, words in ATTRIBUTE_SPECS[name].words.items() for word in words
    }
    words = sorted(value_of, key=len, reverse=True)
    return "(" + "|".join(re.escape(word) for word in words) + ")", value_of


def parse_caption(text: str) -> dict[str, str | None]:
    """Read every attribute back from a caption with the grammar the captions follow."""
    found: dict[str, str | None] = {}
    sleeve, sleeves = _alternation("sleeve_length")
    pattern, patterns = _alternation("upper_pattern")
    upper, upper_colours = _alternation("upper_colour")
    match = re.search(rf"\ban? {sleeve} {pattern} {upper} (?:top|shirt)\b", text)
    assert match, text
    found["sleeve_length"] = sleeves[match[1]]
    found["upper_pattern"] = patterns[match[2]]
    found["upper_colour"] = upper_colours[match[3]]
    lower, lower_colours = _alternation("lower_colour")
    garment, garments = _alternation("lower_garment")
    match = re.search(rf"\b{lower} {garment}\b", text)
    assert match, text
    found["lower_colour"], found["lower_garment"] = lower_colours[match[1]], garments[match[2]]
    shoe, shoe_colours = _alternation("shoe_colour")
    match = re.search(rf"\b{shoe} (?:shoes|sneakers)\b", text)
    assert match, text
    found["shoe_colour"] = shoe_colours[match[1]]
    hair, hair_colours = _alternation("hair_colour")
    match = re.search(rf"\b(short|cropped|long) (?:{hair} )?hair\b", text)
    if re.search(r"\ba (?:bald|shaved) head\b", text):
        assert match is None, text
        found["hair_style"], found["hair_colour"] = "bald", None
    else:
        assert match, text
        found["hair_style"] = "long" if match[1] == "long" else "short"
        found["hair_colour"] = hair_colours[match[2]] if match[2] else None
    hat, hat_colours = _alternation("hat")
    matches = re.findall(rf"\ban? {hat} (?:hat|cap)\b", text)
    assert len(matches) <= 1, text
    found["hat"] = hat_colours[matches[0]] if matches else "none"
    bag, bags = _alternation("bag")
    matches = re.findall(rf"\ban? {bag}\b", text)
    assert len(matches) <= 1, text
    found["bag"] = bags[matches[0]] if matches else "none"
    return found


def _palette_colour(name: str, names, palette) -> np.ndarray:
    return np.array(palette[names.index(name)])


def _assert_drawn_with(identity: PedestrianIdentity, parsed: dict[str, str | None]) -> None:
    """``parsed`` states what ``identity`` was drawn with: categories exactly, colours as the
    palette colour the drawn colour was jittered from."""

    def near(colour, name, names=CLOTHING_COLOUR_NAMES, palette=CLOTHING_PALETTE, jitter=0):
        gap = np.abs(np.array(colour) - _palette_colour(name, names, palette)).max()
        assert gap <= jitter, (colour, name)

    assert parsed["upper_pattern"] == identity.top_pattern
    assert parsed["sleeve_length"] == ("long" if identity.long_sleeves else "short")
    assert parsed["lower_garment"] == identity.lower_garment
    assert parsed["hair_style"] == identity.hair_style
    assert parsed["bag"] == identity.bag
    near(identity.top_colour, parsed["upper_colour"], jitter=CLOTHING_JITTER)
    near(identity.lower_colour, parsed["lower_colour"], jitter=CLOTHING_JITTER)
    near(identity.shoe_colour, parsed["shoe_colour"], jitter=8)
    if identity.hair_style == "bald":
        assert parsed["hair_colour"] is None
    else:
        near(identity.hair_colour, parsed["hair_colour"], HAIR_COLOUR_NAMES, HAIR_COLOURS)
    if identity.hat_colour is None:
        assert parsed["hat"] == "none"
    else:
        near(identity.hat_colour, parsed["hat"])


def test_captions_state_exactly_the_drawn_attributes(captioned: SyntheticCaptionedReID) -> None:
    config = captioned.images.config
    for split in ("train", "test"):
        labels = captioned.attribute_labels(split)
        values = captioned.attribute_values(split)
        for record, row, stored in zip(getattr(captioned, split), labels, values, strict=True):
            pid = int(Path(record.path).name.split("_")[0])
            identity = synthetic_identity(config, pid)
            assert len(record.captions) == 2 and len(set(record.captions)) == 2
            for caption in record.captions:
                parsed = parse_caption(caption)
                _assert_drawn_with(identity, parsed)
                assert parsed == stored
            ones = {ATTRIBUTE_LABELS[j] for j in np.flatnonzero(row)}
            assert ones == {
                (name, value) for name, value in stored.items() if value not in (None, "none")
            }


def test_pseudo_captions_state_the_corrupted_attributes(captioned: SyntheticCaptionedReID) -> None:
    for split in ("train", "test"):
        pseudo = captioned.attribute_values(split, pseudo=True)
        labels = captioned.attribute_labels(split, pseudo=True)
        for record, values, row in zip(
            captioned.pseudo_records(split), pseudo, labels, strict=True
        ):
            assert all(parse_caption(caption) == values for caption in record.captions)
            np.testing.assert_array_equal(row, attribute_labels(values))
    assert [r.path for r in captioned.pseudo_records("train")] == [r.path for r in captioned.train]


def test_splits_follow_the_synthetic_images(captioned: SyntheticCaptionedReID) -> None:
    images = captioned.images
    assert [(r.path, r.pid, r.camid) for r in captioned.train] == images.train
    test_images = [record for record in images.query + images.gallery if record[1] > 0]
    assert [(r.path, r.pid, r.camid) for r in captioned.test] == test_images
    assert captioned.val == [] and captioned.num_train_pids == images.num_train_pids
    protocol = captioned.protocol()
    assert len(protocol.queries) == 2 * len(test_images)
    assert captioned.attribute_labels("val").shape == (0, len(ATTRIBUTE_LABELS))


def test_attribute_metadata_covers_the_drawing() -> None:
    specs = {spec.name: spec for spec in PEDESTRIAN_ATTRIBUTES}
    assert set(specs["upper_pattern"].values) == set(TOP_PATTERNS)
    assert set(specs["lower_garment"].values) == set(LOWER_GARMENTS)
    assert set(specs["hair_style"].values) == set(HAIR_STYLES)
    assert set(specs["bag"].values) == set(BAGS)
    assert specs["upper_colour"].values == CLOTHING_COLOUR_NAMES
    assert specs["hat"].values == ("none", *CLOTHING_COLOUR_NAMES)
    # Reading colours back by the nearest palette colour is exact: the palette colours are
    # further apart (max over channels) than two jitters.
    palette = np.array(CLOTHING_PALETTE)
    gaps = [np.abs(a - b).max() for a, b in itertools.combinations(palette, 2)]
    assert min(gaps) > 2 * CLOTHING_JITTER
    for spec in PEDESTRIAN_ATTRIBUTES:
        assert set(spec.words) == set(spec.phrases) == set(spec.values)
        for value in spec.values:
            assert len(spec.phrases[value]) == len(spec.words[value])
            for word, phrase in zip(spec.words[value], spec.phrases[value], strict=True):
                assert word in phrase
                assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", phrase), phrase
        assert spec.required == all(spec.words[value] for value in spec.values) or (
            spec.name == "hair_colour"
        )
    assert ATTRIBUTE_SPECS["hat"].phrases["olive"] == (
        "wearing an olive hat",
        "wearing an olive green hat",
    )
    assert (
        len(ATTRIBUTE_LABELS)
        == len(set(ATTRIBUTE_LABELS))
        == 14 + 4 + 2 + 14 + 3 + 6 + 3 + 4 + 2 + 14
    )


def _drawn_attributes(count: int, seed: int) -> list[dict[str, str | None]]:
    return [
        pedestrian_attributes(PedestrianIdentity.sample(np.random.default_rng([seed, index])))
        for index in range(count)
    ]


@pytest.mark.parametrize("probability", [0.1, 0.35, 0.8])
def test_corruption_rate_matches_the_probability(probability: float) -> None:
    """Each visible attribute changes with the given probability: the observed rate over about
    9,500 (image, attribute) pairs lies within 4.5 binomial standard deviations."""
    rng = np.random.default_rng(7)
    changed = trials = 0
    per_attribute = dict.fromkeys(ATTRIBUTE_SPECS, 0)
    for attributes in _drawn_attributes(1000, seed=11):
        corrupted = corrupt_attributes(attributes, probability, rng)
        for name, value in attributes.items():
            if value is None or corrupted[name] is None:  # hidden hair colour
                continue
            trials += 1
            changed += corrupted[name] != value
            per_attribute[name] += corrupted[name] != value
            assert corrupted[name] in ATTRIBUTE_SPECS[name].values
    rate = changed / trials
    assert abs(rate - probability) < 4.5 * np.sqrt(probability * (1 - probability) / trials)
    # Every attribute is corrupted, not only some.
    assert min(per_attribute.values()) > 0.5 * probability * 1000 * 0.5


@given(seed=st.integers(0, 2**32 - 1), probability=st.sampled_from([0.0, 1.0]))
def test_corruption_extremes(seed: int, probability: float) -> None:
    attributes = _drawn_attributes(1, seed)[0]
    corrupted = corrupt_attributes(attributes, probability, np.random.default_rng(seed))
    if probability == 0.0:
        assert corrupted == attributes
        return
    for name, value in attributes.items():
        if value is not None and corrupted[name] is not None:
            assert corrupted[name] != value
    assert (corrupted["hair_colour"] is None) == (
        attributes["hair_colour"] is None or corrupted["hair_style"] == "bald"
    )


def test_deterministic_in_seed_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SyntheticCaptionedReID(tmp_path / "a", seed=4, **SMALL)
    second = SyntheticCaptionedReID(tmp_path / "b", seed=4, **SMALL)
    other = SyntheticCaptionedReID(tmp_path / "a", seed=5, **SMALL)
    noisier = SyntheticCaptionedReID(tmp_path / "a", seed=4, corruption_probability=0.5, **SMALL)
    assert first.annotation_file.read_bytes() == second.annotation_file.read_bytes()
    assert [r.captions for r in first.train] == [r.captions for r in second.train]
    assert [r.captions for r in first.train] != [r.captions for r in other.train]
    assert noisier.annotation_file != first.annotation_file
    assert [r.captions for r in noisier.train] == [r.captions for r in first.train]
    assert noisier.attribute_values("train", pseudo=True) != first.attribute_values(
        "train", pseudo=True
    )

    def fail(*args, **kwargs):
        raise AssertionError("the cached captions should have been reused")

    monkeypatch.setattr(captions_module.SyntheticCaptionedReID, "_annotations", fail)
    again = SyntheticCaptionedReID(tmp_path / "a", seed=4, **SMALL)
    assert again.train == first.train and again.test == first.test
    entries = json.loads(first.annotation_file.read_text())
    assert {"split", "id", "file_path", "captions", "attributes", "pseudo_attributes"} <= set(
        entries[0]
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"captions_per_image": 0}, r"captions_per_image=0; expected an integer in \[1, 4\]"),
        ({"captions_per_image": 5}, r"captions_per_image=5; expected an integer in \[1, 4\]"),
        (
            {"corruption_probability": -0.1},
            r"corruption_probability=-0.1; expected a number in \[0, 1\]",
        ),
        (
            {"variant": "local_cues"},
            r"variant='local_cues'; expected 'default' \(the captions do not",
        ),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticCaptionedReID(tmp_path, **settings, **SMALL)
    assert not any(tmp_path.iterdir())


def test_bad_attribute_values_are_named() -> None:
    attributes = _drawn_attributes(1, 0)[0]
    with pytest.raises(ValueError, match=r"attributes\['bag'\]='purse'; expected None or one of"):
        attribute_labels({**attributes, "bag": "purse"})
    without_hat = {name: value for name, value in attributes.items() if name != "hat"}
    with pytest.raises(ValueError, match="attributes lack 'hat'"):
        corrupt_attributes(without_hat, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"probability=1.5; expected a number in \[0, 1\]"):
        corrupt_attributes(attributes, 1.5, np.random.default_rng(0))
