"""A tiny feature model and loader for the feature-extraction and evaluator tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyModel(nn.Module):
    """Features that change under a horizontal flip: row means of the left half and a weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3 * 4 * 6, 5, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


def tiny_loader(with_paths: bool = True) -> list[tuple]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for b in range(3):
        images = torch.rand(2 + b, 3, 4, 6, generator=generator, dtype=torch.float64)
        pids, camids = torch.arange(2 + b) + 10 * b, torch.full((2 + b,), b)
        paths = [f"img_{b}_{i}.jpg" for i in range(2 + b)]
        batches.append((images, pids, camids, paths) if with_paths else (images, pids, camids))
    return batches
