"""Image-text items and their loader: per caption or per image, several views, seeded draws
that do not depend on the loader processes; the count of truncated captions."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import open_clip
import pytest
import torch
from torchvision import transforms as T

from reidkit.data import CaptionedImage
from reidkit.data.text_loaders import ImageTextDataset, count_truncated, make_image_text_loader
from tests.data.helpers import write_images

TOKENIZER = open_clip.SimpleTokenizer()
TOKENIZE = partial(TOKENIZER, context_length=16)


def _records(tmp_path: Path, count: int = 6) -> list[CaptionedImage]:
    names = [f"{i}.png" for i in range(count)]
    write_images(tmp_path, names)
    return [
        CaptionedImage(str(tmp_path / name), i // 2, -1, (f"person {i} text a", f"text b {i}"))
        for i, name in enumerate(names)
    ]


def test_one_item_per_caption_with_tokens_labels_and_views(tmp_path: Path) -> None:
    records = _records(tmp_path)
    labels = torch.eye(6)[:, :4]
    views = [T.Compose([T.Resize((8, 4)), T.ToTensor()]), T.Compose([T.ToTensor()])]
    dataset = ImageTextDataset(records, views, TOKENIZE, attribute_labels=labels)
    assert len(dataset) == 12
    item = dataset[3]  # image 1, its second caption
    assert [tuple(v.shape) for v in item["images"]] == [(3, 8, 4), (3, 16, 8)]
    assert torch.equal(item["tokens"], TOKENIZE(["text b 1"])[0])
    assert (item["pid"], item["image_index"]) == (0, 1)
    assert torch.equal(item["attributes"], labels[1])
    single = ImageTextDataset(records, views[1], TOKENIZE)
    assert isinstance(single[0]["images"], torch.Tensor) and "attributes" not in single[0]


def test_the_loader_is_the_same_for_any_workers_and_draws_a_caption_per_epoch(
    tmp_path: Path,
) -> None:
    records = _records(tmp_path)
    augment = T.Compose([T.RandomResizedCrop((8, 4)), T.ToTensor()])
    dataset = ImageTextDataset(records, augment, TOKENIZE, captions="random")
    assert len(dataset) == 6

    def epochs(workers: int) -> list[list[dict]]:
        loader = make_image_text_loader(dataset, 4, seed=3, num_workers=workers)
        result = []
        for epoch in range(3):
            loader.sampler.set_epoch(epoch)
            result.append(list(loader))
        return result

    serial, parallel = epochs(0), epochs(2)
    for first, second in zip(serial, parallel, strict=True):
        assert len(first) == 1  # 6 items, batches of 4, the last dropped
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a["images"], b["images"]) and torch.equal(a["tokens"], b["tokens"])
    orders = [tuple(batch["image_index"].tolist()) for epoch in serial for batch in epoch]
    assert len(set(orders)) > 1  # the order changes with the epoch
    # over many epochs both captions of an image are drawn
    loader = make_image_text_loader(dataset, 6, seed=0)
    drawn = set()
    for epoch in range(12):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            drawn |= {
                (int(i), tuple(t.tolist())) for i, t in zip(batch["image_index"], batch["tokens"])
            }
    assert len(drawn) == 12


def test_bad_input_is_named(tmp_path: Path) -> None:
    records = _records(tmp_path, 2)
    with pytest.raises(ValueError, match="captions must be one of"):
        ImageTextDataset(records, T.ToTensor(), TOKENIZE, captions="all")
    with pytest.raises(ValueError, match=r"attribute_labels must have shape \(2, M\)"):
        ImageTextDataset(records, T.ToTensor(), TOKENIZE, attribute_labels=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="every image at least one caption"):
        ImageTextDataset([records[0]._replace(captions=())], T.ToTensor(), TOKENIZE)
    dataset = ImageTextDataset(records, T.ToTensor(), TOKENIZE)
    with pytest.raises(ValueError, match="batch_size must be at most the 4 items"):
        make_image_text_loader(dataset, 5)


def test_truncated_captions_are_counted_with_start_and_end_tokens() -> None:
    captions = ["a b c", "one two three four five six seven eight nine ten eleven twelve thirteen"]
    lengths = [len(TOKENIZER.encode(c)) + 2 for c in captions]
    assert lengths == [5, 15]
    assert count_truncated(captions, TOKENIZER, 16) == 0
    assert count_truncated(captions, TOKENIZER, 15) == 0
    assert count_truncated(captions, TOKENIZER, 14) == 1
    assert count_truncated(captions, TOKENIZER, 4) == 2
    # the tokenizer then keeps the end of text in the last position
    cut = TOKENIZER(captions[1:], context_length=14)[0]
    assert int(cut[-1]) == TOKENIZER.eot_token_id
