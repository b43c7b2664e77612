"""evaluate_t2i_model: a model's embeddings of the protocol's images and captions, ranked by
cosine similarity, give evaluate_t2i of the similarities computed by hand."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from torch import nn

from reidkit import evaluate_t2i
from reidkit.data import CaptionedImage, TextToImageProtocol, build_test_transforms
from reidkit.eval import evaluate_t2i_model


def test_the_model_evaluation_is_evaluate_t2i_of_cosine_similarities(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(path)
        records.append(CaptionedImage(str(path), index % 3, -1, (f"caption {index}", f"x {index}")))
    protocol = TextToImageProtocol.from_records(records)
    transform = build_test_transforms((16, 8))
    tokenize = partial(open_clip.SimpleTokenizer(), context_length=8)
    torch.manual_seed(0)
    table = nn.Embedding(49408, 3)

    def encode_image(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return table(tokens).mean(dim=1)

    result = evaluate_t2i_model(
        encode_image, encode_text, protocol, transform, tokenize, batch_size=3
    )
    with torch.no_grad():
        images = torch.stack(
            [encode_image(transform(Image.open(r.path))[None])[0] for r in records]
        )
        texts = encode_text(tokenize(protocol.captions))
    similarity = (
        torch.nn.functional.normalize(texts, dim=1) @ torch.nn.functional.normalize(images, dim=1).T
    )
    expected = evaluate_t2i(similarity, protocol.query_pids, protocol.gallery_pids)
    assert result.mAP == expected.mAP and result.mINP == expected.mINP
    np.testing.assert_array_equal(result.cmc, expected.cmc)
    assert result.num_valid_queries == 10
