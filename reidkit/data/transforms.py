"""Image transforms for ReID training and testing (torchvision)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image, ImageFilter
from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel RGB mean of CLIP's pre-training images."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB standard deviation of CLIP's pre-training images."""


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size={tuple(size)!r}; expected (height, width), both >= 1")
    return int(size[0]), int(size[1])


def _normalize(mean: Sequence[float] | None, std: Sequence[float] | None) -> T.Normalize:
    return T.Normalize(CLIP_MEAN if mean is None else mean, CLIP_STD if std is None else std)


def build_train_transforms(
    size: Sequence[int] = (256, 128),
    *,
    flip_probability: float = 0.5,
    padding: int = 10,
    erasing_probability: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> T.Compose:
    """The usual ReID training augmentation (as in TransReID and CLIP-ReID).

    Resize to ``size`` (bicubic), horizontal flip, pad ``padding`` pixels and randomly crop
    back to ``size``, convert to a tensor, normalise with ``mean``/``std`` and randomly erase a
    rectangle (filled with random values, Zhong et al., AAAI 2020).

    Args:
        size: output ``(height, width)``.
        flip_probability: probability of a horizontal flip.
        padding: zero padding before the random crop; 0 disables the crop.
        erasing_probability: probability of random erasing; 0 disables it.
        mean, std: per-channel normalisation; ``None`` gives CLIP's (:data:`CLIP_MEAN`,
            :data:`CLIP_STD`).

    Returns:
        A transform from an RGB ``PIL.Image`` to a ``(3, height, width)`` float tensor.

    Raises:
        ValueError: a probability outside ``[0, 1]``, a negative padding or a bad ``size``.
    """
    height, width = _check_size(size)
    for name, value in (
        ("flip_probability", flip_probability),
        ("erasing_probability", erasing_probability),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value}; expected a probability in [0, 1]")
    if padding < 0:
        raise ValueError(f"padding={padding}; expected >= 0")
    steps: list[Callable[..., Any]] = [
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(flip_probability),
    ]
    if padding > 0:
        steps += [T.Pad(padding), T.RandomCrop((height, width))]
    steps += [T.ToTensor(), _normalize(mean, std)]
    if erasing_probability > 0:
        steps.append(T.RandomErasing(p=erasing_probability, value="random"))
    return T.Compose(steps)


def build_test_transforms(
    size: Sequence[int] = (256, 128),
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> T.Compose:
    """Resize to ``size`` (bicubic), convert to a tensor and normalise.

    Args:
        size: output ``(height, width)``.
        mean, std: per-channel normalisation; ``None`` gives CLIP's.

    Returns:
        A transform from an RGB ``PIL.Image`` to a ``(3, height, width)`` float tensor.
    """
    height, width = _check_size(size)
    return T.Compose(
        [
            T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


class RandomGaussianBlur:
    """PIL's Gaussian blur with a radius drawn uniformly from ``sigma`` (Python's generator,
    which the training loaders seed per item), as MoCo v2 blurs."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        if not 0 < sigma[0] <= sigma[1]:
            raise ValueError(f"sigma={sigma!r}; expected (low, high) with 0 < low <= high")
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def build_contrastive_transforms(
    size: Sequence[int] = (256, 128),
    *,
    min_scale: float = 0.2,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> T.Compose:
    """The strong augmentation of MoCo v2, used for person images by LUPerson's pre-training
    and by VAL-PAT's self-supervised branch (eq. 1).

    A random resized crop covering ``[min_scale, 1]`` of the image (aspect ratio of the
    output kept within 3/4 to 4/3 of it), colour jitter (brightness, contrast, saturation
    0.4, hue 0.1) with probability 0.8, grey scale with probability 0.2, a Gaussian blur
    (PIL's, radius drawn from ``[0.1, 2]``, as MoCo v2's) with probability 0.5, a horizontal
    flip, normalisation.

    Args:
        size: output ``(height, width)``.
        min_scale: the smallest share of the image a crop covers, in ``(0, 1]``.
        mean, std: per-channel normalisation; ``None`` gives CLIP's.

    Returns:
        A transform from an RGB ``PIL.Image`` to a ``(3, height, width)`` float tensor.
    """
    height, width = _check_size(size)
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale={min_scale}; expected a number in (0, 1]")
    ratio = width / height
    return T.Compose(
        [
            T.RandomResizedCrop(
                (height, width),
                scale=(min_scale, 1.0),
                ratio=(0.75 * ratio, ratio / 0.75),
                interpolation=T.InterpolationMode.BICUBIC,
            ),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([RandomGaussianBlur((0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )
