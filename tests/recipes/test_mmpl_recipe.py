"""The MMPL recipe's parts: its ablations, the baseline it extends, stage 1 as configured and
the class-token attention of the last block."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from reidkit.clip import CLIPTextEncoder
from reidkit.prompts import MultiGranularityPromptLearner
from reidkit.recipes import clip_reid, mmpl
from tests.clip.tiny_models import tiny_clip

TINY = mmpl.PRESETS["tiny"]


def test_the_baseline_shares_every_section_it_has() -> None:
    baseline = mmpl.baseline_config(TINY)
    assert baseline == clip_reid.PRESETS["tiny"]
    weighted = mmpl.PRESETS["paper-clipreid-weights"]
    assert mmpl.baseline_config(weighted) == clip_reid.PRESETS["paper"]
    for field in dataclasses.fields(baseline):
        assert getattr(baseline, field.name) == getattr(TINY, field.name), field.name


def test_levels_are_replaced_then_cut() -> None:
    config = mmpl.select_levels(TINY, 2)
    assert config.levels == mmpl.LevelsConfig((4, 6), (4, 16), (3, 10))
    config = mmpl.select_levels(TINY, n_ctx=(2, 3))  # K from n_ctx
    assert config.levels == mmpl.LevelsConfig((2, 3), (4, 16), (3, 10))
    with pytest.raises(ValueError, match=r"4 levels need 4 values of n_ctx"):
        mmpl.select_levels(TINY, 4)


def test_the_ablations_switch_off_one_part_each() -> None:
    assert not mmpl.without_agent(TINY).agent.enabled
    assert not mmpl.without_alignment(TINY).alignment.enabled
    assert not mmpl.without_visual_prompts(TINY).visual_prompts.enabled
    one_level = mmpl.without_hierarchy(TINY)
    assert one_level.levels == mmpl.LevelsConfig((4,), (4,), (3,))
    assert not one_level.agent.enabled and not one_level.alignment.enabled
    assert one_level.visual_prompts == TINY.visual_prompts


@pytest.fixture(scope="module")
def clip_model() -> torch.nn.Module:
    return tiny_clip(image_size=(64, 32))[0]


@pytest.mark.parametrize(
    ("agent", "alignment", "has_agents", "needs_attention"),
    [
        (True, True, True, False),  # ISA and PTA
        (False, True, False, True),  # PTA, patches by class-token attention
        (True, False, True, False),  # ISA without PTA: the pooled selection
        (False, False, False, False),  # neither
    ],
)
def test_stage_one_holds_the_enabled_parts(
    clip_model, agent: bool, alignment: bool, has_agents: bool, needs_attention: bool
) -> None:
    config = mmpl.select_levels(TINY, 2)
    config = dataclasses.replace(
        config,
        agent=dataclasses.replace(config.agent, enabled=agent),
        alignment=dataclasses.replace(config.alignment, enabled=alignment),
    )
    prompts = MultiGranularityPromptLearner(3, clip_model, config.levels.n_ctx)
    stage1 = mmpl.build_hierarchical_prompt_learning(
        config, prompts, CLIPTextEncoder(clip_model), (8, 4), clip_model.visual.output_dim
    )
    assert (stage1.agents is not None) == has_agents
    assert (stage1.alignment is not None) == alignment
    assert stage1.needs_attention == needs_attention
    if has_agents:
        assert [agent.num_selected for agent in stage1.agents] == [3, 10]
    assert stage1.partition.patch_counts == (4, 16)


def test_the_paper_preset_is_eq_24_with_unit_weights_and_eq_23_as_printed() -> None:
    paper, weighted = mmpl.PRESETS["paper"], mmpl.PRESETS["paper-clipreid-weights"]
    assert (paper.loss.id_weight, paper.loss.triplet_weight) == (1.0, 1.0)
    assert paper.loss.image_to_text_weight == paper.visual_prompts.transformation_weight == 1.0
    assert paper.image_to_text_levels == "sum"
    assert paper.visual_prompts.transformation_form == "printed"
    assert weighted.loss == clip_reid.PRESETS["paper"].loss  # 0.25 on the ID losses
    assert weighted.image_to_text_levels == "mean"
    assert weighted.visual_prompts.transformation_form == "stabilised"
    assert weighted.visual_prompts.transformation_margin is None  # from the targets
    # Everything but stage 2's loss is shared.
    for field in dataclasses.fields(paper):
        if field.name not in ("loss", "visual_prompts", "image_to_text_levels"):
            assert getattr(paper, field.name) == getattr(weighted, field.name), field.name
    assert mmpl.PRESETS["tiny-paper"].loss == paper.loss
    assert paper.text_encoding == mmpl.TextEncodingConfig("all", 1)  # the exact default


def test_new_fields_are_checked_with_their_key() -> None:
    from reidkit.recipes.config import ConfigError

    with pytest.raises(ConfigError, match="transformation_margin"):
        dataclasses.replace(
            TINY.visual_prompts, transformation_form="printed", transformation_margin=1.0
        )
    with pytest.raises(ConfigError, match="transformation_form"):
        dataclasses.replace(TINY.visual_prompts, transformation_form="bounded")
    with pytest.raises(ConfigError, match="refresh_every"):
        mmpl.TextEncodingConfig("all", 4)
    with pytest.raises(ConfigError, match="gradient"):
        mmpl.TextEncodingConfig("none", 1)
    with pytest.raises(ConfigError, match="image_to_text_levels"):
        dataclasses.replace(TINY, image_to_text_levels="max")


def test_the_stage_two_loss_follows_the_configuration(clip_model) -> None:
    paper = mmpl.PRESETS["tiny-paper"]
    loss = mmpl.build_transformation_loss(paper.visual_prompts, 64, 32)
    assert loss.form == "printed" and loss.margin is None
    stage1 = mmpl.build_hierarchical_prompt_learning(
        dataclasses.replace(paper, text_encoding=mmpl.TextEncodingConfig("batch", 5)),
        MultiGranularityPromptLearner(3, clip_model, paper.levels.n_ctx),
        CLIPTextEncoder(clip_model),
        (8, 4),
        clip_model.visual.output_dim,
    )
    assert [cache.refresh_every for cache in stage1.text_caches] == [5, 5, 5]
