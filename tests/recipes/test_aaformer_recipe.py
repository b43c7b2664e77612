"""The AAformer recipe's switches: the assignment's scores, the fixed partitions of table IV
and the CUHK03 preset, from Python, configuration files and the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from reidkit.cli import main
from reidkit.recipes import aaformer
from reidkit.recipes.common import load_dataset
from reidkit.recipes.config import ConfigError, replace_field
from reidkit.recipes.serialization import from_plain, to_plain
from tests.data.test_parsing import _write_cuhk03_np


def _printed_config(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["config", "aaformer", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_paper_preset_scores_by_the_raw_product_of_eq_3() -> None:
    assert aaformer.PRESETS["paper"].similarity == "dot"
    assert aaformer.PRESETS["tiny"].similarity == "cosine"
    paper_cuhk03 = aaformer.PRESETS["paper-cuhk03"]
    assert paper_cuhk03.data.dataset == "cuhk03_labeled"
    assert dataclasses.replace(paper_cuhk03, data=aaformer.PAPER.data) == aaformer.PAPER


@pytest.mark.parametrize("assignment", ["sinkhorn", "nearest", "stripes", "mgn"])
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_assignment_and_similarity_come_from_the_command_line(
    capsys: pytest.CaptureFixture, assignment: str, similarity: str
) -> None:
    shown = _printed_config(
        capsys, "--set", f"assignment={assignment}", f"similarity={similarity}", "part_groups=[6]"
    )
    assert (shown["assignment"], shown["similarity"], shown["part_groups"]) == (
        assignment,
        similarity,
        [6],
    )


def test_unknown_similarity_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^similarity must be one of \('cosine', 'dot'\)"):
        replace_field(aaformer.PRESETS["tiny"], "similarity", "euclidean")


def test_a_configuration_written_before_the_similarity_field_keeps_cosine() -> None:
    written = to_plain(aaformer.PRESETS["paper"])
    del written["similarity"]
    assert from_plain(aaformer.AAformerConfig, written).similarity == "cosine"


@pytest.mark.parametrize(("name", "boxes"), [("cuhk03_labeled", 3), ("cuhk03_detected", 2)])
def test_the_cuhk03_preset_reads_the_release_by_name(tmp_path: Path, name: str, boxes: int) -> None:
    _write_cuhk03_np(tmp_path)
    data = dataclasses.replace(
        aaformer.PRESETS["paper-cuhk03"].data, dataset=name, root=str(tmp_path)
    )
    assert len(load_dataset(data).train) == boxes
