"""Scoring images against attribute prompts with a frozen CLIP: UniPT's conquer stage (sec. 3.1).

"We put the person images into the frozen CLIP visual model [...] and the prompts into the
frozen CLIP textual model [...]. For each person image feature, we calculate cosine
similarities between itself and all prompt features. Then, for each of the required
attributes, we choose the most similar phrase. For each of the optional attributes, we choose
the satisfied phrase with a softmax probability larger than 0.9."

The logits are CLIP's zero-shot logits, ``logit_scale * cos(image, prompt)``
(:func:`score_prompts`). A required attribute takes its most similar phrase. For an optional
attribute the paper does not say over which prompts the softmax runs; reidkit offers both:

* ``scope="attribute"`` (default): over the prompts of that attribute alone, its phrases and
  its absent prompts. The probability measures how clearly one phrase beats the attribute's
  alternatives, which is what a threshold of 0.9 can select on; with no absent prompt, an
  attribute with a single phrase would always be selected, so give optional attributes
  absent prompts.
* ``scope="all"``: over every prompt of the vocabulary, the prompts of the other attributes
  included. A phrase then needs 90 % of the mass of all prompts, which with many attributes
  almost never happens.

The most probable phrase is kept when its probability exceeds the threshold and it is not an
absent prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from reidkit import checks
from reidkit.pseudotext.vocabulary import AttributeVocabulary

SOFTMAX_SCOPES = ("attribute", "all")
"""Where the softmax of an optional attribute runs (see the module docstring)."""

Selection = dict[str, str | None]
"""Attribute name to the selected phrase, ``None`` where an optional attribute was not
selected."""


def prompt_probabilities(logits: Tensor, vocabulary: AttributeVocabulary, scope: str) -> Tensor:
    """``(N, P)`` softmax probabilities of the prompts, per attribute or over all of them.

    Args:
        logits: ``(N, P)`` logits of ``N`` images against the ``P`` prompts of
            :meth:`AttributeVocabulary.prompts`, in that order.
        vocabulary: the vocabulary the prompts come from.
        scope: ``"attribute"``: each attribute's prompts sum to 1; ``"all"``: each row does.
    """
    checks.check_choice("scope", scope, SOFTMAX_SCOPES)
    prompts, owners = vocabulary.prompts()
    checks.check_float_matrix("logits", logits)
    if logits.shape[1] != len(prompts):
        raise ValueError(
            f"logits must have one column per prompt of the vocabulary ({len(prompts)}), got "
            f"{logits.shape[1]}"
        )
    if scope == "all":
        return logits.softmax(dim=1)
    probabilities = torch.empty_like(logits)
    attribute_of = torch.tensor([owner.attribute for owner in owners], device=logits.device)
    for index in range(len(vocabulary.attributes)):
        columns = attribute_of == index
        probabilities[:, columns] = logits[:, columns].softmax(dim=1)
    return probabilities


def select_phrases(
    logits: Tensor,
    vocabulary: AttributeVocabulary,
    threshold: float = 0.9,
    scope: str = "attribute",
) -> list[Selection]:
    """The phrase of every attribute for every image.

    Args:
        logits: ``(N, P)`` CLIP logits of the images against every prompt of the vocabulary
            (:func:`score_prompts`).
        vocabulary: the attributes.
        threshold: an optional attribute's best phrase needs a probability above it (0.9).
        scope: the softmax of the optional attributes, ``"attribute"`` or ``"all"``.

    Returns:
        One :data:`Selection` per image: every required attribute has its most similar
        phrase; an optional attribute has its most probable phrase when that is not an
        absent prompt and its probability exceeds ``threshold``, else ``None``.
    """
    checks.check_number("threshold", threshold, at_least=0, below=1)
    probabilities = prompt_probabilities(logits, vocabulary, scope)
    _, owners = vocabulary.prompts()
    selections: list[Selection] = [{} for _ in range(logits.shape[0])]
    for index, attribute in enumerate(vocabulary.attributes):
        columns = [p for p, owner in enumerate(owners) if owner.attribute == index]
        scores = (logits if attribute.required else probabilities)[:, columns]
        best_score, best = scores.max(dim=1)
        for row, (column, score) in enumerate(zip(best.tolist(), best_score.tolist())):
            phrase = owners[columns[column]].phrase
            keep = attribute.required or (phrase is not None and score > threshold)
            selections[row][attribute.name] = attribute.phrases[phrase] if keep else None
    return selections


@torch.no_grad()
def score_prompts(
    clip_model: Any,
    tokenize: Callable[[Sequence[str]], Tensor],
    images: Any,
    vocabulary: AttributeVocabulary,
    device: torch.device | str = "cpu",
) -> Tensor:
    """CLIP's zero-shot logits of every image against every prompt of the vocabulary.

    Args:
        clip_model: an open_clip CLIP (frozen here: no gradient, eval mode).
        tokenize: its tokenizer (``load_clip``'s second output).
        images: an iterable of batches whose first item is ``(B, 3, H, W)`` images at the
            model's input size, normalised as it expects (e.g. a ``DataLoader`` over
            :class:`~reidkit.data.ReIDImageDataset`).
        vocabulary: the attributes whose prompts are scored.
        device: where CLIP runs.

    Returns:
        ``(N, P)`` ``logit_scale * cos(image, prompt)`` on the CPU, in image then
        :meth:`AttributeVocabulary.prompts` order.
    """
    clip_model.eval()
    prompts, _ = vocabulary.prompts()
    text = F.normalize(clip_model.encode_text(tokenize(prompts).to(device)).float(), dim=-1)
    scale = float(clip_model.logit_scale.exp()) if hasattr(clip_model, "logit_scale") else 100.0
    rows = []
    for batch in images:
        features = clip_model.encode_image(batch[0].to(device)).float()
        rows.append((scale * F.normalize(features, dim=-1) @ text.T).cpu())
    if not rows:
        raise ValueError("images yielded no batch")
    return torch.cat(rows)
