"""Loaders of image-text pairs for text-to-image training, and the tokenisation they need.

:class:`ImageTextDataset` turns captioned images (:class:`~reidkit.data.CaptionedImage`) into
training items, each a dict::

    {"images": (3, H, W) tensor, or a list of them (one per transform: several views),
     "tokens": (L,) token ids of one caption,
     "pid": identity, "image_index": the image's position in the records,
     "attributes": (M,) float labels (when given)}

either one item per caption (``captions="each"``: the usual fine-tuning epoch over every
(image, caption) pair) or one item per image with one of its captions drawn at random
(``captions="random"``: a pre-training epoch, where two captions of one image in a batch
would be each other's false negatives in a contrastive loss).

:func:`make_image_text_loader` shuffles the items (a
:class:`~torch.utils.data.distributed.DistributedSampler`, which shards them under
``torch.distributed``) and seeds each item's augmentation and caption draw from ``(seed,
epoch, rank, position)``, as :func:`~reidkit.data.make_train_loader` does, so the batches are
the same for any number of loader workers and after a resume.

CLIP's text tower has a fixed number of positions (77 for the released models); a caption
tokenised longer is cut and its last token made the end of text (open_clip's tokenizer).
:func:`count_truncated` says how many captions that affects.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from reidkit import checks
from reidkit.data.image_dataset import ReIDImageDataset
from reidkit.data.loaders import _AUGMENTATION_STREAM, Transform, _SeededItems
from reidkit.data.text_splits import CaptionedImage
from reidkit.distributed import get_rank, get_world_size

Tokenize = Callable[[Sequence[str]], Tensor]
"""Texts to ``(T, L)`` token ids (an open_clip tokenizer, with its context length)."""

CAPTION_MODES = ("each", "random")
"""One item per caption, or one per image with a caption drawn per epoch."""


class ImageTextDataset(Dataset[dict[str, Any]]):
    """Items of captioned images: views of the image, one caption's tokens, the labels.

    Args:
        records: the captioned images.
        transforms: one transform (``"images"`` is a tensor) or several (a list of views).
        tokenize: texts to token ids, e.g. ``partial(tokenizer, context_length=77)``.
        captions: ``"each"`` (one item per caption) or ``"random"`` (one per image, a caption
            drawn with Python's generator: seeded per item by :func:`make_image_text_loader`).
        attribute_labels: ``(len(records), M)`` labels of the images, or ``None``.
    """

    def __init__(
        self,
        records: Sequence[CaptionedImage],
        transforms: Transform | Sequence[Transform],
        tokenize: Tokenize,
        captions: str = "each",
        attribute_labels: np.ndarray | Tensor | None = None,
    ) -> None:
        checks.check_choice("captions", captions, CAPTION_MODES)
        if not records:
            raise ValueError("records is empty; expected at least one captioned image")
        if any(not record.captions for record in records):
            raise ValueError("records must give every image at least one caption")
        self.records = list(records)
        self.images = ReIDImageDataset([(r.path, r.pid, r.camid) for r in self.records])
        self.views: list[Transform] | None = None if callable(transforms) else list(transforms)
        self.transforms = [cast(Transform, transforms)] if self.views is None else self.views
        self.tokenize = tokenize
        self.captions = captions
        self.items = (
            [(index, caption) for index, r in enumerate(self.records) for caption in r.captions]
            if captions == "each"
            else [(index, None) for index in range(len(self.records))]
        )
        self.attribute_labels: Tensor | None = None
        if attribute_labels is not None:
            labels = torch.as_tensor(np.asarray(attribute_labels), dtype=torch.float32)
            if labels.dim() != 2 or labels.shape[0] != len(self.records):
                raise ValueError(
                    f"attribute_labels must have shape ({len(self.records)}, M), got "
                    f"{tuple(labels.shape)}"
                )
            self.attribute_labels = labels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_index, caption = self.items[index]
        record = self.records[image_index]
        if caption is None:
            caption = record.captions[random.randrange(len(record.captions))]
        image = self.images[image_index][0]
        views = [transform(image) for transform in self.transforms]
        item: dict[str, Any] = {
            "images": views[0] if self.views is None else views,
            "tokens": self.tokenize([caption])[0],
            "pid": record.pid,
            "image_index": image_index,
        }
        if self.attribute_labels is not None:
            item["attributes"] = self.attribute_labels[image_index]
        return item


class _ShuffleWithSeeds(Sampler[tuple[int, int]]):
    """A distributed shuffle of the items, each index with its augmentation seed."""

    def __init__(self, dataset: Dataset[Any], seed: int, drop_last: bool) -> None:
        self.seed = seed
        self.shuffle: DistributedSampler[int] = DistributedSampler(
            dataset, get_world_size(), get_rank(), shuffle=True, seed=seed, drop_last=drop_last
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the order and of the seeds."""
        self.shuffle.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.shuffle)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        shuffle = self.shuffle
        seeds = np.random.default_rng(
            [self.seed, shuffle.epoch, shuffle.rank, _AUGMENTATION_STREAM]
        )
        for index in shuffle:
            yield index, int(seeds.integers(2**63))


def make_image_text_loader(
    dataset: ImageTextDataset,
    batch_size: int,
    *,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = True,
) -> DataLoader[dict[str, Any]]:
    """A shuffling loader of ``dataset``'s items in batches of dicts (see the module).

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch (as
    :meth:`~reidkit.engine.TrainingRun.fit` does): the order, every item's augmentation and
    its drawn caption follow ``(seed, epoch, rank, position)``. Under ``torch.distributed``
    each rank reads its own share of the items.

    Args:
        dataset: the items.
        batch_size: items per batch on this process.
        seed: the seed of the order, the augmentation and the caption draws.
        num_workers: loader processes.
        pin_memory: pin batches in page-locked memory.
        drop_last: drop the last, incomplete batch (contrastive and ranking losses want full
            ones).
    """
    checks.check_integer("batch_size", batch_size, 1)
    if drop_last and len(dataset) // get_world_size() < batch_size:
        raise ValueError(
            f"batch_size must be at most the {len(dataset) // get_world_size()} items of each "
            f"of the {get_world_size()} processes, got {batch_size}"
        )
    return DataLoader(
        _SeededItems(dataset),
        batch_size=batch_size,
        sampler=_ShuffleWithSeeds(dataset, seed, drop_last),
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )


def count_truncated(captions: Sequence[str], tokenizer: Any, context_length: int) -> int:
    """How many ``captions`` need more than ``context_length`` tokens (start and end of text
    included), and are therefore cut by the tokenizer.

    Args:
        captions: the texts.
        tokenizer: an open_clip tokenizer with ``encode`` (the BPE ids without start and end),
            e.g. ``open_clip.SimpleTokenizer``.
        context_length: the positions of the text tower (77 for CLIP).
    """
    encode = getattr(tokenizer, "encode", None)
    if not callable(encode):
        raise ValueError(f"tokenizer must have an encode method, got {type(tokenizer).__name__}")
    return sum(len(encode(caption)) + 2 > context_length for caption in captions)
