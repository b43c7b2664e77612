"""The JSON report of a training run: configuration, environment, per-epoch metrics, timing.

Layout of ``report.json``::

    {
      "config": {...},                       # the run's arguments and preset
      "environment": {"python": ..., "torch": ..., "device": ..., "world_size": ..., ...},
      "stages": {
        "<stage>": {
          "epochs": [{"epoch": 1, "time_s": 12.3, "loss": ..., "lr": ...}, ...],
          "evaluations": [{"epoch": 5, "mAP": ..., "R1": ...}, ...],
          "time_s": 61.5                     # sum of the epoch times
        }, ...
      },
      "results": {...},                      # final numbers set by the script
      "data": {"name": ..., "splits": {"train": {"identities": ..., "images": ...,
               "cameras": ...}, ...}, "chance": {"mAP": ..., "R1": ..., ...}} or null,
      "best": {"stage": ..., "epoch": ..., "metric": "mAP", "metrics": {...},
               "checkpoint": "best.pt", "weights": "best_model.safetensors"} or null,
      "timing": {"started_at": ISO-8601, "updated_at": ..., "wall_time_s": ...},
      "resumes": [{"stage": ..., "epoch": ..., "at": ...}]
    }

The report is tracked by the checkpoints of :class:`~reidkit.engine.TrainingRun`, so a resumed
run keeps the history of the epochs it does not repeat; ``wall_time_s`` adds the time of every
segment of the run.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from reidkit.distributed import get_world_size, is_main_process
from reidkit.engine.atomic import atomic_write_text, remove_stale_temporaries


def to_jsonable(value: Any) -> Any:
    """``value`` with tensors, arrays, paths, dataclasses and tuples turned into JSON types.

    Non-finite floats become ``None`` (JSON has no NaN); unknown objects become ``repr``.
    """
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return to_jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    return repr(value)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """Versions, devices and command line of this process (cheap: imports nothing new)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "command": sys.argv,
        "torch": torch.__version__,
        "reidkit": _package_version("reidkit"),
        "open_clip_torch": _package_version("open_clip_torch"),
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "world_size": get_world_size(),
        "cuda": torch.version.cuda,
        # cudnn.version is not annotated in torch.
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,  # type: ignore[no-untyped-call]
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    return info


class RunReport:
    """Collects the metrics of a run and writes them to ``path`` as JSON (rank 0 only).

    On rank 0, the constructor deletes the temporary files of ``path`` that a process killed
    while writing it left behind.

    Args:
        path: the JSON file, rewritten atomically by :meth:`save`.
        config: the run's configuration (anything :func:`to_jsonable` accepts).
    """

    def __init__(self, path: str | Path, config: Any = None) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {
            "config": to_jsonable(config if config is not None else {}),
            "environment": environment_info(),
            "stages": {},
            "results": {},
            "data": None,
            "best": None,
            "timing": {"started_at": _now(), "updated_at": None, "wall_time_s": 0.0},
            "resumes": [],
        }
        self._previous_wall_time = 0.0
        self._segment_start = time.perf_counter()
        if is_main_process():
            remove_stale_temporaries(self.path)

    def _stage(self, stage: str) -> dict[str, Any]:
        if not isinstance(stage, str) or not stage:
            raise ValueError(f"stage must be a non-empty string, got {stage!r}")
        return cast(dict[str, dict[str, Any]], self.data["stages"]).setdefault(
            stage, {"epochs": [], "evaluations": [], "time_s": 0.0}
        )

    def log_epoch(
        self, stage: str, epoch: int, metrics: Mapping[str, float], time_s: float
    ) -> None:
        """Record the training metrics of ``epoch`` (1-based) of ``stage``."""
        record = self._stage(stage)
        record["epochs"].append({"epoch": epoch, "time_s": time_s, **to_jsonable(metrics)})
        record["time_s"] += time_s

    def log_evaluation(self, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record evaluation metrics measured after ``epoch`` (1-based) of ``stage``."""
        self._stage(stage)["evaluations"].append({"epoch": epoch, **to_jsonable(metrics)})

    def last_evaluation(self, stage: str) -> dict[str, Any]:
        """The metrics of the latest evaluation of ``stage`` (without ``epoch``), or ``{}``."""
        evaluations = self.data["stages"].get(stage, {}).get("evaluations", [])
        if not evaluations:
            return {}
        return {key: value for key, value in evaluations[-1].items() if key != "epoch"}

    def set_result(self, name: str, value: Any) -> None:
        """Store a final result (e.g. a table row) under ``results[name]``."""
        self.data["results"][name] = to_jsonable(value)

    def set_data(
        self,
        name: str,
        splits: Mapping[str, Mapping[str, int]],
        chance: Mapping[str, float] | None = None,
    ) -> None:
        """Record the data set ``name``, its splits' counts and the chance level of its
        evaluation (the metrics of a random ranking)."""
        self.data["data"] = {
            "name": name,
            "splits": to_jsonable(splits),
            "chance": to_jsonable(chance) if chance is not None else None,
        }

    @property
    def best(self) -> dict[str, Any] | None:
        """The best evaluation so far (see :meth:`set_best`), or ``None``."""
        return cast("dict[str, Any] | None", self.data["best"])

    def set_best(
        self,
        stage: str,
        epoch: int,
        metric: str,
        metrics: Mapping[str, float],
        checkpoint: str,
        weights: str | None,
    ) -> None:
        """Record the evaluation after ``epoch`` of ``stage`` as the run's best by ``metric``,
        kept in the files ``checkpoint`` and ``weights`` of the run folder."""
        self.data["best"] = {
            "stage": stage,
            "epoch": epoch,
            "metric": metric,
            "metrics": to_jsonable(metrics),
            "checkpoint": checkpoint,
            "weights": weights,
        }

    def note_resume(self, stage: str, epoch: int) -> None:
        """Record that the run resumed after ``epoch`` completed epochs of ``stage``."""
        self.data["resumes"].append({"stage": stage, "epoch": epoch, "at": _now()})

    def save(self) -> Path:
        """Rewrite the JSON file (on rank 0; other ranks do nothing) and return its path."""
        timing = self.data["timing"]
        timing["updated_at"] = _now()
        timing["wall_time_s"] = self._previous_wall_time + time.perf_counter() - self._segment_start
        if is_main_process():
            atomic_write_text(json.dumps(self.data, indent=2) + "\n", self.path)
        return self.path

    def state_dict(self) -> dict[str, Any]:
        """History to carry into a resumed run (stages, results, best, timing, resumes)."""
        timing = dict(self.data["timing"])
        timing["wall_time_s"] = self._previous_wall_time + time.perf_counter() - self._segment_start
        return {
            "stages": self.data["stages"],
            "results": self.data["results"],
            "best": self.data["best"],
            "timing": timing,
            "resumes": self.data["resumes"],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the history; this run's config and environment are kept."""
        self.data["stages"] = json.loads(json.dumps(state_dict["stages"]))
        self.data["results"] = dict(state_dict["results"])
        self.data["best"] = json.loads(json.dumps(state_dict.get("best")))
        self.data["resumes"] = list(state_dict["resumes"])
        self.data["timing"]["started_at"] = state_dict["timing"]["started_at"]
        self._previous_wall_time = float(state_dict["timing"]["wall_time_s"])
        self._segment_start = time.perf_counter()
