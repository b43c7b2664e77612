"""Whether MMPL's stage-1 parts learn: the OT loss against chance, the agents against random.

Two reference values make the stage-1 metrics readable.

**The OT loss's chance level.** ``L_otce`` (eq. 19) is a cross-entropy over the ``L``
identities of the logits ``(1 - d_OT(l)) / tau`` (eq. 18). When the prompts carry no
information about which identity an image shows, the logits do not depend on the image's
label, and the best such prediction is the label distribution itself: its cross-entropy is the
entropy of the labels, ``H(y) = -sum_l q_l ln q_l``, which is ``ln L`` for balanced identities
(also the loss of equal logits, the uniform softmax). :func:`chance_cross_entropy` gives it; a
loss summed over ``K`` levels has ``K`` times that chance level.

**The agents against random.** The reward of eq. 9-10 is the mean score ``s^e`` of the
selected patches, rescaled, so the best selection of ``M`` of ``M_c`` patches is the ``M`` of
highest score. :func:`selection_overlap` measures which fraction of an agent's ``M`` patches
are among those; a selection drawn uniformly at random has the hypergeometric mean
``M * M / M_c`` patches in common with it, the fraction ``M / M_c``
(:func:`random_selection_overlap`).

:func:`stage1_diagnostics` computes both, level by level, for a trained
:class:`~reidkit.selection.HierarchicalPromptLearning` on batches of frozen-encoder features.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from reidkit import checks
from reidkit.selection.agent import InformationSelectorAgent, gather_patches
from reidkit.selection.attention import top_indices

if TYPE_CHECKING:  # the module imports open_clip; the diagnostics do not need it
    from reidkit.selection.hierarchical import HierarchicalPromptLearning


def chance_cross_entropy(
    num_classes: int, class_counts: Sequence[int] | Tensor | None = None
) -> float:
    """The cross-entropy of the best prediction that ignores the image: the labels' entropy.

    Args:
        num_classes: ``L``.
        class_counts: ``(L,)`` samples per identity; ``None``: balanced, giving ``ln L``.

    Returns:
        ``-sum_l q_l ln q_l`` with ``q_l = count_l / sum(counts)`` (``ln L`` when balanced).
    """
    checks.check_integer("num_classes", num_classes, 1)
    if class_counts is None:
        return math.log(num_classes)
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.shape != (num_classes,) or bool((counts < 0).any()) or float(counts.sum()) <= 0:
        raise ValueError(
            f"class_counts must hold {num_classes} non-negative counts with a positive sum, got "
            f"shape {tuple(counts.shape)}"
        )
    frequencies = counts[counts > 0] / counts.sum()
    return float(-(frequencies * frequencies.log()).sum())


def best_selection(scores: Tensor, num_selected: int) -> Tensor:
    """The ``M`` patches of highest score ``s^e`` (the selection that maximises eq. 9-10).

    Args:
        scores: ``(B, M_c)`` scores.
        num_selected: ``M``.

    Returns:
        ``(B, M)`` patch indices in ascending order.
    """
    return top_indices(scores, num_selected)


def selection_overlap(indices: Tensor, scores: Tensor) -> Tensor:
    """Per image, the fraction of the selected patches that the best selection also keeps.

    Args:
        indices: ``(B, M)`` distinct selected patch indices in ``[0, M_c)``.
        scores: ``(B, M_c)`` scores ``s^e``; the best selection is their top ``M``.

    Returns:
        ``(B,)`` overlaps in ``[0, 1]``.
    """
    if indices.dim() != 2 or scores.dim() != 2 or indices.shape[0] != scores.shape[0]:
        raise ValueError(
            "indices must be (B, M) and scores (B, M_c) with the same B, got "
            f"{tuple(indices.shape)} and {tuple(scores.shape)}"
        )
    count = scores.shape[1]
    if indices.shape[1] > count:
        raise ValueError(f"indices select {indices.shape[1]} of only {count} patches")
    best = torch.zeros_like(scores, dtype=torch.bool)
    best.scatter_(1, best_selection(scores, indices.shape[1]), True)
    return best.gather(1, indices).to(scores.dtype).mean(dim=1)


def random_selection_overlap(num_patches: int, num_selected: int) -> float:
    """The expected :func:`selection_overlap` of ``M`` patches drawn at random: ``M / M_c``.

    ``M`` of ``M_c`` patches drawn uniformly without replacement have, with the best ``M``,
    ``M * M / M_c`` patches in common on average (the hypergeometric mean).
    """
    checks.check_integer("num_patches", num_patches, 1)
    checks.check_integer("num_selected", num_selected, 1, num_patches)
    return num_selected / num_patches


@torch.no_grad()
def stage1_diagnostics(
    module: HierarchicalPromptLearning,
    batches: Iterable[Sequence[Tensor]],
    num_classes: int,
    class_counts: Sequence[int] | Tensor | None = None,
) -> dict[str, Any]:
    """Per level: the OT loss and accuracy against chance, the agents' overlap against random.

    The module runs in evaluation mode (every identity's prompt encoded exactly, the agents'
    deterministic top ``M``) over all ``batches``; the values are averages over the images.

    Args:
        module: a trained stage 1.
        batches: ``(patch_map, embedding, pids[, attention])`` as its ``forward`` takes them.
        num_classes: ``L``.
        class_counts: ``(L,)`` images per identity for the chance level (``None``: balanced).

    Returns:
        ``{"levels": [per-level dict], "otce", "otce_chance"}`` (sums over the levels, with
        alignment) where a level's dict holds, as configured, ``otce`` (eq. 19),
        ``otce_chance`` (:func:`chance_cross_entropy`), ``ot_accuracy`` (top-1 of eq. 18's
        softmax) and its chance ``1 / L``, ``overlap`` with the best selection
        (:func:`selection_overlap`) and ``random_overlap``
        (:func:`random_selection_overlap`).
    """
    was_training = module.training
    module.eval()
    levels = len(module.prompts.levels)
    chance = chance_cross_entropy(num_classes, class_counts)
    totals: list[dict[str, float]] = [{} for _ in range(levels)]
    images = 0
    try:
        classes = [module.class_features(k, torch.empty(0)) for k in range(levels)]
        for patch_map, embedding, pids, *attention in batches:
            images += pids.shape[0]
            for k, level in enumerate(module.partition(patch_map, embedding)):
                sums = totals[k]
                if module.agents is not None:
                    indices = module.agents[k](level.features, level.scores).indices
                elif module.alignment is not None:
                    scores = module.partition.pool(attention[0], k)[..., 0]
                    indices = top_indices(scores, cast(tuple[int, ...], module.selected)[k])
                else:
                    continue
                overlap = selection_overlap(indices, level.scores).sum()
                sums["overlap"] = sums.get("overlap", 0.0) + float(overlap)
                if module.alignment is None:
                    continue
                logits = module.alignment.logits(
                    gather_patches(level.features, indices), classes[k].tokens
                )
                loss = torch.nn.functional.cross_entropy(logits, pids, reduction="sum")
                correct = (logits.argmax(dim=1) == pids).sum()
                sums["otce"] = sums.get("otce", 0.0) + float(loss)
                sums["ot_accuracy"] = sums.get("ot_accuracy", 0.0) + float(correct)
    finally:
        module.train(was_training)
    if images == 0:
        raise ValueError("batches yielded no images")
    report: dict[str, Any] = {"levels": []}
    for k, sums in enumerate(totals):
        means: dict[str, float] = {name: value / images for name, value in sums.items()}
        if "otce" in means:
            means["otce_chance"] = chance
            means["ot_accuracy_chance"] = 1 / num_classes
        if "overlap" in means:
            count = module.partition.patch_counts[k]
            kept: int = (
                cast(InformationSelectorAgent, module.agents[k]).num_selected
                if module.agents is not None
                else cast(tuple[int, ...], module.selected)[k]
            )
            means["random_overlap"] = random_selection_overlap(count, kept)
        report["levels"].append(means)
    if module.alignment is not None:
        report["otce"] = sum(level["otce"] for level in report["levels"])
        report["otce_chance"] = levels * chance
    return report
