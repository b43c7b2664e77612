"""RandomIdentitySampler: P×K structure, exact length, seeding, epochs and ranks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from reidkit.data import RandomIdentitySampler


def _records(images_per_pid: dict[int, int]) -> list[tuple[str, int, int]]:
    return [
        (f"{pid}_{i}.jpg", pid, i % 3)
        for pid, count in images_per_pid.items()
        for i in range(count)
    ]


UNEVEN = {pid: count for pid, count in enumerate([1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 4, 4, 6, 2])}


def _batches(sampler: RandomIdentitySampler) -> list[list[int]]:
    indices = list(sampler)
    size = sampler.batch_size
    return [indices[start : start + size] for start in range(0, len(indices), size)]


@pytest.mark.parametrize(("batch_size", "num_instances"), [(8, 4), (12, 2), (5, 1), (9, 3)])
def test_batches_hold_p_distinct_identities_times_k(batch_size: int, num_instances: int) -> None:
    records = _records(UNEVEN)
    sampler = RandomIdentitySampler(records, batch_size, num_instances, seed=1)
    indices = list(sampler)
    assert len(indices) == len(sampler)
    expected_chunks = sum(max(1, n // num_instances) for n in UNEVEN.values())
    assert len(sampler) == expected_chunks // (batch_size // num_instances) * batch_size
    for batch in _batches(sampler):
        pids = [records[i][1] for i in batch]
        blocks = [pids[s : s + num_instances] for s in range(0, batch_size, num_instances)]
        assert all(len(set(block)) == 1 for block in blocks)
        assert len({block[0] for block in blocks}) == batch_size // num_instances
        for block_start in range(0, batch_size, num_instances):
            block = batch[block_start : block_start + num_instances]
            owner = records[block[0]][1]
            if UNEVEN[owner] >= num_instances:  # enough images: no repeat within a chunk
                assert len(set(block)) == num_instances


def test_identities_with_few_images_are_sampled_with_replacement() -> None:
    records = _records({0: 1, 1: 2, 2: 1, 3: 3})
    sampler = RandomIdentitySampler(records, batch_size=8, num_instances=4)
    indices = list(sampler)
    assert len(sampler) == len(indices) == 16  # one chunk per identity, P = 2: two batches
    for batch in _batches(sampler):
        for start in (0, 4):
            assert len({records[i][1] for i in batch[start : start + 4]}) == 1
    # Every identity gives its one chunk; the single image of pid 0 fills all four places.
    assert Counter(records[i][1] for i in indices) == dict.fromkeys(range(4), 4)
    assert Counter(indices)[0] == 4


def test_an_epoch_uses_each_image_at_most_once_when_chunks_divide_evenly() -> None:
    records = _records(dict.fromkeys(range(12), 4))
    sampler = RandomIdentitySampler(records, batch_size=8, num_instances=2)
    indices = list(sampler)
    assert sorted(indices) == list(range(len(records)))


def test_seed_and_epoch_control_the_order() -> None:
    records = _records(UNEVEN)
    first = RandomIdentitySampler(records, 8, 2, seed=5)
    same = RandomIdentitySampler(records, 8, 2, seed=5)
    other = RandomIdentitySampler(records, 8, 2, seed=6)
    assert list(first) == list(same) == list(first)
    assert list(first) != list(other)
    epoch_zero = list(first)
    first.set_epoch(1)
    assert list(first) != epoch_zero
    first.set_epoch(0)
    assert list(first) == epoch_zero


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_ranks_get_disjoint_identities_and_equal_lengths(num_replicas: int) -> None:
    records = _records(UNEVEN)
    for epoch in range(3):
        samplers = [
            RandomIdentitySampler(records, 4, 2, seed=2, num_replicas=num_replicas, rank=rank)
            for rank in range(num_replicas)
        ]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        pid_sets = [{records[i][1] for i in sampler} for sampler in samplers]
        assert len({len(list(sampler)) for sampler in samplers}) == 1
        assert len({len(sampler) for sampler in samplers}) == 1
        for rank, pids in enumerate(pid_sets):
            others = set().union(*(p for r, p in enumerate(pid_sets) if r != rank))
            assert not pids & others
        assert set().union(*pid_sets) <= set(UNEVEN)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_size=6, num_instances=4), "batch_size=6, num_instances=4"),
        (dict(batch_size=4, num_instances=0), "num_instances=0"),
        (dict(batch_size=4, num_instances=2, rank=2, num_replicas=2), "rank=2"),
        (dict(batch_size=4, num_instances=2, seed=-1), "seed=-1"),
        (dict(batch_size=32, num_instances=2), "fewer than P"),
        (dict(batch_size=4, num_instances=2, num_replicas=8, rank=0), "8 rank"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomIdentitySampler(_records(UNEVEN), **kwargs)
    with pytest.raises(ValueError, match="epoch=-1"):
        RandomIdentitySampler(_records(UNEVEN), 4, 2).set_epoch(-1)


def test_accepts_an_object_with_records() -> None:
    class Split:
        records = _records(UNEVEN)

    assert list(RandomIdentitySampler(Split(), 4, 2)) == list(
        RandomIdentitySampler(Split.records, 4, 2)
    )


def _rank_worker(rank: int, world_size: int, init_file: str, queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        sampler = RandomIdentitySampler(_records(UNEVEN), 4, 2, seed=3)
        queue.put((rank, sampler.rank, sampler.num_replicas, list(sampler)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_rank_and_world_size_come_from_torch_distributed(tmp_path) -> None:
    context = mp.get_context("spawn")
    queue = context.Queue()
    world_size = 2
    processes = [
        context.Process(target=_rank_worker, args=(r, world_size, str(tmp_path / "init"), queue))
        for r in range(world_size)
    ]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    for rank, (reported_rank, sampler_rank, sampler_world, indices) in enumerate(results):
        expected = RandomIdentitySampler(_records(UNEVEN), 4, 2, seed=3, num_replicas=2, rank=rank)
        assert (reported_rank, sampler_rank, sampler_world) == (rank, rank, world_size)
        assert indices == list(expected)
