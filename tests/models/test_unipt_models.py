"""UniPT's encoders, pre-training model and the text-to-image fine-tuning model, against the
encoders' outputs pooled by hand in float64."""

from __future__ import annotations

import pytest
import torch

from reidkit.clip import CLIPImageEncoder, CLIPTextEncoder
from reidkit.models import (
    TextToImageModel,
    UniPTImageEncoder,
    UniPTPretrainingModel,
    UniPTTextEncoder,
)
from tests.clip.tiny_models import tiny_clip

SENTENCES = ["a man in a red coat and black trousers", "a bag", "someone walking"]


@pytest.fixture
def clip_and_tokenizer():
    return tiny_clip(image_size=(64, 32))


def _max_pool_reference(tokens: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    weight = head.projection.weight.detach().double()
    bias = head.projection.bias.detach().double()
    rows = []
    for sequence in tokens.detach().double():
        projected = [weight @ token + bias for token in sequence]
        rows.append(torch.stack(projected).max(dim=0).values)
    return torch.stack(rows)


def test_the_image_embedding_max_pools_every_projected_token(clip_and_tokenizer) -> None:
    model, _ = clip_and_tokenizer
    encoder = UniPTImageEncoder(model, 24).eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        features = CLIPImageEncoder(model)(images)
        embeddings = encoder(images)
    tokens = torch.cat([features.cls[:, None], features.patches.flatten(1, 2)], dim=1)
    assert tokens.shape == (2, 1 + 8, 64)
    expected = _max_pool_reference(tokens, encoder.head)
    torch.testing.assert_close(embeddings.double(), expected, atol=1e-5, rtol=1e-5)
    assert not model.visual.proj.requires_grad  # CLIP's projection is not used


def test_the_text_embedding_pools_each_sentence_alone_bidirectionally(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    encoder = UniPTTextEncoder(model, 24)
    token_ids = tokenizer(SENTENCES)
    with torch.no_grad():
        embeddings = encoder(token_ids)
        alone = CLIPTextEncoder(model, causal=False)
        for row, ids in enumerate(token_ids):
            length = int(ids.argmax()) + 1  # up to the end of text: no padding at all
            ids = ids[None, :length]
            hidden = alone(model.token_embedding(ids), ids).hidden
            expected = _max_pool_reference(hidden, encoder.head)[0]
            torch.testing.assert_close(embeddings[row].double(), expected, atol=1e-5, rtol=1e-5)
    assert not model.text_projection.requires_grad
    assert encoder.context_length == 16


def test_pretraining_predicts_the_masked_tokens_with_the_tied_table(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    image_encoder, text_encoder = UniPTImageEncoder(model, 24), UniPTTextEncoder(model, 24)
    pretraining = UniPTPretrainingModel(
        image_encoder, text_encoder, special_ids=(49406, 49407), mask_probability=0.5
    )
    token_ids = tokenizer(SENTENCES * 4)
    images = torch.randn(12, 3, 64, 32)
    torch.manual_seed(3)
    output = pretraining(images, token_ids)
    # the same draws, by hand
    torch.manual_seed(3)
    encoder = text_encoder.encoder
    masked = pretraining.masking(
        token_ids, encoder.content_token_mask(token_ids), model.token_embedding
    )
    hidden = encoder(masked.embeddings, token_ids).hidden
    torch.testing.assert_close(
        output.mlm_logits, pretraining.mlm_head(hidden[masked.selected]), atol=1e-5, rtol=1e-5
    )
    assert torch.equal(output.mlm_targets, token_ids[masked.selected])
    assert output.mlm_targets.numel() > 0
    torch.testing.assert_close(output.text_embeddings, text_encoder(token_ids))
    assert output.image_embeddings.shape == (12, 24)
    # the MLM loss trains the token table through the tied decoder and the mask embedding
    torch.nn.functional.cross_entropy(output.mlm_logits, output.mlm_targets).backward()
    assert model.token_embedding.weight.grad is not None
    assert pretraining.masking.mask_embedding.grad is not None
    without = UniPTPretrainingModel(image_encoder, text_encoder, (49406, 49407), mlm=False)
    plain = without(images, token_ids)
    assert plain.mlm_logits is None and without.masking is None


def test_the_fine_tuning_model_classifies_both_embeddings_with_one_classifier(
    clip_and_tokenizer,
) -> None:
    model, tokenizer = clip_and_tokenizer
    finetune = TextToImageModel(UniPTImageEncoder(model, 24), UniPTTextEncoder(model, 24), 24, 5)
    images, token_ids = torch.randn(3, 3, 64, 32), tokenizer(SENTENCES)
    output = finetune(images, token_ids)
    torch.testing.assert_close(output.image_embeddings, finetune.encode_image(images))
    torch.testing.assert_close(output.text_embeddings, finetune.encode_text(token_ids))
    linear = finetune.classifier.classifier
    torch.testing.assert_close(output.image_logits, linear(output.image_embeddings))
    torch.testing.assert_close(output.text_logits, linear(output.text_embeddings))
    # every trainable parameter gets a gradient from the two losses' inputs
    (output.image_logits.sum() + output.text_logits.sum()).backward()
    missing = [n for n, p in finetune.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
