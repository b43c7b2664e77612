"""The PCL-CLIP recipe's switches: the released ID classifier, Table 1's loss weights, the
iterations of an epoch, the camera-aware sampler and the way out of too few clusters."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import pytest
import yaml

from reidkit.cli import main
from reidkit.recipes import pcl_clip
from reidkit.recipes.config import ConfigError, replace_field
from reidkit.recipes.serialization import from_plain, to_plain

TINY = pcl_clip.PRESETS["tiny"]


def _printed_config(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["config", "pcl_clip", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_paper_presets_follow_the_paper_and_the_released_code() -> None:
    paper, unsupervised = pcl_clip.PRESETS["paper"], pcl_clip.PRESETS["paper-unsupervised"]
    assert paper.id_classifier == unsupervised.id_classifier == "concatenated"
    assert (paper.pcl_weight, paper.id_weight, paper.triplet_weight) == (1.0, 0.25, 0.0)
    assert paper.iterations_per_epoch == unsupervised.iterations_per_epoch == 200
    assert (paper.sampler, unsupervised.sampler) == ("identity", "camera_aware")
    assert unsupervised.id_weight == 0.0 and unsupervised.clustering.few_clusters == "shrink"
    assert TINY.iterations_per_epoch is None and TINY.id_classifier == "concatenated"


def test_every_switch_comes_from_the_command_line(capsys: pytest.CaptureFixture) -> None:
    shown = _printed_config(
        capsys,
        "--loss-weight",
        "pcl=0",
        "id=1",
        "triplet=1",
        "--set",
        "id_classifier=per_neck",
        "iterations_per_epoch=200",
        "sampler=camera_aware",
        "clustering.few_clusters=skip",
        "triplet_margin=0.5",
    )
    assert (shown["pcl_weight"], shown["id_weight"], shown["triplet_weight"]) == (0.0, 1.0, 1.0)
    assert shown["id_classifier"] == "per_neck" and shown["iterations_per_epoch"] == 200
    assert shown["sampler"] == "camera_aware" and shown["clustering"]["few_clusters"] == "skip"
    assert shown["triplet_margin"] == 0.5


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("id_classifier", "shared", r"^id_classifier must be one of"),
        ("sampler", "random", r"^sampler must be one of \('identity', 'camera_aware'\)"),
        ("iterations_per_epoch", 0, r"^iterations_per_epoch must be an integer >= 1"),
        ("clustering.few_clusters", "wait", r"^clustering\.few_clusters must be one of"),
        ("triplet_weight", -1.0, r"^triplet_weight must be a finite number >= 0"),
        ("triplet_margin", 0.0, r"^triplet_margin must be a finite number > 0"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_field(path, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        replace_field(TINY, path, value)


def test_weights_that_train_nothing_are_refused() -> None:
    with pytest.raises(ConfigError, match="must not all be 0"):
        dataclasses.replace(TINY, pcl_weight=0.0, id_weight=0.0)
    unsupervised = pcl_clip.PRESETS["tiny-unsupervised"]
    with pytest.raises(ConfigError, match=r"^id_weight must be 0 in the unsupervised mode"):
        replace_field(unsupervised, "id_weight", 0.25)


def test_a_configuration_written_before_the_fields_trains_as_it_did() -> None:
    written = to_plain(TINY)
    for name in (
        "id_classifier",
        "pcl_weight",
        "triplet_weight",
        "triplet_margin",
        "iterations_per_epoch",
        "sampler",
    ):
        del written[name]
    del written["clustering"]["few_clusters"]
    old = from_plain(pcl_clip.PCLCLIPConfig, written)
    assert old.id_classifier == "per_neck" and old.iterations_per_epoch is None
    assert (old.pcl_weight, old.triplet_weight, old.sampler) == (1.0, 0.0, "identity")


class _Loader:
    """Two passes' worth of a loader: ``batches`` per pass, the sampler's epochs recorded."""

    def __init__(self, batches: int) -> None:
        self.count = batches
        self.epochs: list[int] = []
        self.sampler = SimpleNamespace(set_epoch=self.epochs.append)

    def __iter__(self):
        epoch = self.epochs[-1]
        return iter([(epoch, index) for index in range(self.count)])


def _epoch_batches(config, epoch: int = 0, world_size: int = 1) -> pcl_clip.EpochBatches:
    batches = object.__new__(pcl_clip.EpochBatches)  # only the configuration is read here
    batches.config, batches.epoch, batches.world_size = config, epoch, world_size
    return batches


@pytest.mark.parametrize(("limit", "per_pass", "passes"), [(7, 3, 3), (6, 3, 2), (2, 5, 1)])
def test_an_epoch_of_n_iterations_draws_fresh_passes(limit, per_pass, passes) -> None:
    config = dataclasses.replace(TINY, iterations_per_epoch=limit)
    loader = _Loader(per_pass)
    batches = list(_epoch_batches(config, epoch=2).batches(loader))
    assert len(batches) == limit
    epochs = TINY.optimizer.epochs
    assert loader.epochs == [2 + r * epochs for r in range(passes)]  # never another epoch's
    assert batches == [(2 + (i // per_pass) * epochs, i % per_pass) for i in range(limit)]


def test_without_a_limit_an_epoch_is_one_pass() -> None:
    loader = _Loader(4)
    assert len(list(_epoch_batches(TINY, epoch=1).batches(loader))) == 4
    assert loader.epochs == [1]


@pytest.mark.parametrize(
    ("clusters", "world_size", "policy", "expected"),
    [
        (8, 1, "shrink", (32, 4, "full")),  # P = 32 / 4 = 8 clusters: the configured batches
        (20, 2, "shrink", (32, 4, "full")),
        (5, 1, "shrink", (30, 6, "shrunk")),  # 5 clusters x 6 images
        (7, 2, "shrink", (30, 10, "shrunk")),  # 3 clusters per process x 10 images
        (5, 1, "skip", (0, 0, "skipped")),
        (1, 1, "shrink", (0, 0, "skipped")),  # one centroid: the PCL loss is 0
        (3, 2, "shrink", (0, 0, "skipped")),
    ],
)
def test_too_few_clusters_shrink_or_skip_the_epoch(
    caplog: pytest.LogCaptureFixture, clusters, world_size, policy, expected
) -> None:
    config = dataclasses.replace(
        pcl_clip.PRESETS["tiny-unsupervised"],
        clustering=dataclasses.replace(TINY.clustering, few_clusters=policy),
    )
    with caplog.at_level(logging.WARNING, logger="reidkit"):
        shape = _epoch_batches(config, world_size=world_size).batch_shape(clusters)
    assert shape == expected
    warned = [record.getMessage() for record in caplog.records]
    assert bool(warned) == (expected[2] != "full")
    if warned:
        assert f"found {clusters} clusters, fewer than the P = 8" in warned[0]
