"""A run under torchrun, on two gloo processes: an evaluation that fails on rank 0 fails every
rank (no hang), evaluation sharded over the ranks equals one process's, and synchronised
BatchNorm normalises with the statistics of the global batch."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reidkit import distributed
from reidkit.engine import EveryRankEvaluation, TrainingRun
from reidkit.eval import evaluate_model
from reidkit.retrieval import extract_features
from tests.gloo import WORLD_SIZE, join_group, run_on_ranks


def _failing_evaluation_worker(rank: int, port: int, directory: str) -> None:
    join_group(rank, port, timeout=20.0)  # a hang turns into gloo's timeout error after 20 s
    try:
        run = TrainingRun(f"{directory}/run", stages=["train"], tensorboard=False)

        def evaluate() -> dict[str, float]:
            raise RuntimeError("the test split is unreadable")

        message = "RuntimeError: the test split is unreadable (raised on rank 0 of 2)"
        with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
            run.evaluate("train", 1, evaluate)  # runs on rank 0 only

        def fails_on_rank_1() -> dict[str, float]:
            if distributed.get_rank() == 1:
                raise ValueError("rank 1 lost its shard")
            return {"mAP": 0.5}

        with pytest.raises(ValueError, match=r"^rank 1 lost its shard \(raised on rank 1 of 2\)$"):
            run.evaluate("train", 1, EveryRankEvaluation(fails_on_rank_1))
        # the ranks are still in step: a collective after the errors completes
        assert distributed.all_gather_object(rank) == list(range(WORLD_SIZE))
        # a plain function runs on rank 0 alone, and every rank gets its metrics
        assert run.evaluate("train", 1, fails_on_rank_1) == {"mAP": 0.5}
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_an_evaluation_that_fails_on_one_rank_fails_every_rank(tmp_path) -> None:
    run_on_ranks(_failing_evaluation_worker, str(tmp_path), join_timeout=120.0)


class _CountingModel(nn.Module):
    """A linear embedding of the flattened image that counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 4 * 2, 8)
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return self.linear(images.flatten(1))


def _test_split() -> tuple[TensorDataset, int]:
    generator = torch.Generator().manual_seed(0)
    identities = torch.arange(10).repeat(3)  # 10 queries, then 20 gallery images
    centres = torch.randn(10, 3, 4, 2, generator=generator)
    images = centres[identities] + 0.5 * torch.randn(30, 3, 4, 2, generator=generator)
    cameras = torch.cat([torch.zeros(10), torch.ones(10), 2 * torch.ones(10)]).long()
    return TensorDataset(images, identities, cameras), 10


def _sharded_evaluation_worker(rank: int, port: int) -> None:
    join_group(rank, port)
    try:
        torch.manual_seed(1)  # the same weights on both ranks
        model = _CountingModel()
        dataset, num_query = _test_split()
        loader = DataLoader(dataset, batch_size=4)
        sharded = evaluate_model(model, loader, num_query, device="cpu", distributed=True)
        assert model.seen == len(dataset) // WORLD_SIZE  # each rank ran its share only
        alone = evaluate_model(model, loader, num_query, device="cpu")  # the whole split
        assert sharded.mAP == pytest.approx(alone.mAP, abs=1e-12)
        assert sharded.mINP == pytest.approx(alone.mINP, abs=1e-12)
        assert sharded.cmc.tolist() == pytest.approx(alone.cmc.tolist(), abs=1e-12)
        assert sharded.num_valid_queries == alone.num_valid_queries == num_query
        gathered = extract_features(model, loader, flip=False, device="cpu", shard=True)
        whole = extract_features(model, loader, flip=False, device="cpu")
        torch.testing.assert_close(gathered.features, whole.features, rtol=1e-6, atol=1e-6)
        assert torch.equal(gathered.pids, whole.pids) and torch.equal(gathered.camids, whole.camids)
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_sharded_evaluation_equals_one_process() -> None:
    run_on_ranks(_sharded_evaluation_worker)


def _sync_batchnorm_worker(rank: int, port: int) -> None:
    join_group(rank, port)
    try:
        torch.manual_seed(2)
        features = torch.randn(WORLD_SIZE * 5, 3, dtype=torch.float64) * 3 + 1
        weights = torch.randn(WORLD_SIZE * 5, 3, dtype=torch.float64)  # a loss per rank
        mine = slice(5 * rank, 5 * (rank + 1))
        # The reference: plain BatchNorm over the concatenated batch of both ranks.
        reference = nn.BatchNorm1d(3, momentum=0.3).double()
        inputs = features.clone().requires_grad_(True)
        (reference(inputs) * weights).sum().backward()
        for sync in (False, True):
            model = nn.Sequential(nn.Identity(), nn.BatchNorm1d(3, momentum=0.3).double())
            network = distributed.data_parallel(model, sync_batchnorm=sync)
            assert isinstance(model[1], distributed.SyncBatchNorm) == sync
            local = features[mine].clone().requires_grad_(True)
            output = network(local)
            (output * weights[mine]).sum().backward()
            means = distributed.all_gather(model[1].running_mean[None])
            variances = distributed.all_gather(model[1].running_var[None])
            if not sync:  # each rank's own statistics: they differ
                assert not torch.allclose(means[0], means[1])
                continue
            assert torch.equal(means[0], means[1]) and torch.equal(variances[0], variances[1])
            torch.testing.assert_close(model[1].running_mean, reference.running_mean)
            torch.testing.assert_close(model[1].running_var, reference.running_var)
            torch.testing.assert_close(local.grad, inputs.grad[mine])
            # DDP averages the parameter gradients over the ranks: the sum's, over 2
            torch.testing.assert_close(model[1].weight.grad, reference.weight.grad / WORLD_SIZE)
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_sync_batchnorm_normalises_with_the_global_batch() -> None:
    run_on_ranks(_sync_batchnorm_worker)


def test_sync_batchnorm_alone_is_batchnorm() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    converted = distributed.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)))[0]
    assert isinstance(converted, distributed.SyncBatchNorm)
    converted.load_state_dict(plain.state_dict())
    inputs = torch.randn(6, 4, 3, 3)
    torch.testing.assert_close(converted(inputs), plain(inputs))
    torch.testing.assert_close(converted.running_var, plain.running_var)


def _global_batch_worker(rank: int, port: int) -> None:
    from reidkit.recipes.common import process_batch_size
    from reidkit.recipes.config import ConfigError, DataConfig

    join_group(rank, port)
    try:
        data = DataConfig(dataset="synthetic", root=None, batch_size=32, num_instances=4)
        assert process_batch_size(data) == 16  # 2 ranks x 4 identities x 4 images
        odd = DataConfig(dataset="synthetic", root=None, batch_size=36, num_instances=4)
        message = (
            "data.batch_size (36, the global batch) must split into whole identities over the "
            "2 processes: a multiple of 2 x num_instances (4) = 8"
        )
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            process_batch_size(odd)
    finally:
        distributed.cleanup_distributed()


@pytest.mark.distributed
def test_the_batch_size_is_the_global_batch() -> None:
    run_on_ranks(_global_batch_worker)
