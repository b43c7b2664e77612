"""Every ablation row of MMPL's tables 3-5 and figs. 4-8 from the example's command line: the
configuration each set of options gives (no training)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from reidkit.recipes import arguments, mmpl

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "mmpl_market.py"


def _config(monkeypatch, *options: str) -> mmpl.MMPLConfig:
    spec = importlib.util.spec_from_file_location("mmpl_market", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["mmpl_market.py", *options])
    parser, args = script.parse_args()
    return script.ablate(arguments.config_from_args(parser, args, mmpl.RECIPE), args)


TINY = mmpl.PRESETS["tiny"]


@pytest.mark.parametrize(
    ("options", "agent", "alignment", "visual", "levels"),
    [
        ((), True, True, True, 3),  # tables 3-5: MMPL
        (("--no-hpl", "--no-cpl"), False, False, False, 1),  # table 3: baseline
        (("--no-cpl",), True, True, False, 3),  # table 3: HPL only
        (("--no-hpl",), False, False, True, 1),  # table 3: CPL only
        (("--no-agent", "--no-alignment"), False, False, True, 3),  # table 4: neither
        (("--no-alignment",), True, False, True, 3),  # table 4: ISA without PTA
        (("--no-agent",), False, True, True, 3),  # table 4: PTA with attention masks
        (("--levels", "2"), True, True, True, 2),  # table 5
    ],
)
def test_table_rows(monkeypatch, options, agent, alignment, visual, levels) -> None:
    config = _config(monkeypatch, *options)
    assert config.agent.enabled == agent
    assert config.alignment.enabled == alignment
    assert config.visual_prompts.enabled == visual
    assert config.levels.count == levels


def test_figure_and_loss_switches(monkeypatch) -> None:
    config = _config(
        monkeypatch,
        "--levels",
        "1",
        "--n-ctx",
        "8",
        "--alpha",
        "2",
        "--beta",
        "0.02",
        "--tau",
        "0.05",
        "--transformation",
        "printed",
        "--image-to-text-levels",
        "sum",
        "--text-gradient",
        "batch",
        "--text-refresh-every",
        "20",
        "--agent-reads-scores",
    )
    assert config.levels.n_ctx == (8,)  # figs. 4-6
    assert (config.alpha, config.beta) == (2.0, 0.02)  # figs. 7-8
    assert config.alignment.temperature == 0.05
    assert config.visual_prompts.transformation_form == "printed"
    assert config.image_to_text_levels == "sum"
    assert config.text_encoding == mmpl.TextEncodingConfig("batch", 20)
    assert config.agent.reads_scores and not TINY.agent.reads_scores
    margin = _config(monkeypatch, "--transformation-margin", "0.3")
    assert margin.visual_prompts.transformation_margin == 0.3


def test_a_bad_switch_value_names_its_key(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit):
        _config(monkeypatch, "--text-refresh-every", "0")
    assert "refresh_every" in capsys.readouterr().err
