"""ReIDImageDataset, the train and test loaders and build_dataset."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from reidkit.data import (
    Market1501,
    ReIDImageDataset,
    SyntheticReID,
    build_dataset,
    build_test_transforms,
    build_train_transforms,
    make_test_loader,
    make_train_loader,
)
from tests.data.helpers import write_market_layout


def test_image_dataset_items(synthetic: SyntheticReID) -> None:
    dataset = ReIDImageDataset(synthetic.query, build_test_transforms((64, 32)))
    image, pid, camid, path = dataset[3]
    assert image.shape == (3, 64, 32)
    assert (path, pid, camid) == synthetic.query[3]
    assert dataset.pids == [pid for _, pid, _ in synthetic.query]
    assert dataset.camids == [camid for _, _, camid in synthetic.query]
    assert ReIDImageDataset(synthetic.query)[0][0].mode == "RGB"
    with pytest.raises(ValueError, match="records is empty"):
        ReIDImageDataset([])
    with pytest.raises(ValueError, match="not a"):
        ReIDImageDataset([("a.jpg", 1)])


def test_train_loader_yields_pk_batches(synthetic: SyntheticReID) -> None:
    loader = make_train_loader(
        synthetic.train, build_train_transforms((64, 32)), batch_size=8, num_instances=4, seed=1
    )
    assert len(loader) == len(loader.sampler) // 8
    images, pids, camids, _ = next(iter(loader))
    assert images.shape == (8, 3, 64, 32)
    assert pids.dtype == torch.int64 and camids.shape == (8,)
    assert torch.equal(pids[:4], pids[:1].expand(4)) and torch.equal(pids[4:], pids[4:5].expand(4))
    assert pids[0] != pids[4]
    assert all(0 <= int(p) < synthetic.num_train_pids for p in pids)
    loader.sampler.set_epoch(1)
    assert loader.sampler.epoch == 1


def test_test_loader_is_query_then_gallery(synthetic: SyntheticReID) -> None:
    loader = make_test_loader(
        synthetic.query, synthetic.gallery, build_test_transforms((32, 16)), batch_size=64
    )
    paths = [path for batch in loader for path in batch[3]]
    assert paths == [path for path, _, _ in synthetic.query + synthetic.gallery]


def test_build_dataset(tmp_path: Path, synthetic_cache: Path) -> None:
    names = ["0001_c1s1_000001_01.jpg", "0002_c2s1_000002_01.jpg"]
    write_market_layout(tmp_path, names, names, names)
    market = build_dataset("Market1501", tmp_path)
    assert isinstance(market, Market1501) and market.train == Market1501(tmp_path).train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        synthetic = build_dataset("synthetic", synthetic_cache)
    assert isinstance(synthetic, SyntheticReID)
    with pytest.raises(ValueError, match="name='viper'"):
        build_dataset("viper", tmp_path)


def test_build_dataset_without_root_falls_back_to_synthetic(
    monkeypatch: pytest.MonkeyPatch, synthetic_cache: Path
) -> None:
    monkeypatch.setenv("REIDKIT_CACHE", str(synthetic_cache))
    with pytest.warns(UserWarning, match="no data root given for 'market1501'"):
        data = build_dataset("market1501")
    assert isinstance(data, SyntheticReID)
    assert data.root.parent == synthetic_cache
