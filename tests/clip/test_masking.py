"""BERT's token masking: what is selected, what replaces it, what is predicted."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reidkit.clip import CLIPTextEncoder
from reidkit.clip.masking import IGNORE_INDEX, TokenMasking
from tests.clip.tiny_models import tiny_clip

VOCAB, WIDTH = 1000, 8
EXCLUDED = (998, 999)


def _within(count: int, trials: int, probability: float) -> bool:
    """``count`` successes of ``trials`` lie within 4.5 binomial standard deviations."""
    sigma = math.sqrt(trials * probability * (1 - probability))
    return abs(count - trials * probability) <= 4.5 * sigma


def _batch(rows: int = 400, length: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    token_ids = torch.randint(0, 998, (rows, length), generator=generator)
    maskable = torch.rand(rows, length, generator=generator) < 0.7
    return token_ids, maskable


def test_selection_and_replacement_rates_are_berts() -> None:
    torch.manual_seed(1)
    embedding = nn.Embedding(VOCAB, WIDTH)
    masking = TokenMasking(WIDTH, VOCAB, excluded_ids=EXCLUDED)
    token_ids, maskable = _batch()
    with torch.no_grad():
        masked = masking(token_ids, maskable, embedding)
        original = embedding(token_ids)
    selected = masked.selected
    assert not bool((selected & ~maskable).any())
    assert _within(int(selected.sum()), int(maskable.sum()), 0.15)
    # Classify each selected position by what replaced it.
    is_mask = (masked.embeddings == masking.mask_embedding).all(-1) & selected
    kept = (masked.embeddings == original).all(-1) & selected
    randomised = selected & ~is_mask & ~kept
    total = int(selected.sum())
    assert _within(int(is_mask.sum()), total, 0.8)
    # a random draw equals the original token with probability 1/998: counted as kept
    assert _within(int(randomised.sum()), total, 0.1 * (1 - 1 / 998))
    assert _within(int(kept.sum()), total, 0.1 + 0.1 / 998)
    # unselected positions are the plain embeddings
    assert torch.equal(masked.embeddings[~selected], original[~selected])
    # random replacements are embeddings of drawable tokens, never of the excluded ids
    table = embedding.weight
    replaced = masked.embeddings[randomised]
    ids = (replaced[:, None, :] == table[None]).all(-1).float().argmax(-1)
    assert torch.equal(table[ids], replaced)
    assert not bool(torch.isin(ids, torch.tensor(EXCLUDED)).any())


def test_targets_are_the_original_ids_at_the_selected_positions() -> None:
    embedding = nn.Embedding(VOCAB, WIDTH)
    token_ids, maskable = _batch(20, 30)
    masked = TokenMasking(WIDTH, VOCAB, probability=0.5)(token_ids, maskable, embedding)
    expected = torch.full_like(token_ids, IGNORE_INDEX)
    expected[masked.selected] = token_ids[masked.selected]
    assert torch.equal(masked.targets, expected)


def test_the_generator_makes_masking_repeatable_and_the_mask_embedding_learns() -> None:
    embedding = nn.Embedding(VOCAB, WIDTH)
    masking = TokenMasking(WIDTH, VOCAB, probability=1.0, mask_fraction=1.0, random_fraction=0.0)
    token_ids, maskable = _batch(4, 10)
    first = masking(token_ids, maskable, embedding, torch.Generator().manual_seed(3))
    second = masking(token_ids, maskable, embedding, torch.Generator().manual_seed(3))
    assert torch.equal(first.embeddings, second.embeddings)
    assert torch.equal(first.selected, maskable)  # probability 1 selects every maskable token
    first.embeddings.sum().backward()
    assert torch.equal(masking.mask_embedding.grad, torch.full((WIDTH,), float(maskable.sum())))


def test_start_end_and_padding_are_never_masked_in_a_clip_sentence() -> None:
    model, tokenizer = tiny_clip()
    token_ids = tokenizer(["a man in a red coat", "a bag"] * 50)
    encoder = CLIPTextEncoder(model, causal=False)
    masking = TokenMasking(encoder.width, 49408, probability=1.0, excluded_ids=(49406, 49407))
    masked = masking(token_ids, encoder.content_token_mask(token_ids), model.token_embedding)
    start, end = token_ids == 49406, token_ids == 49407
    padding = ~encoder.valid_token_mask(token_ids)
    assert start.any() and end.any() and padding.any()
    assert not bool((masked.selected & (start | end | padding)).any())
    assert int(masked.selected.sum()) == 50 * (6 + 2)  # every word, since probability = 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probability": 0.0}, "probability"),
        ({"mask_fraction": 0.9, "random_fraction": 0.2}, "mask_fraction \\+ random_fraction"),
        ({"excluded_ids": (VOCAB,)}, "excluded_ids"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_settings_name_the_argument(kwargs: dict, message: str) -> None:
    settings = {"width": WIDTH, "vocab_size": VOCAB, **kwargs}
    with pytest.raises(ValueError, match=message):
        TokenMasking(**settings)


def test_bad_inputs_name_the_argument() -> None:
    masking, embedding = TokenMasking(WIDTH, VOCAB), nn.Embedding(VOCAB, WIDTH)
    token_ids, maskable = _batch(2, 5)
    with pytest.raises(ValueError, match="token_ids"):
        masking(token_ids.float(), maskable, embedding)
    with pytest.raises(ValueError, match="maskable"):
        masking(token_ids, maskable.long(), embedding)
    with pytest.raises(ValueError, match="width 8"):
        masking(token_ids, maskable, nn.Embedding(VOCAB, 4))
