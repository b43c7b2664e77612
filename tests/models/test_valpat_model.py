"""VALPATModel: momentum copies before the keys, queues read before they are appended to,
keys without gradient, and the evaluation heads."""

from __future__ import annotations

import copy

import torch

from reidkit.losses import VALPATLoss
from reidkit.models import VALPATModel
from tests.clip.tiny_models import tiny_clip


def _batch(tokenizer, n: int = 4) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "strong_views": (
            torch.randn(n, 3, 64, 32, generator=generator),
            torch.randn(n, 3, 64, 32, generator=generator),
        ),
        "weak_view": torch.randn(n, 3, 64, 32, generator=generator),
        "token_ids": tokenizer([f"a person with a bag {i}" for i in range(n)]),
        "attribute_labels": (torch.rand(n, 6, generator=generator) > 0.5).float(),
    }


def test_a_step_updates_the_copies_then_reads_and_appends_the_queues() -> None:
    clip_model, tokenizer = tiny_clip(image_size=(64, 32))
    model = VALPATModel(clip_model, num_attributes=6, queue_size=6, momentum=0.5, ssl_dim=8)
    with torch.no_grad():  # make the online encoders differ from their copies
        for parameter in model.text_encoder.parameters():
            parameter.add_(0.01)
    online_text = copy.deepcopy(model.text_encoder)
    key_text = copy.deepcopy(model.text_momentum.module)
    batch = _batch(tokenizer)
    first = model(**batch)
    # the copy moved halfway to the online encoder before it encoded the keys
    with torch.no_grad():
        for (_, key), (_, online) in zip(
            key_text.named_parameters(), online_text.named_parameters(), strict=True
        ):
            key.mul_(0.5).add_(0.5 * online)
        expected_keys = key_text(batch["token_ids"])
    torch.testing.assert_close(first.text_keys, expected_keys)
    assert not first.text_keys.requires_grad and not first.image_keys.requires_grad
    assert first.text_queue.shape == (0, 32) and first.ssl_queue.shape == (0, 8)
    # after the step the queues hold this batch's keys; the next step reads them
    torch.testing.assert_close(model.text_queue.keys(), first.text_keys)
    second = model(**batch)
    torch.testing.assert_close(second.text_queue, first.text_keys)
    torch.testing.assert_close(second.ssl_queue, first.ssl_keys)
    assert len(model.image_queue) == 6  # 4 + 4 keys in a queue of 6
    state = model.state_dict()
    assert {
        "ssl_queue.features",
        "image_queue.pointer",
        "text_momentum.module.encoder.ln_final.weight",
    } <= set(state)


def test_the_loss_trains_the_query_encoders_only() -> None:
    clip_model, tokenizer = tiny_clip(image_size=(64, 32))
    model = VALPATModel(clip_model, num_attributes=6, queue_size=8, ssl_dim=8)
    loss_fn = VALPATLoss()
    model(**_batch(tokenizer))  # fill the queues a little
    output = loss_fn(model(**_batch(tokenizer)))
    output.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("momentum" not in name for name in trainable)
    assert [n for n in trainable if dict(model.named_parameters())[n].grad is None] == []
    assert loss_fn.cross_modal.temperature.log_scale.grad is not None


def test_evaluation_embeddings_and_attribute_logits() -> None:
    clip_model, tokenizer = tiny_clip(image_size=(64, 32))
    model = VALPATModel(clip_model, num_attributes=6, queue_size=8, ssl_dim=8).eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        embeddings = model.encode_image(images)
        torch.testing.assert_close(embeddings, clip_model.encode_image(images))
        token_ids = tokenizer(["a person", "a bag"])
        torch.testing.assert_close(model.encode_text(token_ids), clip_model.encode_text(token_ids))
        torch.testing.assert_close(model.attribute_logits(images), model.attributes(embeddings))
