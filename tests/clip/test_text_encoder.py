"""CLIPTextEncoder against open_clip's own encode_text and text transformer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reidkit.clip import CLIPTextEncoder, text_tower
from tests.clip.tiny_models import TINY_CUSTOM_TEXT_CONFIG, as_sequence_first, tiny_clip

SENTENCES = ["A photo of a tall man in a red coat.", "a woman with a bag", "x"]


@pytest.fixture(scope="module", params=["CLIP", "CustomTextCLIP"])
def clip_and_tokenizer(request: pytest.FixtureRequest) -> tuple[nn.Module, object]:
    config = TINY_CUSTOM_TEXT_CONFIG if request.param == "CustomTextCLIP" else None
    return tiny_clip(config=config)


def _open_clip_token_outputs(model: nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    """Every token's output through open_clip's own transformer, final norm and projection."""
    tower = text_tower(model)
    x = tower.token_embedding(token_ids) + tower.positional_embedding
    x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask))
    projection = tower.text_projection
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def test_sentence_feature_equals_encode_text(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    token_ids = tokenizer(SENTENCES)
    encoder = CLIPTextEncoder(model)
    with torch.no_grad():
        features = encoder(text_tower(model).token_embedding(token_ids), token_ids)
        expected = model.encode_text(token_ids)
    assert features.sentence.shape == (3, 32)
    torch.testing.assert_close(features.sentence, expected, atol=1e-5, rtol=1e-5)


def test_token_features_equal_open_clips_transformer_outputs(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    token_ids = tokenizer(SENTENCES)
    with torch.no_grad():
        features = CLIPTextEncoder(model)(text_tower(model).token_embedding(token_ids), token_ids)
        expected = _open_clip_token_outputs(model, token_ids)
    assert features.tokens.shape == (3, 16, 32)
    torch.testing.assert_close(features.tokens, expected, atol=1e-5, rtol=1e-5)
    end_of_text = token_ids.argmax(dim=-1)
    torch.testing.assert_close(features.tokens[torch.arange(3), end_of_text], features.sentence)


def test_shorter_sequences_use_the_leading_positions_and_mask() -> None:
    model, tokenizer = tiny_clip()
    token_ids = tokenizer(SENTENCES)
    embeddings = model.token_embedding(token_ids)
    encoder = CLIPTextEncoder(model)
    with torch.no_grad():
        full = encoder(embeddings, token_ids)
        short = encoder(embeddings[:, :12], token_ids[:, :12])
    # The causal mask makes outputs at positions < 12 independent of the later tokens.
    torch.testing.assert_close(short.tokens, full.tokens[:, :12], atol=1e-5, rtol=1e-5)


def test_trimmed_encoding_keeps_the_features_up_to_the_end_of_text(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    token_ids = tokenizer(SENTENCES)
    encoder = CLIPTextEncoder(model)
    with torch.no_grad():
        embeddings = text_tower(model).token_embedding(token_ids)
        full = encoder(embeddings, token_ids)
        trimmed = encoder.encode_trimmed(embeddings, token_ids)
    length = int(token_ids.argmax(dim=-1).max()) + 1  # the longest sentence's end of text
    assert length < token_ids.shape[1] and trimmed.tokens.shape == (3, length, 32)
    torch.testing.assert_close(trimmed.sentence, full.sentence, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trimmed.tokens, full.tokens[:, :length], atol=1e-5, rtol=1e-5)


def test_sequence_first_transformers_give_the_same_features() -> None:
    model, tokenizer = tiny_clip()
    sequence_first = copy.deepcopy(model)
    sequence_first.transformer = as_sequence_first(model.transformer)
    assert not sequence_first.transformer.batch_first
    token_ids = tokenizer(SENTENCES)
    embeddings = model.token_embedding(token_ids)
    with torch.no_grad():
        expected = CLIPTextEncoder(model)(embeddings, token_ids)
        features = CLIPTextEncoder(sequence_first)(embeddings, token_ids)
        torch.testing.assert_close(
            features.sentence, sequence_first.encode_text(token_ids), atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(features.tokens, expected.tokens, atol=1e-5, rtol=1e-5)


def test_chunking_and_activation_checkpointing_change_nothing() -> None:
    model, tokenizer = tiny_clip()
    token_ids = tokenizer(SENTENCES)
    results = []
    for encoder in (
        CLIPTextEncoder(model),
        CLIPTextEncoder(model, checkpoint_activations=True, chunk_size=2),
    ):
        embeddings = model.token_embedding(token_ids).detach().requires_grad_(True)
        features = encoder(embeddings, token_ids)
        features.sentence.square().sum().backward()
        results.append((features.sentence.detach(), features.tokens.detach(), embeddings.grad))
    for plain, other in zip(*results):
        torch.testing.assert_close(other, plain, atol=1e-5, rtol=1e-5)


def test_the_encoder_shares_the_models_parameters() -> None:
    model, _ = tiny_clip()
    encoder = CLIPTextEncoder(model)
    model_parameters = {id(parameter) for parameter in model.parameters()}
    assert all(id(parameter) in model_parameters for parameter in encoder.parameters())


@pytest.mark.parametrize(
    ("shape", "ids_shape", "message"),
    [
        ((2, 16, 47), (2, 16), "embeddings"),
        ((2, 17, 48), (2, 17), "context length"),
        ((2, 16, 48), (2, 15), "token_ids"),
    ],
)
def test_bad_shapes_name_the_argument(shape, ids_shape, message) -> None:
    model, _ = tiny_clip()
    with pytest.raises(ValueError, match=message):
        CLIPTextEncoder(model)(torch.randn(shape), torch.zeros(ids_shape, dtype=torch.long))


def test_bad_chunk_size_is_rejected() -> None:
    model, _ = tiny_clip()
    with pytest.raises(ValueError, match="chunk_size"):
        CLIPTextEncoder(model, chunk_size=0)


def _bidirectional_reference(model: nn.Module, token_ids: torch.Tensor) -> list[torch.Tensor]:
    """Each sentence alone, cut after its end of text, through open_clip's transformer with no
    mask at all: every token sees every other, and there is no padding to hide."""
    tower = text_tower(model)
    outputs = []
    for ids in token_ids:
        length = int(ids.argmax()) + 1
        x = tower.token_embedding(ids[None, :length]) + tower.positional_embedding[:length]
        outputs.append(tower.ln_final(tower.transformer(x, attn_mask=None))[0])
    return outputs


@pytest.mark.parametrize("sequence_first", [False, True])
def test_the_bidirectional_mode_attends_to_every_word_and_never_to_the_padding(
    sequence_first: bool,
) -> None:
    model, tokenizer = tiny_clip()
    if sequence_first:
        model.transformer = as_sequence_first(model.transformer)
    token_ids = tokenizer(SENTENCES)
    encoder = CLIPTextEncoder(model, causal=False)
    with torch.no_grad():
        features = encoder(model.token_embedding(token_ids), token_ids)
        expected = _bidirectional_reference(model, token_ids)
    for row, reference in enumerate(expected):
        length = reference.shape[0]
        torch.testing.assert_close(features.hidden[row, :length], reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            features.sentence[row], reference[-1] @ model.text_projection, atol=1e-5, rtol=1e-5
        )
    # Unlike the causal mode, an early token's output depends on the words after it.
    with torch.no_grad():
        causal = CLIPTextEncoder(model)(model.token_embedding(token_ids), token_ids)
    assert not torch.allclose(causal.hidden[0, 1], features.hidden[0, 1], atol=1e-3)


def test_the_padding_changes_no_output_of_the_bidirectional_mode() -> None:
    model, tokenizer = tiny_clip()
    token_ids = tokenizer(SENTENCES)
    encoder = CLIPTextEncoder(model, causal=False)
    embeddings = model.token_embedding(token_ids)
    noisy = embeddings.clone()
    padding = ~encoder.valid_token_mask(token_ids)
    noisy[padding] = torch.randn(int(padding.sum()), embeddings.shape[-1])
    with torch.no_grad():
        clean, other = encoder(embeddings, token_ids), encoder(noisy, token_ids)
        trimmed = encoder.encode_trimmed(embeddings, token_ids)
    valid = ~padding
    torch.testing.assert_close(other.hidden[valid], clean.hidden[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other.sentence, clean.sentence, atol=1e-5, rtol=1e-5)
    length = trimmed.hidden.shape[1]
    assert length == int(token_ids.argmax(dim=-1).max()) + 1
    torch.testing.assert_close(trimmed.sentence, clean.sentence, atol=1e-5, rtol=1e-5)


def test_hidden_states_are_the_token_features_before_the_projection(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    token_ids = tokenizer(SENTENCES)
    tower = text_tower(model)
    with torch.no_grad():
        features = CLIPTextEncoder(model)(tower.token_embedding(token_ids), token_ids)
    projection = tower.text_projection
    projected = (
        projection(features.hidden)
        if isinstance(projection, nn.Linear)
        else features.hidden @ projection
    )
    assert features.hidden.shape == (3, 16, 48)
    torch.testing.assert_close(projected, features.tokens, atol=1e-5, rtol=1e-5)


def test_valid_and_content_masks_follow_the_end_of_text() -> None:
    model, tokenizer = tiny_clip()
    token_ids = tokenizer(["a b c", "x"])
    encoder = CLIPTextEncoder(model, causal=False)
    end = token_ids.argmax(dim=-1).tolist()  # 4 and 2
    valid, content = encoder.valid_token_mask(token_ids), encoder.content_token_mask(token_ids)
    for row, eot in enumerate(end):
        assert valid[row].tolist() == [i <= eot for i in range(16)]
        assert content[row].tolist() == [0 < i < eot for i in range(16)]


def test_the_bidirectional_mode_needs_end_of_text_pooling() -> None:
    model, _ = tiny_clip()
    model.text_pool_type = "last"
    with pytest.raises(ValueError, match="causal=False"):
        CLIPTextEncoder(model, causal=False)
    with pytest.raises(ValueError, match="causal must be a bool"):
        CLIPTextEncoder(tiny_clip()[0], causal="no")


def test_end_of_text_pooling_needs_the_end_of_text_id() -> None:
    model, _ = tiny_clip()
    model.text_pool_type, model.text_eos_id = "eos", None
    with pytest.raises(ValueError, match="pooled at 'eos' must have an eos_id"):
        CLIPTextEncoder(model)
