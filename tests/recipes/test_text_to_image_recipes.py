"""The UniPT and VAL-PAT recipes' presets hold the papers' settings and refuse what reidkit
cannot do; the shared builders check the text length and read the pre-training data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from reidkit.data import ATTRIBUTE_LABELS, SyntheticCaptionedReID
from reidkit.recipes import ConfigError, get_recipe, replace_field, unipt, valpat
from reidkit.recipes.text_to_image import (
    SYNTHETIC_ATTRIBUTE_NAMES,
    TINY_TEXT_CLIP,
    FinetuneStageConfig,
    PseudoTextConfig,
    TextData,
    build_text_clip,
    describe_text_data,
    read_pretraining_data,
)


def test_unipt_paper_preset_is_sec_5_2() -> None:
    paper = unipt.PRESETS["paper"]
    assert paper.clip.image_size == (384, 128)
    assert paper.data.text_length == 77  # CLIP's positions, for the paper's 100
    assert (paper.pretrain.epochs, paper.pretrain.batch_size, paper.pretrain.lr) == (15, 512, 1e-5)
    assert paper.pretrain.warmup_epochs / paper.pretrain.epochs == pytest.approx(0.1)
    assert paper.pretrain.mlm_weight == 1.0 and paper.pretrain.mask_probability == 0.15
    assert paper.pretrain.temperature == 1.0 and not paper.pretrain.learnable_temperature
    assert (paper.finetune.lr, paper.finetune.text_lr, paper.data.batch_size) == (1e-4, 1e-5, 64)
    assert paper.finetune.margin == 0.2 and paper.finetune.negatives == "semi-hard"
    assert not paper.causal_text


def test_valpat_paper_preset_is_sec_4_1() -> None:
    stage = valpat.PRESETS["paper"].pretrain
    assert (stage.epochs, stage.batch_size, stage.weight_decay) == (140, 2048, 0.1)
    assert (stage.start_lr, stage.lr, stage.warmup_epochs) == (1e-6, 1e-3, 7)
    assert (stage.queue_size, stage.ssl_temperature, stage.cross_modal_temperature) == (
        65536,
        0.07,
        0.07,
    )
    assert (stage.soft_weight, stage.cross_modal_weight, stage.attribute_weight) == (0.2, 0.5, 0.01)
    assert valpat.PRESETS["paper"].clip.pretrained is None  # trained from scratch


@pytest.mark.parametrize("name", ["unipt", "valpat"])
def test_both_stages_take_their_epochs_from_the_command_line(name: str) -> None:
    recipe = get_recipe(name)
    config = recipe.with_epochs(recipe.presets["tiny"], [("pretrain", 0), (None, 3)])
    assert recipe.stage_epochs(config) == {"pretrain": 3, "finetune": 3}
    config = recipe.with_epochs(recipe.presets["tiny"], [("pretrain", 0)])
    assert recipe.stage_epochs(config)["pretrain"] == 0


# A field of every kind of check of the two recipes, out of range, and the message naming it.
OUT_OF_RANGE = [
    ("unipt", "data.text_length", 2, r"^data\.text_length must be an integer >= 3, got 2"),
    ("unipt", "data.dataset", "", r"^data\.dataset must name a data set"),
    ("unipt", "pseudo.captions", "texts.json", r"^pseudo\.captions and images go together"),
    ("unipt", "pseudo.corruption_probability", 1.5, r"^pseudo\.corruption_probability must be"),
    ("unipt", "embed_dim", 0, r"^embed_dim must be an integer >= 1, got 0"),
    ("unipt", "pretrain.epochs", -1, r"^pretrain\.epochs must be an integer >= 0, got -1"),
    ("unipt", "pretrain.warmup_epochs", 6, r"^pretrain\.warmup_epochs must be < epochs \(6\)"),
    ("unipt", "pretrain.mask_probability", 0.0, r"^pretrain\.mask_probability must be in \(0, 1\]"),
    ("unipt", "pretrain.temperature", 0.0, r"^pretrain\.temperature must be a finite number > 0"),
    ("unipt", "finetune.epochs", 0, r"^finetune\.epochs must be an integer >= 1, got 0"),
    ("unipt", "finetune.warmup_epochs", 6, r"^finetune\.warmup_epochs must be < epochs \(6\)"),
    ("unipt", "finetune.negatives", "random", r"^finetune\.negatives must be one of"),
    ("unipt", "finetune.label_smoothing", 1.0, r"^finetune\.label_smoothing must be in \[0, 1\)"),
    ("valpat", "reid.root", "/data/duke", r"^reid\.root needs a dataset"),
    ("valpat", "pretrain.start_lr", 1.0, r"^pretrain\.start_lr must be in \(0, 0\.001\]"),
    ("valpat", "pretrain.queue_size", 0, r"^pretrain\.queue_size must be an integer >= 1"),
    ("valpat", "pretrain.momentum", 1.5, r"^pretrain\.momentum must be in \[0, 1\]"),
    ("valpat", "pretrain.soft_weight", -0.1, r"^pretrain\.soft_weight must be in \[0, 1\]"),
    ("valpat", "pretrain.attribute_weight", -1.0, r"^pretrain\.attribute_weight must be a finite"),
]


@pytest.mark.parametrize(("name", "path", "value", "message"), OUT_OF_RANGE)
def test_a_value_out_of_range_is_refused_naming_the_field(
    name: str, path: str, value: object, message: str
) -> None:
    config = get_recipe(name).presets["tiny"]
    if path == "reid.root":
        config = replace_field(config, "reid.dataset", None)
    with pytest.raises(ConfigError, match=message) as error:
        replace_field(config, path, value)
    assert error.value.key == path


def test_a_stage_of_zero_epochs_needs_no_shorter_warm_up() -> None:
    # pretrain=0 is the "no pre-training" baseline: its warm-up is not checked
    for name in ("unipt", "valpat"):
        config = replace_field(get_recipe(name).presets["paper"], "pretrain.epochs", 0)
        assert config.pretrain.warmup_epochs > 0


def test_what_reidkit_cannot_do_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="prototype-based granularity unification"):
        replace_field(unipt.PRESETS["tiny"], "finetune.unified_weight", 1.0)
    with pytest.raises(ValueError, match="negatives must be one of"):
        dataclasses.replace(unipt.PRESETS["tiny"].finetune, negatives="random")
    with pytest.raises(ValueError, match="captions and images go together"):
        PseudoTextConfig("texts.json", None, 1, 8, 0.2)
    assert isinstance(unipt.PRESETS["tiny"].finetune, FinetuneStageConfig)


def test_a_text_length_beyond_the_towers_positions_is_refused() -> None:
    config = unipt.PRESETS["tiny"].clip
    assert TINY_TEXT_CLIP["text_cfg"]["context_length"] == 64
    with pytest.raises(ValueError, match="text_length must be at most the 64 positions"):
        build_text_clip(config, 100, torch.device("cpu"))


def test_synthetic_pretraining_data_are_other_pedestrians_with_noisy_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path))
    pseudo = PseudoTextConfig(
        None, None, synthetic_seed=3, synthetic_ids=2, corruption_probability=1.0
    )
    data = read_pretraining_data(pseudo)
    assert data.attribute_names == SYNTHETIC_ATTRIBUTE_NAMES
    assert len(data.attribute_names) == len(ATTRIBUTE_LABELS)
    assert data.attribute_labels.shape == (len(data.records), len(ATTRIBUTE_LABELS))
    assert all(len(record.captions) == 2 for record in data.records)
    # with every attribute corrupted, no image keeps its identity's true labels
    truth = SyntheticCaptionedReID(seed=3, num_train_ids=2, corruption_probability=1.0)
    assert not np.any(np.all(truth.attribute_labels("train") == data.attribute_labels, axis=1))


def test_the_data_summary_counts_the_splits_and_the_chance_of_a_random_ranking(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path))
    dataset = SyntheticCaptionedReID(seed=1, num_train_ids=4, num_test_ids=3)
    protocol = dataset.protocol("test")
    data = TextData(dataset, None, None, None, None, protocol)
    recorded = {}

    class Run:
        def describe_data(self, name, splits, chance):
            recorded.update(name=name, splits=splits, chance=chance)

    describe_text_data(Run(), "synthetic_captions", data)
    test = recorded["splits"]["test"]
    assert test["images"] == len(dataset.test) == len(protocol.gallery)
    assert test["captions"] == len(protocol.queries)
    assert test["identities"] == len({record.pid for record in dataset.test}) == 3
    assert recorded["splits"]["train"]["identities"] == 4
    # a random ranking puts a match first with probability m / n for each caption
    gallery = [pid for _, pid, _ in protocol.gallery]
    expected_r1 = np.mean([gallery.count(query.pid) / len(gallery) for query in protocol.queries])
    assert recorded["chance"].cmc[0] == pytest.approx(expected_r1, rel=1e-9)
