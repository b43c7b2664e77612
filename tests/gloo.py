"""Running a test body on two gloo processes on the CPU, with a deadline instead of a hang.

A collective that one rank never reaches blocks the others until the process group's timeout
(30 minutes by default): :func:`run_on_ranks` fails the test after ``join_timeout`` seconds
instead, and :func:`join_group` gives the group a timeout of its own.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reidkit import distributed

WORLD_SIZE = 2


def run_on_ranks(worker: Callable[..., None], *args: Any, join_timeout: float = 120.0) -> None:
    """Run ``worker(rank, port, *args)`` on :data:`WORLD_SIZE` processes and wait for them.

    A failure in a process fails the test with its traceback; processes still running after
    ``join_timeout`` seconds are killed and the test fails.
    """
    if not dist.is_available():
        # Some torch builds (e.g. macOS wheels without gloo) ship no torch.distributed.
        pytest.skip("torch.distributed is not available")
    # fork skips re-importing torch in each child (seconds on a busy 2-core machine); the
    # children use one thread, so no OpenMP pool inherited from the parent is ever entered.
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    context = mp.start_processes(
        worker,
        args=(_free_port(), *args),
        nprocs=WORLD_SIZE,
        join=False,
        start_method=start_method,
    )
    deadline = time.monotonic() + join_timeout
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail(f"the ranks were still running after {join_timeout} s: a collective hangs")


def join_group(rank: int, port: int, timeout: float = 60.0) -> distributed.DistributedContext:
    """In a worker: join the group of :data:`WORLD_SIZE` gloo processes on ``port``."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    return distributed.init_distributed("cpu", timeout=timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
