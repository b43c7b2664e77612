"""Every identity's prompt encoded at once against one prompt at a time."""

from __future__ import annotations

import torch

from reidkit.clip import CLIPTextEncoder
from reidkit.prompts import PromptLearner, encode_class_prompts
from tests.clip.tiny_models import tiny_clip


def test_class_prompts_encoded_in_chunks_equal_one_by_one() -> None:
    model, tokenizer = tiny_clip()
    model.requires_grad_(False)
    learner = PromptLearner(5, model, n_ctx=3, tokenizer=tokenizer)
    features = encode_class_prompts(learner, CLIPTextEncoder(model, chunk_size=2))
    assert features.sentence.shape == (5, 32) and features.tokens.shape == (5, 3, 32)
    encoder = CLIPTextEncoder(model)
    for cls in range(5):
        prompt = learner(torch.tensor([cls]))
        single = encoder(prompt.embeddings, prompt.token_ids)
        torch.testing.assert_close(features.sentence[cls], single.sentence[0])
        torch.testing.assert_close(features.tokens[cls], single.tokens[0, prompt.context_positions])
    (features.tokens.sum() + features.sentence.sum()).backward()
    assert learner.context.grad is not None and learner.context.grad.abs().sum() > 0
