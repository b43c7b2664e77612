"""A run's scalars for TensorBoard: losses, learning rates and evaluation metrics.

:class:`ScalarLog` writes, on rank 0 and when the ``tensorboard`` package is installed (the
``tensorboard`` extra: ``pip install reidkit[tensorboard]``), one event file in
``<run>/tensorboard``, beside ``train.log`` and ``report.json`` which hold the same numbers.
Tags are ``<stage>/<name>`` for what an epoch reports (``prompts/loss``,
``prompts/lr_prompts``) and ``<stage>/eval/<metric>`` for evaluations (``image_encoder/eval/mAP``),
at the step of the epoch within its stage. View them with ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reidkit.distributed import is_main_process
from reidkit.engine.progress import LOGGER_NAME

TENSORBOARD_FOLDER = "tensorboard"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class ScalarLog:
    """Scalars of a run as TensorBoard events in ``<output_dir>/tensorboard`` (rank 0 only).

    Args:
        output_dir: the run folder.
        enabled: ``False`` writes nothing; so does a rank other than 0, or a Python without
            the ``tensorboard`` package (which says so in one log line).

    Attributes:
        folder: where the event files go, or ``None`` when nothing is written.
    """

    def __init__(self, output_dir: str | Path, *, enabled: bool = True) -> None:
        self._writer: Any = None
        self.folder: Path | None = None
        if enabled and is_main_process() and not tensorboard_available():
            logging.getLogger(LOGGER_NAME).info(
                "TensorBoard: not installed (pip install 'reidkit[tensorboard]', or pass "
                "--no-tensorboard); the scalars go to train.log and report.json only"
            )
        elif enabled and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.folder = Path(output_dir) / TENSORBOARD_FOLDER
            self._writer = SummaryWriter(str(self.folder))

    def add(self, prefix: str, step: int, scalars: Mapping[str, float]) -> None:
        """Write every finite scalar of ``scalars`` under ``<prefix>/<name>`` at ``step``."""
        if self._writer is None:
            return
        for name, value in scalars.items():
            value = float(value)
            if math.isfinite(value):
                self._writer.add_scalar(f"{prefix}/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (nothing more is written)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
