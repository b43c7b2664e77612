"""extract_features with a tiny model: flip averaging, normalisation, labels, bad input."""

from __future__ import annotations

import pytest
import torch

from reidkit.retrieval import extract_features
from tests.retrieval.tiny_model import TinyModel, tiny_loader


def test_extract_features_flip_average_and_normalisation() -> None:
    model = TinyModel().train()
    loader = tiny_loader()
    result = extract_features(model, loader, flip=True, normalize=True, progress=False)
    images = torch.cat([batch[0] for batch in loader])
    expected = (model(images) + model(images.flip(-1))) / 2
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(result.features, expected.float())
    assert result.pids.tolist() == [0, 1, 10, 11, 12, 20, 21, 22, 23]
    assert result.camids.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert result.paths[2] == "img_1_0.jpg" and len(result.paths) == 9
    assert model.training  # mode restored
    features, _, _, paths = extract_features(model, tiny_loader(False), flip=False, progress=False)
    torch.testing.assert_close(features, model(images).detach().float())
    assert paths == [""] * 9


def test_extract_features_rejects_bad_batches_and_outputs() -> None:
    with pytest.raises(ValueError, match=r"\(images, pids, camids\[, paths\]\)"):
        extract_features(TinyModel(), [torch.zeros(2, 3, 4, 6)], progress=False)
    with pytest.raises(ValueError, match=r"model must return \(B, D\) features"):
        extract_features(lambda x: x, tiny_loader(), progress=False)
