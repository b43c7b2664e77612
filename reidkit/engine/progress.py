"""Console and file output of a run: tqdm progress bars on rank 0, readable log lines.

Log records go through :func:`tqdm.tqdm.write`, so they never break a running progress bar.
Only rank 0 shows progress bars and writes the log file; other ranks log warnings and errors,
prefixed by their rank.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from reidkit import checks
from reidkit.distributed import get_rank, is_main_process

T = TypeVar("T")
LOGGER_NAME = "reidkit"
LOG_FILE = "train.log"


class _TqdmHandler(logging.Handler):
    """Writes records with ``tqdm.write`` so that progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(
    output_dir: str | Path | None = None, *, level: int = logging.INFO
) -> logging.Logger:
    """Configure and return the ``reidkit`` logger (idempotent: handlers are replaced).

    Args:
        output_dir: where rank 0 appends ``train.log``; ``None`` logs to the console only.
        level: level of rank 0; the other ranks log ``WARNING`` and above.

    Returns:
        The logger; lines read ``2025-01-31 12:00:00 INFO [stage2] epoch 3/60 loss 1.2345``.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    main = is_main_process()
    prefix = "" if main else f"[rank {get_rank()}] "
    formatter = logging.Formatter(
        f"%(asctime)s %(levelname)s {prefix}%(message)s", datefmt="%Y-%m-%d %H:%M:%S"
    )
    console = _TqdmHandler()
    console.setFormatter(formatter)
    logger.addHandler(console)
    if main and output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / LOG_FILE, encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    logger.setLevel(level if main else logging.WARNING)
    logger.propagate = False
    return logger


def progress_bar(
    iterable: Iterable[T], *, desc: str = "", total: int | None = None, leave: bool = False
) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on rank 0 (other ranks iterate silently)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        leave=leave,
        dynamic_ncols=True,
        disable=not is_main_process(),
    )


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``{"loss": 1.23456, "lr": 3.5e-4, "skipped_steps": 0}`` as
    ``"loss 1.2346 | lr 3.50e-04 | skipped_steps 0"`` (integers as integers)."""
    parts = []
    for name, value in metrics.items():
        if checks.is_integer(value):
            parts.append(f"{name} {value}")
            continue
        value = float(value)
        text = f"{value:.2e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"
        parts.append(f"{name} {text}")
    return " | ".join(parts)
