"""Atomic checkpoints of multi-stage training runs, and resuming them at any stage and epoch.

A checkpoint holds the ``state_dict`` of every tracked object (models, prompt learners,
memories, the run report), the state of the current stage's optimisers, schedulers and AMP
scaler, the random generators of every rank, the stage name, the number of epochs completed
in that stage, and a free ``extra`` dict. Resuming loads the tracked objects at once and then,
stage by stage, tells the training loop where to start: stages before the checkpoint's stage
are skipped, the checkpoint's stage restarts after its last completed epoch with the saved
optimiser state and random generators, and later stages run from scratch.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from reidkit.distributed import (
    all_gather_object,
    barrier,
    get_rank,
    is_main_process,
    unwrap_model,
)
from reidkit.engine.atomic import atomic_torch_save
from reidkit.engine.seeding import capture_rng_state, restore_rng_state

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "last.pt"


class Stateful(Protocol):
    """Anything with ``state_dict`` and ``load_state_dict`` (modules, optimisers, memories)."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class TrainingState:
    """Where a run stands.

    Attributes:
        stage: name of the stage the checkpoint was written in.
        epoch: number of epochs completed in that stage.
        stage_finished: whether that stage has run all its epochs.
    """

    stage: str
    epoch: int
    stage_finished: bool


def _unwrap(obj: Any) -> Any:
    return unwrap_model(obj) if isinstance(obj, torch.nn.Module) else obj


def resolve_resume_path(resume: str | Path | None, output_dir: str | Path) -> Path | None:
    """The checkpoint file that ``--resume`` designates.

    Args:
        resume: ``None`` (do not resume), ``"auto"`` (``output_dir/last.pt`` when it exists,
            else start afresh), a folder (its ``last.pt``) or a checkpoint file.
        output_dir: the run's output folder.

    Returns:
        The file to load, or ``None`` to start afresh.
    """
    if resume is None:
        return None
    if str(resume) == "auto":
        candidate = Path(output_dir) / LAST_CHECKPOINT
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / LAST_CHECKPOINT
    if not path.is_file():
        raise ValueError(f"resume must name a checkpoint file or a folder holding one: {path}")
    return path


class CheckpointManager:
    """Writes and restores the checkpoints of one run in ``directory``.

    Every epoch's checkpoint replaces ``directory/last.pt`` atomically (temporary file, then
    :func:`os.replace`); when a stage finishes, a copy is kept as ``{stage}_final.pt``.
    :meth:`save` must be called on every rank (it gathers their random generators); only rank 0
    writes.

    Args:
        directory: folder of the checkpoint files.
        stages: names of the run's stages, in the order they run.

    Example::

        checkpoints = CheckpointManager(out_dir, stages=["prompts", "image_encoder"])
        checkpoints.track("model", model)
        checkpoints.load(resume_path)                 # optional
        start = checkpoints.resume_epoch("prompts", trainer)
        for epoch in range(start, epochs):
            ...
            checkpoints.save(TrainingState("prompts", epoch + 1, epoch + 1 == epochs), trainer)
    """

    def __init__(self, directory: str | Path, stages: Sequence[str]) -> None:
        stages = list(stages)
        if (
            not stages
            or len(set(stages)) != len(stages)
            or not all(isinstance(name, str) and name for name in stages)
        ):
            raise ValueError(f"stages must be a non-empty list of distinct names, got {stages!r}")
        self.directory = Path(directory)
        self.stages = stages
        self._tracked: dict[str, Stateful] = {}
        self._loaded: dict[str, Any] | None = None
        self.resumed_from: TrainingState | None = None
        self.extra: dict[str, Any] = {}

    def track(self, name: str, obj: Stateful) -> Stateful:
        """Include ``obj`` in every checkpoint under ``name``; returns ``obj``.

        If a loaded checkpoint holds a state for ``name``, it is loaded into ``obj`` now, so
        objects built after :meth:`load` (e.g. modules of a later stage) are restored too.
        """
        if name in self._tracked:
            raise ValueError(f"name {name!r} is already tracked")
        if not callable(getattr(obj, "state_dict", None)) or not callable(
            getattr(obj, "load_state_dict", None)
        ):
            raise ValueError(f"obj tracked as {name!r} must have state_dict and load_state_dict")
        self._tracked[name] = obj
        if self._loaded is not None and name in self._loaded["objects"]:
            _unwrap(obj).load_state_dict(self._loaded["objects"][name])
        return obj

    def _stage_index(self, stage: str) -> int:
        if stage not in self.stages:
            raise ValueError(f"stage must be one of {self.stages}, got {stage!r}")
        return self.stages.index(stage)

    def save(
        self,
        state: TrainingState,
        trainer: Stateful | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the checkpoint of ``state`` (collective: call on every rank).

        Args:
            state: stage and completed epochs.
            trainer: the current stage's optimisers, schedulers and scaler (e.g. a
                :class:`~reidkit.engine.Trainer`), restored by :meth:`resume_epoch`.
            extra: any picklable values; ``None`` keeps :attr:`extra`.

        Returns:
            The path of ``last.pt``.
        """
        self._stage_index(state.stage)
        if extra is not None:
            self.extra = dict(extra)
        rng_states = all_gather_object(capture_rng_state())
        path = self.directory / LAST_CHECKPOINT
        if is_main_process():
            payload = {
                "format": CHECKPOINT_FORMAT,
                "stage": state.stage,
                "epoch": state.epoch,
                "stage_finished": state.stage_finished,
                "objects": {name: _unwrap(obj).state_dict() for name, obj in self._tracked.items()},
                "trainer": None if trainer is None else trainer.state_dict(),
                "rng": rng_states,
                "extra": self.extra,
            }
            atomic_torch_save(payload, path)
            if state.stage_finished:
                final = self.directory / f"{state.stage}_final.pt"
                temporary = final.with_name(f".{final.name}.tmp")
                shutil.copyfile(path, temporary)
                temporary.replace(final)
        barrier()
        return path

    def load(self, path: str | Path) -> TrainingState:
        """Read a checkpoint and restore every tracked object (and those tracked later).

        Returns:
            The :class:`TrainingState` it was written at; also kept as :attr:`resumed_from`.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path must be an existing checkpoint file, got {path}")
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a reidkit checkpoint (format {CHECKPOINT_FORMAT})")
        self._stage_index(payload["stage"])
        self._loaded = payload
        self.extra = dict(payload["extra"])
        for name, obj in self._tracked.items():
            if name in payload["objects"]:
                _unwrap(obj).load_state_dict(payload["objects"][name])
        self.resumed_from = TrainingState(
            payload["stage"], payload["epoch"], payload["stage_finished"]
        )
        return self.resumed_from

    def stage_completed(self, stage: str) -> bool:
        """Whether the loaded checkpoint already covers all of ``stage`` (skip its set-up)."""
        index = self._stage_index(stage)
        resumed = self.resumed_from
        if resumed is None:
            return False
        resumed_index = self._stage_index(resumed.stage)
        return index < resumed_index or (index == resumed_index and resumed.stage_finished)

    def resume_epoch(self, stage: str, trainer: Stateful | None = None) -> int:
        """The number of epochs of ``stage`` already done, restoring its state where needed.

        For the checkpoint's own stage, the saved ``trainer`` state and this rank's random
        generators are restored, so the next epoch draws exactly what it would have drawn
        without the interruption.

        Returns:
            0 for a stage the checkpoint has not reached, the completed epochs for the
            checkpoint's own stage.

        Raises:
            ValueError: for a stage before the checkpoint's one (check :meth:`stage_completed`
                first and skip such stages).
        """
        index = self._stage_index(stage)
        resumed = self.resumed_from
        if resumed is None or self._loaded is None:
            return 0
        resumed_index = self._stage_index(resumed.stage)
        if index < resumed_index:
            raise ValueError(
                f"stage {stage!r} was completed before the checkpoint's stage {resumed.stage!r}"
            )
        if index > resumed_index:
            return 0
        if trainer is not None and self._loaded["trainer"] is not None:
            trainer.load_state_dict(self._loaded["trainer"])
        rng_states = self._loaded["rng"]
        rank = get_rank()
        restore_rng_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
        return resumed.epoch
