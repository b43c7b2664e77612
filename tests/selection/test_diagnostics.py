"""Stage-1 diagnostics: the OT loss's chance level and the selection's overlap, against
float64 formulas and exhaustive enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from reidkit import (
    HierarchicalPatchPartition,
    HierarchicalPromptLearning,
    MultiGranularityPromptLearner,
    PatchToTokenAlignment,
)
from reidkit.clip import CLIPTextEncoder
from reidkit.prompts import encode_class_prompts
from reidkit.selection import (
    chance_cross_entropy,
    gather_patches,
    random_selection_overlap,
    selection_overlap,
    stage1_diagnostics,
    top_indices,
)
from tests.clip.tiny_models import tiny_clip


@pytest.mark.parametrize("classes", [1, 2, 32, 751])
def test_the_chance_level_is_the_loss_of_equal_logits(classes: int) -> None:
    labels = torch.arange(classes)
    uniform = F.cross_entropy(torch.zeros(classes, classes, dtype=torch.float64), labels)
    assert chance_cross_entropy(classes) == pytest.approx(float(uniform), rel=1e-12)
    assert chance_cross_entropy(classes) == pytest.approx(math.log(classes), rel=1e-12)


def test_the_chance_level_of_unbalanced_labels_is_their_entropy() -> None:
    counts = [5, 1, 0, 2]
    total = sum(counts)
    entropy = -sum(c / total * math.log(c / total) for c in counts if c)
    assert chance_cross_entropy(4, counts) == pytest.approx(entropy, rel=1e-12)
    # The entropy is the cross-entropy of predicting the label frequencies for every image.
    logits = torch.tensor([c / total if c else 1e-300 for c in counts], dtype=torch.float64).log()
    labels = torch.tensor([k for k, c in enumerate(counts) for _ in range(c)])
    frequency_loss = F.cross_entropy(logits.expand(total, -1), labels)
    assert chance_cross_entropy(4, counts) == pytest.approx(float(frequency_loss), rel=1e-9)
    assert chance_cross_entropy(4, counts) < math.log(4)


def test_bad_counts_are_named() -> None:
    with pytest.raises(ValueError, match="class_counts must hold 3"):
        chance_cross_entropy(3, [1, 2])
    with pytest.raises(ValueError, match="num_classes"):
        chance_cross_entropy(0)


def test_overlap_equals_a_set_loop() -> None:
    generator = torch.Generator().manual_seed(4)
    scores = torch.rand(5, 9, generator=generator, dtype=torch.float64)
    indices = torch.stack([torch.randperm(9, generator=generator)[:4] for _ in range(5)])
    expected = []
    for b in range(5):
        best = set(sorted(range(9), key=lambda j: -float(scores[b, j]))[:4])
        expected.append(len(best & set(indices[b].tolist())) / 4)
    torch.testing.assert_close(
        selection_overlap(indices, scores), torch.tensor(expected, dtype=torch.float64)
    )
    best = top_indices(scores, 4)
    assert selection_overlap(best, scores).tolist() == [1.0] * 5


@pytest.mark.parametrize(("count", "kept"), [(4, 3), (6, 2), (7, 7), (8, 5)])
def test_random_overlap_is_the_mean_over_every_selection(count: int, kept: int) -> None:
    scores = torch.arange(count, dtype=torch.float64)[None]
    subsets = list(itertools.combinations(range(count), kept))
    overlaps = [float(selection_overlap(torch.tensor([subset]), scores)) for subset in subsets]
    assert random_selection_overlap(count, kept) == pytest.approx(sum(overlaps) / len(subsets))


def test_stage1_diagnostics_match_the_parts() -> None:
    model, tokenizer = tiny_clip()
    model.requires_grad_(False)
    torch.manual_seed(0)
    classes, embed = 4, 32
    prompts = MultiGranularityPromptLearner(classes, model, n_ctx=(2, 3), tokenizer=tokenizer)
    encoder = CLIPTextEncoder(model)
    partition = HierarchicalPatchPartition((4, 2), (2, 4))
    alignment = PatchToTokenAlignment(temperature=0.1)
    module = HierarchicalPromptLearning(prompts, encoder, partition, alignment, selected=(1, 3))
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(b, 4, 2, embed, generator=generator),
            torch.randn(b, embed, generator=generator),
            torch.randint(0, classes, (b,), generator=generator),
            torch.rand(b, 4, 2, 1, generator=generator),
        )
        for b in (5, 3)
    ]
    report = stage1_diagnostics(module, batches, classes)
    assert module.training  # restored
    losses, overlaps = [[], []], [[], []]
    for patch_map, embedding, pids, attention in batches:
        torch.set_grad_enabled(False)
        for k, level in enumerate(partition(patch_map, embedding)):
            indices = top_indices(partition.pool(attention, k)[..., 0], (1, 3)[k])
            tokens = encode_class_prompts(prompts.levels[k], encoder).tokens
            logits = alignment.logits(gather_patches(level.features, indices), tokens)
            losses[k].append(F.cross_entropy(logits, pids, reduction="none"))
            overlaps[k].append(selection_overlap(indices, level.scores))
    torch.set_grad_enabled(True)
    for k, level in enumerate(report["levels"]):
        assert level["otce"] == pytest.approx(float(torch.cat(losses[k]).mean()), rel=1e-5)
        assert level["overlap"] == pytest.approx(float(torch.cat(overlaps[k]).mean()), rel=1e-6)
        assert level["otce_chance"] == pytest.approx(math.log(classes))
        assert level["random_overlap"] == (1 / 2, 3 / 4)[k]
    assert report["otce_chance"] == pytest.approx(2 * math.log(classes))
    assert report["otce"] == pytest.approx(sum(lv["otce"] for lv in report["levels"]))
