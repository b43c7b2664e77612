"""Feature extraction over a ReID data loader, with flip averaging and a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler, Subset

from reidkit.distributed import (
    all_gather,
    all_gather_object,
    get_rank,
    get_world_size,
    raise_on_every_rank,
)
from reidkit.engine.progress import progress_bar


class ExtractedFeatures(NamedTuple):
    """What :func:`reidkit.extract_features` returns (unpacks as a 4-tuple).

    Attributes:
        features: ``(N, D)`` float32 features on the CPU.
        pids: ``(N,)`` int64 identities.
        camids: ``(N,)`` int64 camera ids.
        paths: ``N`` image paths (empty strings when the loader gives none).
    """

    features: Tensor
    pids: Tensor
    camids: Tensor
    paths: list[str]


@torch.no_grad()
def extract_features(
    model: nn.Module | Callable[[Tensor], Tensor],
    loader: Iterable[Sequence[Any]],
    flip: bool = True,
    device: torch.device | str | None = None,
    *,
    normalize: bool = False,
    desc: str = "Extracting features",
    progress: bool = True,
    shard: bool = False,
) -> ExtractedFeatures:
    """Run ``model`` over ``loader`` in inference mode and collect features and labels.

    With ``flip``, the feature of an image is the mean of those of the image and of its
    horizontal mirror, ``f = (model(x) + model(flip(x))) / 2``; with ``normalize`` it is then
    L2-normalised, ``f / ||f||``.

    Args:
        model: maps a ``(B, 3, H, W)`` image batch to ``(B, D)`` features (an ``nn.Module`` is
            put in eval mode for the call and restored afterwards). Wrap models that need more
            inputs, e.g. ``lambda x: net(x, cam_label=...)``.
        loader: yields ``(images, pids, camids, paths)`` or ``(images, pids, camids)`` batches,
            as a ``DataLoader`` over :class:`reidkit.ReIDImageDataset` does.
        flip: average with the horizontally flipped images.
        device: where to run ``model`` (default: the device of its first parameter, or CPU).
        normalize: L2-normalise the features.
        desc: progress bar label; ``progress=False`` hides the bar (see
            :func:`reidkit.engine.progress_bar` for when bars are drawn).
        shard: under ``torchrun`` (a collective: every rank calls it), each rank runs
            ``model`` over its own contiguous share of the data set of ``loader`` (a
            ``DataLoader`` that reads it in order, :func:`shard_loader`), and the shares are
            gathered once, in order: every rank returns the features of the whole loader. An
            error on any rank is raised on every rank. Alone, it changes nothing.

    Returns:
        :class:`ExtractedFeatures` ``(features, pids, camids, paths)``.
    """
    if shard and get_world_size() > 1:
        with raise_on_every_rank():
            share = extract_features(
                model,
                shard_loader(loader),
                flip,
                device,
                normalize=normalize,
                desc=desc,
                progress=progress,
            )
        paths = [path for part in all_gather_object(share.paths) for path in part]
        return ExtractedFeatures(
            all_gather(share.features), all_gather(share.pids), all_gather(share.camids), paths
        )
    if device is None:
        first = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        device = first.device if first is not None else torch.device("cpu")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    features, pids, camids, paths = [], [], [], []
    try:
        batches = progress_bar(loader, desc=desc) if progress else loader
        for batch in batches:
            images, batch_pids, batch_camids, batch_paths = _unpack(batch)
            images = images.to(device)
            output = _embed(model, images)
            if flip:
                output = (output + _embed(model, images.flip(-1))) / 2
            if normalize:
                output = F.normalize(output, dim=1)
            features.append(output.float().cpu())
            pids.append(torch.as_tensor(batch_pids, dtype=torch.int64).reshape(-1))
            camids.append(torch.as_tensor(batch_camids, dtype=torch.int64).reshape(-1))
            paths.extend(batch_paths if batch_paths is not None else [""] * images.shape[0])
    finally:
        if was_training and isinstance(model, nn.Module):
            model.train()
    if not features:
        raise ValueError("loader yielded no batches")
    return ExtractedFeatures(torch.cat(features), torch.cat(pids), torch.cat(camids), paths)


def shard_loader(loader: Iterable[Sequence[Any]]) -> DataLoader[Any]:
    """This rank's contiguous share of the data set that ``loader`` reads in order: rank ``r``
    of ``W`` reads items ``[r N / W, (r + 1) N / W)`` with the loader's batch size, workers and
    collation, so that the shares concatenated in rank order are the loader's items.

    Raises:
        TypeError: ``loader`` is not a ``DataLoader`` that reads its data set in order.
        ValueError: the data set has fewer items than there are ranks.
    """
    if not isinstance(loader, DataLoader) or not isinstance(loader.sampler, SequentialSampler):
        raise TypeError(
            "loader must be a torch DataLoader that reads its data set in order (no sampler, "
            f"no shuffling) to be sharded over the ranks, got {type(loader).__name__}"
        )
    size, world_size, rank = len(cast(Sized, loader.dataset)), get_world_size(), get_rank()
    if size < world_size:
        raise ValueError(f"the loader's {size} items cannot be shared by {world_size} ranks")
    start, stop = rank * size // world_size, (rank + 1) * size // world_size
    return DataLoader(
        Subset(loader.dataset, range(start, stop)),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def _unpack(batch: Sequence[Any]) -> tuple[Tensor, object, object, list[str] | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (3, 4):
        raise ValueError(
            "loader must yield (images, pids, camids[, paths]) batches, got "
            f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}"
        )
    images = batch[0]
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    paths = list(batch[3]) if len(batch) == 4 else None
    return images, batch[1], batch[2], paths


def _embed(model: nn.Module | Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    output = model(images)
    if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != images.shape[0]:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"model must return (B, D) features for B = {images.shape[0]}, got {shape}"
        )
    return output
