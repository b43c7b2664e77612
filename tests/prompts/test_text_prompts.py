"""Textual prompt learners: real-word prompts equal encode_text, gradients, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidkit.clip import CLIPTextEncoder
from reidkit.prompts import (
    MultiGranularityPromptLearner,
    PromptLearner,
    PromptTemplate,
    SharedContextPromptLearner,
)
from tests.clip.tiny_models import tiny_clip


@pytest.fixture(scope="module")
def clip_and_tokenizer() -> tuple[nn.Module, object]:
    model, tokenizer = tiny_clip()
    return model.requires_grad_(False), tokenizer


def _word_embeddings(model: nn.Module, tokenizer, words: str) -> torch.Tensor:
    """Token embeddings ``(n, width)`` of ``words``, each of which must be a single token."""
    ids = tokenizer([words])[0]
    body = ids[1 : int(ids.argmax())]  # between the start and end of text
    assert body.numel() == len(words.split()), "each word must be one token"
    return model.token_embedding(body)


def _encode_text(model: nn.Module, tokenizer, sentence: str) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(tokenizer([sentence]))[0]


def test_id_prompt_with_real_words_equals_encode_text(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    learner = PromptLearner(3, model, "A photo of a {} person.", n_ctx=3, tokenizer=tokenizer)
    with torch.no_grad():
        learner.context[1] = _word_embeddings(model, tokenizer, "tall man wearing")
        learner.context[2] = _word_embeddings(model, tokenizer, "short woman with")
        prompts = learner(torch.tensor([2, 1]))
        features = CLIPTextEncoder(model)(prompts.embeddings, prompts.token_ids)
    expected = [
        _encode_text(model, tokenizer, "A photo of a short woman with person."),
        _encode_text(model, tokenizer, "A photo of a tall man wearing person."),
    ]
    torch.testing.assert_close(features.sentence, torch.stack(expected), atol=1e-5, rtol=1e-5)
    assert prompts.context_positions == slice(5, 8)  # [SOT] a photo of a | X X X
    assert features.tokens[:, prompts.context_positions].shape == (2, 3, 32)


def test_shared_context_with_class_names_equals_encode_text(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    learner = SharedContextPromptLearner(model, ["dog", "red car"], tokenizer, n_ctx=4)
    assert learner.class_context is None
    with torch.no_grad():
        learner.context.copy_(_word_embeddings(model, tokenizer, "a photo of a"))
        prompts = learner()
        features = CLIPTextEncoder(model)(prompts.embeddings, prompts.token_ids)
    expected = [
        _encode_text(model, tokenizer, f"a photo of a {name}.") for name in ("dog", "red car")
    ]
    torch.testing.assert_close(features.sentence, torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_shared_context_with_a_class_count_equals_encode_text(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    learner = SharedContextPromptLearner(model, 4, tokenizer, n_ctx=2, n_class_ctx=2)
    assert learner.class_context.shape == (4, 2, 48)
    with torch.no_grad():
        learner.context.copy_(_word_embeddings(model, tokenizer, "a tall"))
        learner.class_context[3] = _word_embeddings(model, tokenizer, "blond young")
        prompts = learner(torch.tensor([3]))
        features = CLIPTextEncoder(model)(prompts.embeddings, prompts.token_ids)
    expected = _encode_text(model, tokenizer, "a tall blond young person.")
    torch.testing.assert_close(features.sentence[0], expected, atol=1e-5, rtol=1e-5)


def test_multi_granularity_levels_have_their_own_token_counts(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    learner = MultiGranularityPromptLearner(5, model, n_ctx=(2, 3, 4), tokenizer=tokenizer)
    assert learner.num_levels == 3
    labels = torch.tensor([4, 0])
    batches = learner(labels)
    encoder = CLIPTextEncoder(model)
    for level, (count, prompts) in enumerate(zip((2, 3, 4), batches)):
        assert learner.levels[level].context.shape == (5, count, 48)
        assert prompts.embeddings.shape == (2, 16, 48)
        assert learner.context_positions(level) == slice(5, 5 + count)
        torch.testing.assert_close(
            prompts.embeddings[:, learner.context_positions(level)],
            learner.levels[level].context[labels],
        )
        single = learner(labels, level=level)
        torch.testing.assert_close(single.embeddings, prompts.embeddings)
        tokens = encoder(prompts.embeddings, prompts.token_ids).tokens
        assert tokens[:, prompts.context_positions].shape == (2, count, 32)


def _learners(model: nn.Module, tokenizer) -> dict[str, nn.Module]:
    return {
        "id": PromptLearner(4, model, n_ctx=3, tokenizer=tokenizer),
        "shared_names": SharedContextPromptLearner(model, ["cat", "dog", "cow", "pig"], tokenizer),
        "shared_count": SharedContextPromptLearner(model, 4, tokenizer, n_ctx=2, n_class_ctx=2),
        "multi": MultiGranularityPromptLearner(4, model, n_ctx=(2, 3), tokenizer=tokenizer),
    }


def _all_prompts(learner: nn.Module, labels: torch.Tensor) -> list:
    prompts = learner(labels)
    return prompts if isinstance(prompts, list) else [prompts]


@pytest.mark.parametrize("kind", ["id", "shared_names", "shared_count", "multi"])
def test_gradients_reach_only_the_learnable_tokens_of_the_batch(clip_and_tokenizer, kind) -> None:
    model, tokenizer = clip_and_tokenizer
    learner = _learners(model, tokenizer)[kind]
    encoder = CLIPTextEncoder(model)
    labels = torch.tensor([2, 0, 2])
    loss = sum(
        encoder(prompts.embeddings, prompts.token_ids).sentence.square().sum()
        for prompts in _all_prompts(learner, labels)
    )
    loss.backward()

    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(not buffer.requires_grad for buffer in learner.buffers())
    for name, parameter in learner.named_parameters():
        assert parameter.grad is not None, name
        if parameter.dim() == 3:  # one slice per class: only the batch's classes move
            moved = parameter.grad.flatten(1).abs().sum(dim=1) > 0
            assert moved.tolist() == [True, False, True, False], name
        else:
            assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["id", "shared_names", "shared_count", "multi"])
def test_a_checkpoint_loads_into_a_fresh_learner_buffers_included(kind) -> None:
    source_model, tokenizer = tiny_clip(seed=1)
    fresh_model, _ = tiny_clip(seed=2)  # other token embeddings: the buffers must come from disk
    source = _learners(source_model, tokenizer)[kind]
    fresh = _learners(fresh_model, tokenizer)[kind]
    state = source.state_dict()
    assert any(key.endswith("template.prefix") for key in state)
    assert any(key.endswith("template.suffix") for key in state)
    assert any(key.endswith("template.token_ids") for key in state)

    fresh.load_state_dict(state)
    labels = torch.tensor([3, 1])
    for expected, actual in zip(_all_prompts(source, labels), _all_prompts(fresh, labels)):
        torch.testing.assert_close(actual.embeddings, expected.embeddings, atol=0, rtol=0)
        assert torch.equal(actual.token_ids, expected.token_ids)


def test_buffers_follow_the_module_across_dtypes(clip_and_tokenizer) -> None:
    model, tokenizer = clip_and_tokenizer
    learner = PromptLearner(2, model, tokenizer=tokenizer).double()
    prompts = learner()
    assert prompts.embeddings.dtype == torch.float64
    assert learner.template.prefix.dtype == torch.float64
    assert learner.template.token_ids.dtype == torch.long


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 4]), r"labels must lie in \[0, 4\)"),
        (torch.tensor([-1]), "labels must lie"),
        (torch.tensor([0.0]), "integer"),
        (torch.tensor([[0]]), "1-D"),
    ],
)
def test_bad_labels_are_rejected(clip_and_tokenizer, labels, message) -> None:
    model, tokenizer = clip_and_tokenizer
    with pytest.raises(ValueError, match=message):
        PromptLearner(4, model, tokenizer=tokenizer)(labels)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m, t: PromptLearner(0, m, tokenizer=t), "num_classes"),
        (lambda m, t: PromptLearner(2, m, "A photo of a person.", tokenizer=t), "exactly once"),
        (lambda m, t: PromptLearner(2, m, n_ctx=14, tokenizer=t), "placeholder"),
        (lambda m, t: MultiGranularityPromptLearner(2, m, n_ctx=4, tokenizer=t), "n_ctx"),
        (lambda m, t: MultiGranularityPromptLearner(2, m, tokenizer=t)(level=3), "level"),
        (lambda m, t: SharedContextPromptLearner(m, "dog", t), "classes"),
        (lambda m, t: PromptTemplate(["{} a", "b {}"], 1, m, t), "one token position"),
    ],
)
def test_bad_arguments_name_themselves(clip_and_tokenizer, build, message) -> None:
    model, tokenizer = clip_and_tokenizer
    with pytest.raises(ValueError, match=message):
        build(model, tokenizer)
