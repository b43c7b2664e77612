"""Every pipeline under torchrun across two nodes (slow): two ``torchrun --nnodes 2
--node_rank {0,1}`` launches on this machine (gloo, the CPU) train the run that one
``torchrun --nnodes 1 --nproc_per_node 2`` launch trains: the same last checkpoint, tensor for
tensor, and the same report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reidkit.engine import read_checkpoint
from reidkit.recipes import get_recipe
from reidkit.recipes.config import get_field
from tests.engine.helpers import assert_same, report_metrics

TIMEOUT = 1200
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_arguments(name: str, output: Path) -> list[str]:
    """One epoch per stage of the tiny preset, no warm-up (it must be shorter than a stage)."""
    recipe = get_recipe(name)
    config = recipe.presets["tiny"]
    overrides = []
    for stage in recipe.epoch_fields(config):
        try:
            overrides.append(f"{recipe.stage_field(config, stage, 'warmup_epochs')}=0")
        except ValueError:  # a stage that warms up by another field, or not at all
            continue
    arguments = ["-m", "reidkit", "train", name, "--preset", "tiny", "--epochs", "1"]
    arguments += ["--output-dir", str(output), "--device", "cpu", "--num-workers", "0"]
    arguments += ["--no-progress", "--no-tensorboard", "--seed", "3"]
    if get_field(config, "data.batch_size") > 16:
        arguments += ["--batch-size", "16"]  # smaller steps; still two identities per rank
    return [*arguments, *(["--set", *overrides] if overrides else [])]


def _torchrun(nodes: int, node_rank: int, per_node: int, port: int, arguments: list[str]):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}"]
    command += [f"--node_rank={node_rank}", f"--nproc_per_node={per_node}"]
    command += ["--master_addr=127.0.0.1", f"--master_port={port}", *arguments]
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("a torchrun launch did not finish: a rank hangs")
    assert process.returncode == 0, stderr[-4000:]
    return stderr


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", ["clip_reid", "mmpl", "aaformer", "pcl_clip", "unipt", "valpat"])
def test_two_nodes_train_the_run_of_one_node(tmp_path: Path, monkeypatch, name: str) -> None:
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path / "cache"))
    one_node, two_nodes = tmp_path / "one_node", tmp_path / "two_nodes"
    _finish(_torchrun(1, 0, 2, _free_port(), _train_arguments(name, one_node)))
    port = _free_port()
    launches = [_torchrun(2, rank, 1, port, _train_arguments(name, two_nodes)) for rank in (0, 1)]
    for launch in launches:
        _finish(launch)
    checkpoints = [read_checkpoint(folder / "last.pt") for folder in (one_node, two_nodes)]
    for checkpoint in checkpoints:
        del checkpoint["objects"]["report"]  # compared below, without times and folders
    assert assert_same(*checkpoints, "last.pt") > 0  # models, optimisers, generators
    reports = [
        json.dumps(report_metrics(folder)).replace(str(folder), "RUN")
        for folder in (one_node, two_nodes)
    ]
    assert reports[0] == reports[1]
