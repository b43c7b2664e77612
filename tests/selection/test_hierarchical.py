"""HierarchicalPromptLearning: eq. 20 from its parts, gradients, selection modes, bad set-ups."""

from __future__ import annotations

import pytest
import torch

from reidkit import (
    HierarchicalPatchPartition,
    HierarchicalPromptLearning,
    InformationSelectorAgent,
    MultiGranularityPromptLearner,
    PatchToTokenAlignment,
    SupConLoss,
)
from reidkit.clip import CLIPTextEncoder
from reidkit.prompts import encode_class_prompts
from reidkit.selection import gather_patches, top_indices
from tests.clip.tiny_models import tiny_clip

CLASSES, BATCH, MAP, EMBED = 4, 6, (4, 2), 32


@pytest.fixture(scope="module")
def parts() -> tuple:
    model, tokenizer = tiny_clip()
    model.requires_grad_(False)
    torch.manual_seed(0)
    prompts = MultiGranularityPromptLearner(CLASSES, model, n_ctx=(2, 3), tokenizer=tokenizer)
    return prompts, CLIPTextEncoder(model)


def _inputs(seed: int = 1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    patch_map = torch.randn(BATCH, *MAP, EMBED, generator=generator)
    embedding = torch.randn(BATCH, EMBED, generator=generator)
    attention = torch.rand(BATCH, *MAP, 1, generator=generator)
    pids = torch.tensor([0, 0, 1, 2, 3, 3])
    return patch_map, embedding, pids, attention


def test_attention_selection_equals_eq_20_computed_from_the_parts(parts) -> None:
    prompts, encoder = parts
    partition = HierarchicalPatchPartition(MAP, (2, 4))
    alignment = PatchToTokenAlignment(temperature=0.07)
    module = HierarchicalPromptLearning(
        prompts, encoder, partition, alignment, selected=(1, 3), alpha=(1.0, 0.5), beta=0.2
    )
    assert module.needs_attention
    patch_map, embedding, pids, attention = _inputs()
    output = module(patch_map, embedding, pids, attention)

    supcon, expected = SupConLoss(), torch.zeros(())
    for k, (level, selected) in enumerate(zip(partition(patch_map, embedding), (1, 3))):
        classes = encode_class_prompts(prompts.levels[k], encoder)
        text = classes.sentence[pids]
        contrastive = supcon(embedding, text, pids) + supcon(text, embedding, pids)
        indices = top_indices(partition.pool(attention, k)[..., 0], selected)
        otce = alignment(gather_patches(level.features, indices), classes.tokens, pids).loss
        expected = expected + (1.0, 0.5)[k] * contrastive + 0.2 * otce
    torch.testing.assert_close(output["loss"], expected)
    torch.testing.assert_close(output["stage1"], expected)
    assert set(output) == {"loss", "stage1", "contrastive", "ot_alignment"}

    output["loss"].backward()
    for level in prompts.levels:
        assert level.context.grad is not None and level.context.grad.abs().sum() > 0
        level.context.grad = None


def test_agents_add_their_own_loss_and_learn_from_it(parts) -> None:
    prompts, encoder = parts
    torch.manual_seed(2)
    agents = [InformationSelectorAgent(EMBED, c, m, hidden_size=8) for c, m in ((2, 1), (4, 3))]
    module = HierarchicalPromptLearning(
        prompts,
        encoder,
        HierarchicalPatchPartition(MAP, (2, 4)),
        PatchToTokenAlignment(),
        agents,
    )
    assert not module.needs_attention
    patch_map, embedding, pids, _ = _inputs()
    output = module(patch_map, embedding, pids)
    torch.testing.assert_close(output["loss"], output["stage1"] + output["agent"])
    assert 0.0 <= float(output["reward"]) <= 1.0
    output["loss"].backward()
    for agent in module.agents:
        grads = [p.grad for p in agent.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0
    for level in prompts.levels:
        level.context.grad = None


def test_without_alignment_only_the_contrastive_losses_count(parts) -> None:
    prompts, encoder = parts
    module = HierarchicalPromptLearning(prompts, encoder, HierarchicalPatchPartition(MAP, (2, 4)))
    patch_map, embedding, pids, _ = _inputs()
    output = module(patch_map, embedding, pids)
    assert set(output) == {"loss", "stage1", "contrastive"}
    torch.testing.assert_close(output["loss"], output["contrastive"])


def test_bad_set_ups_name_the_argument(parts) -> None:
    prompts, encoder = parts
    one_level = HierarchicalPatchPartition(MAP, (2,))
    with pytest.raises(ValueError, match="partition must have one level per prompt level"):
        HierarchicalPromptLearning(prompts, encoder, one_level)
    two_levels = HierarchicalPatchPartition(MAP, (2, 4))
    with pytest.raises(ValueError, match="selected must give M per level"):
        HierarchicalPromptLearning(prompts, encoder, two_levels, PatchToTokenAlignment())
    with pytest.raises(ValueError, match="agents must hold one agent per level"):
        HierarchicalPromptLearning(
            prompts, encoder, two_levels, agents=[InformationSelectorAgent(EMBED, 2, 1)]
        )
    module = HierarchicalPromptLearning(
        prompts, encoder, two_levels, PatchToTokenAlignment(), selected=(1, 3)
    )
    patch_map, embedding, pids, _ = _inputs()
    with pytest.raises(ValueError, match=r"attention \(B, h, w, 1\) is required"):
        module(patch_map, embedding, pids)
