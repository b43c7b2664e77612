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


def test_agents_without_alignment_put_the_pooled_selection_in_the_contrastive_losses(
    parts,
) -> None:
    """Table 4's ISA-without-PTA row: beta * (L_i2t + L_t2i) of the selected patches' mean,
    scaled to the global feature's length, in the place of L_otce."""
    prompts, encoder = parts
    torch.manual_seed(3)
    agents = [InformationSelectorAgent(EMBED, c, m, hidden_size=8) for c, m in ((2, 1), (4, 3))]
    partition = HierarchicalPatchPartition(MAP, (2, 4))
    module = HierarchicalPromptLearning(prompts, encoder, partition, None, agents, beta=0.3)
    assert not module.needs_attention
    patch_map, embedding, pids, _ = _inputs()
    output = module(patch_map, embedding, pids)
    assert set(output) == {"loss", "stage1", "contrastive", "selection", "agent", "reward"}

    supcon, expected = SupConLoss(), torch.zeros(())
    for k, level in enumerate(partition(patch_map, embedding)):
        text = encode_class_prompts(prompts.levels[k], encoder).sentence[pids]
        pooled = torch.stack(
            [level.features[b, agents[k](level.features).indices[b]].mean(0) for b in range(BATCH)]
        )
        pooled = pooled / pooled.norm(dim=-1, keepdim=True) * embedding.norm(dim=-1, keepdim=True)
        expected = expected + supcon(embedding, text, pids) + supcon(text, embedding, pids)
        expected = expected + 0.3 * (supcon(pooled, text, pids) + supcon(text, pooled, pids))
    torch.testing.assert_close(output["stage1"], expected)
    for level in prompts.levels:
        level.context.grad = None


@pytest.fixture(scope="module")
def parts64() -> tuple:
    """The parts in float64, so that gradients compare far above round-off."""
    model, tokenizer = tiny_clip()
    model = model.double().requires_grad_(False)
    torch.manual_seed(0)
    prompts = MultiGranularityPromptLearner(CLASSES, model, n_ctx=(2, 3), tokenizer=tokenizer)
    return prompts.double(), CLIPTextEncoder(model)


def _exact_and_batch_only(parts, refresh_every: int = 1):
    prompts, encoder = parts
    partition = HierarchicalPatchPartition(MAP, (2, 4))
    modules = [
        HierarchicalPromptLearning(
            prompts,
            encoder,
            partition,
            PatchToTokenAlignment(temperature=0.1),
            selected=(1, 3),
            text_gradient=gradient,
            text_refresh_every=refresh,
        )
        for gradient, refresh in (("all", 1), ("batch", refresh_every))
    ]
    return prompts, modules


def test_batch_only_gradients_keep_the_loss_and_the_batch_identities_gradients(parts64) -> None:
    """With text_gradient="batch" (refreshed every step) the loss equals the exact loss, the
    gradient of every in-batch identity's context vectors equals the exact gradient, and the
    out-of-batch identities' context vectors get none (exactly: a nonzero gradient through
    the softmax over all identities of eq. 18)."""
    prompts, (exact, batch_only) = _exact_and_batch_only(parts64)
    patch_map, embedding, _, attention = (x.double() for x in _inputs())
    pids = torch.tensor([0, 0, 2, 2, 2, 0])  # identities 1 and 3 are outside the batch
    grads = []
    for module in (exact, batch_only):
        output = module(patch_map, embedding, pids, attention)
        output["loss"].backward()
        grads.append([level.context.grad.clone() for level in prompts.levels])
        for level in prompts.levels:
            level.context.grad = None
        grads[-1].append(output["loss"].detach())
    *exact_grads, exact_loss = grads[0]
    *batch_grads, batch_loss = grads[1]
    torch.testing.assert_close(batch_loss, exact_loss, rtol=1e-10, atol=1e-12)
    inside, outside = torch.tensor([0, 2]), torch.tensor([1, 3])
    for full, partial in zip(exact_grads, batch_grads):
        torch.testing.assert_close(partial[inside], full[inside], rtol=1e-7, atol=1e-10)
        assert float(partial[outside].abs().max()) == 0.0
        assert float(full[outside].abs().max()) > 0.0


def test_the_cache_lags_until_it_is_refreshed(parts) -> None:
    """refresh_every=2: the out-of-batch features of the second call are those of the first
    call's prompts; the third call encodes them afresh; the batch's are always fresh."""
    prompts, (exact, cached) = _exact_and_batch_only(parts, refresh_every=2)
    pids = torch.tensor([0, 0, 2, 2, 2, 0])
    level, cache = prompts.levels[0], cached.text_caches[0]
    before = encode_class_prompts(level, exact.text_encoder)
    cached.class_features(0, pids)  # call 1: refresh
    with torch.no_grad():
        level.context.add_(0.5)
    try:
        after = encode_class_prompts(level, exact.text_encoder)
        second = cached.class_features(0, pids)  # call 2: from the cache
        torch.testing.assert_close(second.sentence[1], before.sentence[1])
        torch.testing.assert_close(second.sentence[0], after.sentence[0], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(before.sentence[1], after.sentence[1])
        third = cached.class_features(0, pids)  # call 3: refreshed
        torch.testing.assert_close(third.sentence, after.sentence, rtol=1e-5, atol=1e-6)
        assert cache.calls == 3
    finally:
        with torch.no_grad():
            level.context.sub_(0.5)
        for one in cached.text_caches:
            one.clear()


def test_text_encoding_options_are_checked(parts) -> None:
    prompts, encoder = parts
    partition = HierarchicalPatchPartition(MAP, (2, 4))
    with pytest.raises(ValueError, match="text_gradient must be one of"):
        HierarchicalPromptLearning(prompts, encoder, partition, text_gradient="some")
    with pytest.raises(ValueError, match="text_refresh_every applies to text_gradient='batch'"):
        HierarchicalPromptLearning(prompts, encoder, partition, text_refresh_every=3)
