"""The [PART] attention maps of Fig. 5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from reidkit.parts import render_part_maps, save_part_assignment_maps


def _maps() -> torch.Tensor:
    maps = torch.zeros(2, 2, 4, 2)  # 2 images, 2 [PART]s, a 4 x 2 grid
    maps[:, 0, :2] = torch.tensor([0.1, 0.4])  # [PART] 0: the upper half, two weights
    maps[:, 1, 2:] = 0.25  # [PART] 1: the lower half, uniform
    return maps


def test_unassigned_patches_are_black_and_weights_ordered() -> None:
    images = torch.rand(2, 3, 64, 32)
    panels = render_part_maps(images, _maps(), alpha=1.0)
    assert panels.shape == (2, 3, 64, 32, 3)
    np.testing.assert_allclose(panels[:, 0], images.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert np.all(panels[:, 1, 32:] == 0) and np.all(panels[:, 2, :32] == 0)
    assert np.all(panels[:, 1, :32].sum(-1) > 0)
    # Under the jet colour map the largest weight is red and a small one bluer.
    strong, weak = panels[0, 1, 0, 20], panels[0, 1, 0, 5]
    assert strong[0] > strong[2] and weak[2] > weak[0]


def test_normalisation_is_undone() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    images = torch.rand(2, 3, 64, 32)
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    panels = render_part_maps(normalised, _maps(), mean=mean, std=std)
    np.testing.assert_allclose(panels[:, 0], images.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_save_writes_a_png(tmp_path) -> None:
    path = save_part_assignment_maps(torch.rand(2, 3, 64, 32), _maps(), tmp_path / "a" / "m.png")
    picture = imread(path)[..., :3]
    assert picture.ndim == 3 and picture.shape[0] > picture.shape[1]  # two rows of tall panels
    assert (picture.sum(-1) == 0).mean() > 0.05  # the masked patches are black
    assert (picture.max(-1) - picture.min(-1) > 0.5).any()  # and the maps coloured


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="images"):
        render_part_maps(torch.rand(2, 1, 64, 32), _maps())
    with pytest.raises(ValueError, match="maps"):
        render_part_maps(torch.rand(3, 3, 64, 32), _maps())
