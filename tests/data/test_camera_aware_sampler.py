"""CameraAwareIdentitySampler: the P x K structure of its parent, and every identity's images
spread evenly over its cameras within the epoch's chunks."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reidkit.data import CameraAwareIdentitySampler, RandomIdentitySampler, make_train_loader


@st.composite
def identities(draw) -> list[tuple[str, int, int]]:
    """Records of 4-9 identities, each with 1-14 images over 1-4 cameras, unevenly."""
    records = []
    for pid in range(draw(st.integers(4, 9))):
        cameras = draw(st.lists(st.integers(0, 5), min_size=1, max_size=14))
        records += [(f"{pid}_{i}.jpg", pid, camid) for i, camid in enumerate(cameras)]
    return records


def _chunks(sampler: RandomIdentitySampler) -> list[list[int]]:
    indices = list(sampler)
    k = sampler.num_instances
    return [indices[start : start + k] for start in range(0, len(indices), k)]


@given(records=identities(), num_instances=st.integers(2, 4), epoch=st.integers(0, 3))
def test_each_chunk_spreads_its_identity_over_the_cameras(records, num_instances, epoch) -> None:
    sampler = CameraAwareIdentitySampler(records, 2 * num_instances, num_instances, seed=epoch)
    sampler.set_epoch(epoch)
    images = Counter(pid for _, pid, _ in records)
    per_camera = Counter((pid, camid) for _, pid, camid in records)
    for chunk in _chunks(sampler):
        pid = records[chunk[0]][1]
        assert {records[i][1] for i in chunk} == {pid}
        if images[pid] < num_instances:  # all its images, topped up with replacement
            assert set(chunk) == {i for i, record in enumerate(records) if record[1] == pid}
            continue
        assert len(set(chunk)) == num_instances  # no image twice in a chunk
        num_chunks = images[pid] // num_instances
        seen = Counter(records[i][2] for i in chunk)
        for camid, count in seen.items():
            # A camera of m images has at most ceil(m / c) of them in each of the c chunks.
            assert count <= math.ceil(per_camera[pid, camid] / num_chunks)
        if images[pid] % num_instances == 0:  # every image used: at least floor(m / c) too
            for (owner, camid), total in per_camera.items():
                if owner == pid:
                    assert seen[camid] >= total // num_chunks


def test_cameras_are_distinct_when_each_has_no_more_images_than_chunks() -> None:
    # Every identity: 8 images, 2 per camera over 4 cameras; K = 4 gives 2 chunks each.
    records = [(f"{pid}_{i}.jpg", pid, i % 4) for pid in range(6) for i in range(8)]
    sampler = CameraAwareIdentitySampler(records, batch_size=8, num_instances=4, seed=3)
    chunks = _chunks(sampler)
    assert chunks and all(len({records[i][2] for i in chunk}) == 4 for chunk in chunks)
    # The plain sampler does not guarantee it: some chunk of some epoch repeats a camera.
    plain = RandomIdentitySampler(records, batch_size=8, num_instances=4, seed=3)
    repeats = 0
    for epoch in range(5):
        plain.set_epoch(epoch)
        repeats += sum(len({records[i][2] for i in chunk}) < 4 for chunk in _chunks(plain))
    assert repeats > 0


def test_same_batches_as_its_parent_identity_by_identity() -> None:
    records = [(f"{pid}_{i}.jpg", pid, i % 3) for pid in range(7) for i in range(4 + pid)]
    aware = CameraAwareIdentitySampler(records, batch_size=8, num_instances=2, seed=5)
    plain = RandomIdentitySampler(records, batch_size=8, num_instances=2, seed=5)
    assert len(aware) == len(plain) and aware.num_batches == plain.num_batches
    with pytest.raises(ValueError, match="fewer than P"):
        CameraAwareIdentitySampler(records[:4], batch_size=8, num_instances=2)


def test_the_train_loader_takes_the_camera_aware_sampler() -> None:
    records = [(f"{pid}_{i}.jpg", pid, i % 2) for pid in range(4) for i in range(4)]
    loader = make_train_loader(records, lambda image: image, 4, 2, camera_aware=True)
    assert isinstance(loader.sampler.identity_sampler, CameraAwareIdentitySampler)
    loader = make_train_loader(records, lambda image: image, 4, 2)
    assert type(loader.sampler.identity_sampler) is RandomIdentitySampler
