"""Console and file output of a run: progress bars on rank 0, readable log lines.

Log records go through :func:`tqdm.tqdm.write`, so they never break a running progress bar.
Only rank 0 shows progress bars and writes the log file; other ranks log warnings and errors,
prefixed by their rank.

Progress bars (:func:`progress_bar`) are drawn on rank 0, on a terminal, one at a time: a bar
opened while another runs (an evaluation inside an epoch) iterates silently, so no bar moves
the cursor up a line (no escape codes in a log). ``--no-progress``
(:func:`set_progress_enabled`) or ``TQDM_DISABLE=1`` in the environment turns every bar off.
Drawing a bar reads no random generator, so a run gives the same numbers with and without
bars: the bars are :class:`tqdm.std.tqdm`, not ``tqdm.auto``'s asynchronous variant, which
opens an extra iterator over the iterable it wraps (a shuffling ``DataLoader`` draws its seed
from torch's generator for each iterator).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from tqdm.std import tqdm

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


_ENABLED = [True]  # set by set_progress_enabled
_ACTIVE_BARS = [0]  # bars being drawn now (at most one)
_FALSE_WORDS = ("", "0", "false", "no", "off")


def set_progress_enabled(enabled: bool) -> None:
    """Turn every progress bar of this process on or off (``--no-progress``: off)."""
    _ENABLED[0] = bool(enabled)


def progress_enabled() -> bool:
    """Whether bars may be drawn: this is rank 0, neither :func:`set_progress_enabled` nor
    ``TQDM_DISABLE`` turned them off, and stderr is a terminal."""
    if not _ENABLED[0] or not is_main_process():
        return False
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE_WORDS:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(callable(isatty) and isatty())


class ProgressBar(Generic[T]):
    """``iterable`` with a bar while it is iterated (see :func:`progress_bar`)."""

    def __init__(self, iterable: Iterable[T], *, desc: str, total: int | None, leave: bool) -> None:
        self.iterable = iterable
        self.desc, self.total, self.leave = desc, total, leave
        self._bar: tqdm[T] | None = None

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        if not progress_enabled() or _ACTIVE_BARS[0]:
            yield from self.iterable
            return
        self._bar = tqdm(
            self.iterable,
            desc=self.desc,
            total=self.total,
            leave=self.leave,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        _ACTIVE_BARS[0] += 1
        try:
            yield from self._bar
        finally:
            _ACTIVE_BARS[0] -= 1
            self._bar.close()
            self._bar = None

    @property
    def drawn(self) -> bool:
        """Whether a bar is being drawn now (while iterating)."""
        return self._bar is not None

    def set_postfix_str(self, text: str) -> None:
        """Show ``text`` after the bar (nothing when no bar is drawn)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)


def progress_bar(
    iterable: Iterable[T], *, desc: str = "", total: int | None = None, leave: bool = False
) -> ProgressBar[T]:
    """``iterable`` wrapped in a progress bar, drawn when :func:`progress_enabled` and no other
    bar is being drawn; otherwise it iterates silently."""
    return ProgressBar(iterable, desc=desc, total=total, leave=leave)


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
