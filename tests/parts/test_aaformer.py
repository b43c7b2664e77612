"""AAformer conversion of timm and open_clip ViTs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reidkit.ot import SinkhornOptions
from reidkit.parts import AAformer, PartTokenAttention, assignment_mask
from reidkit.parts.assignment import SIMILARITIES, fixed_part_mask
from tests.clip.tiny_models import as_sequence_first
from tests.parts.tiny_backbones import person_images, tiny_open_clip_visual, tiny_timm_vit


def test_timm_without_parts_equals_the_original_exactly() -> None:
    vit = tiny_timm_vit()
    model = AAformer(copy.deepcopy(vit), part_groups=()).eval()
    images = person_images()
    with torch.no_grad():
        expected = vit.forward_features(images)[:, 0]
        features = model(images)
    assert features.tokens.shape == (2, 1, vit.embed_dim)
    assert torch.equal(features.cls, expected)


@pytest.mark.parametrize("sequence_first", [False, True])
def test_open_clip_without_parts_equals_the_original_exactly(sequence_first: bool) -> None:
    visual = tiny_open_clip_visual()
    if sequence_first:
        visual.transformer = as_sequence_first(visual.transformer)
    model = AAformer(copy.deepcopy(visual), part_groups=()).eval()
    images = person_images()
    # With gradients enabled nn.MultiheadAttention takes its regular path; under no_grad it
    # switches to a fused kernel that differs from it by rounding.
    expected = visual(images)
    assert torch.equal(model(images).cls, expected)


@pytest.mark.parametrize("backbone", [tiny_timm_vit, tiny_open_clip_visual])
def test_conversion_shares_the_pretrained_projections(backbone) -> None:
    original = backbone()
    parameters = {id(p) for p in original.parameters()}
    model = AAformer(original, part_groups=(2, 3))
    layers = model.attention_layers()
    assert len(layers) == 2
    for layer in layers:
        assert id(layer.qkv.weight) in parameters and id(layer.proj.weight) in parameters
    added = [name for name, p in model.named_parameters() if id(p) not in parameters]
    assert added == ["part_tokens"]


@pytest.mark.parametrize("backbone", [tiny_timm_vit, tiny_open_clip_visual])
def test_parts_run_and_receive_gradients(backbone) -> None:
    model = AAformer(backbone(), part_groups=(2, 3)).train()
    features = model(person_images(batch=3))
    assert features.tokens.shape == (3, 6, model.output_dim)
    assert features.parts.shape == (3, 5, model.output_dim)
    assert features.concatenated().shape == (3, 6 * model.output_dim)
    assert torch.isfinite(features.tokens).all()
    features.parts.square().sum().backward()
    assert model.part_tokens.grad is not None
    assert (model.part_tokens.grad.abs().sum(dim=1) > 0).all()  # every [PART] token
    for layer in model.attention_layers():
        assert layer.qkv.weight.grad.abs().sum() > 0


def test_open_clip_clip_model_uses_its_visual_tower() -> None:
    from tests.clip.tiny_models import tiny_clip

    clip_model, _ = tiny_clip()
    model = AAformer(clip_model, part_groups=(3,))
    assert model.backbone.visual is clip_model.visual
    assert model.output_dim == clip_model.visual.proj.shape[1]


def test_part_attention_maps_follow_the_assignment() -> None:
    model = AAformer(tiny_timm_vit(), part_groups=(2, 3)).eval()
    with torch.no_grad():
        model(person_images())
    layer = model.attention_layers()[1]
    maps = model.part_attention_maps(layer=1, head=2)
    assert maps.shape == (2, 5, *model.grid_size)
    mask = assignment_mask(layer.last_assignment[:, 2], 5).reshape(maps.shape)
    assert torch.equal(maps > 0, mask)


def test_nearest_neighbour_option_reaches_every_layer() -> None:
    model = AAformer(tiny_timm_vit(), part_groups=(2,), assignment="nearest")
    assert all(layer.assignment == "nearest" for layer in model.attention_layers())
    assert all(isinstance(layer, PartTokenAttention) for layer in model.attention_layers())


def test_options_reach_every_layer_and_the_former_keywords_warn(
    fresh_deprecations: None,
) -> None:
    options = SinkhornOptions(epsilon=0.5, max_iter=6, tol=None, grad="envelope")
    model = AAformer(tiny_timm_vit(), part_groups=(2,), options=options)
    assert all(layer.options is options for layer in model.attention_layers())
    with pytest.warns(DeprecationWarning, match="reidkit.AAformer") as records:
        old = AAformer(tiny_timm_vit(), part_groups=(2,), epsilon=0.5, sinkhorn_iterations=6)
    assert all(layer.options == options for layer in old.attention_layers())
    assert len(records) == 1 and records[0].filename == __file__


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="backbone must be"):
        AAformer(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="part_groups"):
        AAformer(tiny_timm_vit(), part_groups=(0,))
    model = AAformer(tiny_timm_vit(), part_groups=(2,))
    with pytest.raises(ValueError, match="forward pass"):
        model.part_attention_maps(layer=0)
    with pytest.raises(ValueError, match="layer"):
        model.part_attention_maps(layer=5)


def test_similarity_reaches_every_layer() -> None:
    model = AAformer(tiny_timm_vit(), part_groups=(2,), similarity="dot")
    assert all(layer.similarity == SIMILARITIES["dot"] for layer in model.attention_layers())
    with pytest.raises(ValueError, match="similarity"):
        AAformer(tiny_timm_vit(), part_groups=(2,), similarity="l2")


@pytest.mark.parametrize("backbone", [tiny_timm_vit, tiny_open_clip_visual])
@pytest.mark.parametrize("method", ["stripes", "mgn"])
def test_fixed_partitions_follow_the_patch_grid(backbone, method) -> None:
    model = AAformer(backbone(), part_groups=(2, 3), assignment=method).eval()
    with torch.no_grad():
        features = model(person_images())
    assert features.tokens.shape[1] == 6
    expected = fixed_part_mask(method, (2, 3), model.grid_size)
    for layer in model.attention_layers():
        assert torch.equal(layer.last_part_mask[0, 0], expected)
        assert torch.equal(layer.last_part_mask[1, -1], expected)
    maps = model.part_attention_maps(layer=0, head=1)
    assert torch.equal(maps > 0, expected.reshape(5, *model.grid_size).expand_as(maps))


def test_fixed_partitions_beyond_the_grid_raise() -> None:
    with pytest.raises(ValueError, match="rows of the patch grid"):
        AAformer(tiny_timm_vit(), part_groups=(6,), assignment="stripes")  # 4 rows
