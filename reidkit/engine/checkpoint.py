"""Atomic checkpoints of multi-stage training runs, and resuming them at any stage and epoch.

A checkpoint holds the ``state_dict`` of every tracked object (models, prompt learners,
memories, the run report), the state of the current stage's optimisers, schedulers and AMP
scaler, the random generators of every rank, the stage name, the number of epochs completed
in that stage, and a JSON-able ``extra`` dict. Resuming loads the tracked objects at once and
then, stage by stage, tells the training loop where to start: stages before the checkpoint's
stage are skipped, the checkpoint's stage restarts after its last completed epoch with the
saved optimiser state and random generators, and later stages run from scratch.

A checkpoint holds tensors and plain Python values only (:meth:`CheckpointManager.save`
refuses anything else), and is read with ``torch.load(..., weights_only=True)``: a tampered
file cannot run code when a run resumes from it. Every entry is checked before anything is
restored, so a file that does not fit the run raises :class:`CheckpointError` and leaves the
tracked objects as they were.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from reidkit import checks
from reidkit.distributed import (
    all_gather_object,
    barrier,
    get_rank,
    is_main_process,
    unwrap_model,
)
from reidkit.engine.atomic import atomic_copy, atomic_torch_save, remove_stale_temporaries
from reidkit.engine.seeding import capture_rng_state, check_rng_state, restore_rng_state

CHECKPOINT_FORMAT = 2
LAST_CHECKPOINT = "last.pt"
_ENTRIES = ("format", "stage", "epoch", "stage_finished", "objects", "trainer", "rng", "extra")
# What torch.load(..., weights_only=True) rebuilds without running code (every torch >= 2.4),
# besides the containers dict, OrderedDict, Counter, list and tuple.
_SAFE_VALUES = (
    str,
    int,
    float,
    bool,
    type(None),
    torch.Tensor,
    torch.nn.Parameter,
    torch.Size,
    torch.device,
    torch.dtype,
)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the run; names the file."""


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


def _check_storable(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``weights_only`` loading rebuilds ``value``."""
    kind = type(value)
    if kind in (dict, OrderedDict, Counter):
        for key, item in value.items():
            _check_storable(key, f"{where} key {key!r}")
            _check_storable(item, f"{where}[{key!r}]")
    elif kind in (list, tuple):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]")
    elif kind not in _SAFE_VALUES:
        raise ValueError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}; a checkpoint holds only "
            "tensors and plain Python values (dict, list, tuple, str, int, float, bool, None), "
            "so that loading it cannot run code"
        )


def _unpickling_detail(error: Exception) -> str:
    """The reason torch's restricted unpickler gives, without its advice to disable it."""
    match = re.search(r"WeightsUnpickler error: (.*?)(?:\. Please use|$)", str(error), re.M)
    return match.group(1).strip() if match and match.group(1).strip() else ""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint file, read without running any code from it.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a :func:`torch.save` file,
            or holds objects other than tensors and plain Python values.
    """
    path = Path(path)
    expected = (
        f"expected a reidkit checkpoint (format {CHECKPOINT_FORMAT}) written by "
        "CheckpointManager.save"
    )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file; {expected}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unreadable file fails in many ways, all of them this
        detail = _unpickling_detail(error) if isinstance(error, pickle.UnpicklingError) else ""
        if detail:
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds objects other than tensors and plain "
                f"Python values ({detail}), and loading those could run code; {expected}"
            ) from error
        message = str(error).splitlines()[0] if str(error) else ""
        reason = (
            "it is empty"
            if path.stat().st_size == 0
            else f"it is truncated or not a torch.save file ({type(error).__name__}: {message})"
        )
        raise CheckpointError(f"checkpoint {path} cannot be read: {reason}; {expected}") from error
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"checkpoint {path} holds no format number; {expected}")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {payload['format']!r}, not {CHECKPOINT_FORMAT}; "
            f"{expected}"
        )
    missing = [name for name in _ENTRIES if name not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}; {expected}")
    return payload


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
    writes. On rank 0, the constructor deletes the temporary files of these checkpoints that a
    process killed while writing one left behind.

    Args:
        directory: folder of the checkpoint files.
        stages: names of the run's stages, in the order they run.

    Example::

        checkpoints = CheckpointManager(out_dir, stages=["prompts", "image_encoder"])
        checkpoints.track("model", model)
        checkpoints.load(resume_path)                 # optional
        if not checkpoints.stage_completed("prompts"):
            start = checkpoints.resume_epoch("prompts", trainer)
            for epoch in range(start, epochs):
                ...
                finished = epoch + 1 == epochs
                checkpoints.save(TrainingState("prompts", epoch + 1, finished), trainer)
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
        self._loaded_path: Path | None = None
        self._rng_restored = False
        self.resumed_from: TrainingState | None = None
        self.extra: dict[str, Any] = {}
        if is_main_process():
            for name in (LAST_CHECKPOINT, *(self._final_name(stage) for stage in stages)):
                remove_stale_temporaries(self.directory / name)

    @staticmethod
    def _final_name(stage: str) -> str:
        return f"{stage}_final.pt"

    def track(self, name: str, obj: Stateful) -> Stateful:
        """Include ``obj`` in every checkpoint under ``name``; returns ``obj``.

        If a loaded checkpoint holds a state for ``name``, it is loaded into ``obj`` now, so
        objects built after :meth:`load` (e.g. modules of a later stage) are restored too; an
        object the checkpoint has no state for (one first tracked after the checkpoint was
        written) is left as it is.

        Raises:
            CheckpointError: the loaded state does not fit ``obj`` (``obj`` is left as it was).
        """
        if name in self._tracked:
            raise ValueError(f"name {name!r} is already tracked")
        if not callable(getattr(obj, "state_dict", None)) or not callable(
            getattr(obj, "load_state_dict", None)
        ):
            raise ValueError(f"obj tracked as {name!r} must have state_dict and load_state_dict")
        if self._loaded is not None and name in self._loaded["objects"]:
            state = self._loaded["objects"][name]
            self._check_fits(name, obj, state)
            self._restore(f"the object tracked as {name!r}", obj, state)
        self._tracked[name] = obj
        return obj

    def _stage_index(self, stage: str) -> int:
        checks.check_choice("stage", stage, self.stages)
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
            extra: values that JSON can hold (dicts with string keys, lists, strings,
                numbers, booleans, ``None``; tuples come back as lists); ``None`` keeps
                :attr:`extra`.

        Returns:
            The path of ``last.pt``.

        Raises:
            ValueError: ``extra`` is not JSON-able, or a tracked object's state or the
                trainer's holds something other than tensors and plain Python values (the
                message names the entry); nothing is written then.
        """
        self._stage_index(state.stage)
        if extra is not None:
            try:
                self.extra = json.loads(json.dumps(dict(extra)))
            except (TypeError, ValueError) as error:
                raise ValueError(f"extra must hold only what JSON can hold: {error}") from None
        # Built and checked on every rank, before the collective: a refusal stops every rank.
        objects = {name: _unwrap(obj).state_dict() for name, obj in self._tracked.items()}
        trainer_state = None if trainer is None else trainer.state_dict()
        for name, value in objects.items():
            _check_storable(value, f"the state of {name!r}")
        _check_storable(trainer_state, "the trainer's state")
        rng_states = all_gather_object(capture_rng_state())
        path = self.directory / LAST_CHECKPOINT
        if is_main_process():
            payload = {
                "format": CHECKPOINT_FORMAT,
                "stage": state.stage,
                "epoch": state.epoch,
                "stage_finished": state.stage_finished,
                "objects": objects,
                "trainer": trainer_state,
                "rng": rng_states,
                "extra": self.extra,
            }
            atomic_torch_save(payload, path)
            if state.stage_finished:
                atomic_copy(path, self.directory / self._final_name(state.stage))
        barrier()
        return path

    def _error(self, reason: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self._loaded_path} {reason}")

    def _check_payload(self, payload: dict[str, Any]) -> TrainingState:
        """The payload's training state, once every entry of it has been checked."""
        stage, epoch, finished = payload["stage"], payload["epoch"], payload["stage_finished"]
        if stage not in self.stages:
            raise self._error(f"was written in stage {stage!r}, not one of {self.stages}")
        if not checks.is_integer(epoch) or epoch < 0:
            raise self._error(f"has epoch {epoch!r}; expected an integer >= 0")
        if not isinstance(finished, bool):
            raise self._error(f"has stage_finished {finished!r}; expected a bool")
        objects = payload["objects"]
        if not isinstance(objects, dict) or not all(
            isinstance(name, str) and isinstance(value, Mapping) for name, value in objects.items()
        ):
            raise self._error("has objects that are not a dict of names to state dicts")
        if payload["trainer"] is not None and not isinstance(payload["trainer"], Mapping):
            raise self._error("has a trainer state that is not a dict")
        if not isinstance(payload["extra"], dict):
            raise self._error("has an extra entry that is not a dict")
        rng = payload["rng"]
        if not isinstance(rng, list) or not rng:
            raise self._error("has no random generator states (expected one per rank)")
        for rank, rng_state in enumerate(rng):
            try:
                check_rng_state(rng_state)
            except ValueError as error:
                raise self._error(f"has an invalid random state for rank {rank}: {error}") from None
        return TrainingState(stage, epoch, finished)

    def _check_fits(self, name: str, obj: Stateful, state: Mapping[str, Any]) -> None:
        """Raise unless a module's saved ``state`` has exactly its entries and shapes."""
        module = _unwrap(obj)
        if not isinstance(module, torch.nn.Module):
            return
        current = module.state_dict()
        missing = sorted(set(current) - set(state))
        unexpected = sorted(set(state) - set(current))
        if missing or unexpected:
            raise self._error(
                f"does not fit the module tracked as {name!r}: missing entries {missing[:5]}, "
                f"unexpected entries {unexpected[:5]}"
            )
        for key, value in current.items():
            saved = state[key]
            if isinstance(value, torch.Tensor) and (
                not isinstance(saved, torch.Tensor) or saved.shape != value.shape
            ):
                found = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved)
                raise self._error(
                    f"does not fit the module tracked as {name!r}: {key} has shape {found}, "
                    f"the module's has {tuple(value.shape)}"
                )

    def _restore(self, what: str, obj: Stateful, state: Mapping[str, Any]) -> None:
        try:
            _unwrap(obj).load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise self._error(f"could not be loaded into {what}: {error}") from error

    def load(self, path: str | Path) -> TrainingState:
        """Read a checkpoint and restore every tracked object (and those tracked later).

        The file is read without running any code from it (see :func:`read_checkpoint`), and
        every entry is checked before any object is touched: every object tracked so far must
        have a state in it, and a module's state must have exactly its entries and shapes.

        Returns:
            The :class:`TrainingState` it was written at; also kept as :attr:`resumed_from`.

        Raises:
            CheckpointError: the file cannot be read or does not fit the tracked objects
                (nothing has been restored then).
        """
        payload = read_checkpoint(path)
        self._loaded_path = Path(path)
        state = self._check_payload(payload)
        objects = payload["objects"]
        absent = [name for name in self._tracked if name not in objects]
        if absent:
            raise self._error(f"holds no state for the tracked objects {absent}")
        for name, obj in self._tracked.items():
            self._check_fits(name, obj, objects[name])
        for name, obj in self._tracked.items():
            self._restore(f"the object tracked as {name!r}", obj, objects[name])
        self._loaded = payload
        self._rng_restored = False
        self.extra = dict(payload["extra"])
        self.resumed_from = state
        return state

    def _restore_rng(self) -> None:
        """Restore this rank's random generators of the checkpoint, once per :meth:`load`."""
        if self._loaded is None or self._rng_restored:
            return
        self._rng_restored = True
        rng_states = self._loaded["rng"]
        rank = get_rank()
        restore_rng_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])

    def stage_completed(self, stage: str) -> bool:
        """Whether the loaded checkpoint already covers all of ``stage`` (skip its set-up).

        When the checkpoint was written at the end of ``stage`` itself, the first such call
        also restores the random generators of that moment, so that what follows the skipped
        stage draws what it drew in the uninterrupted run: ask where the stage would run,
        before its set-up, as in ``if not stage_completed(stage): <set up and train stage>``.
        """
        index = self._stage_index(stage)
        resumed = self.resumed_from
        if resumed is None:
            return False
        resumed_index = self._stage_index(resumed.stage)
        if index == resumed_index and resumed.stage_finished:
            self._restore_rng()
            return True
        return index < resumed_index

    def resume_epoch(self, stage: str, trainer: Stateful | None = None) -> int:
        """The number of epochs of ``stage`` already done, restoring its state where needed.

        For the checkpoint's own stage, the saved ``trainer`` state and this rank's random
        generators are restored, so the next epoch draws exactly what it would have drawn
        without the interruption. For a later stage, the generators are restored here unless
        :meth:`stage_completed` already did.

        Returns:
            0 for a stage the checkpoint has not reached, the completed epochs for the
            checkpoint's own stage.

        Raises:
            ValueError: for a stage before the checkpoint's one (check :meth:`stage_completed`
                first and skip such stages).
            CheckpointError: the saved trainer state does not fit ``trainer``.
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
            # A pipeline that never asked stage_completed about the checkpoint's finished stage
            # gets the generators back here, at the latest.
            self._restore_rng()
            return 0
        if trainer is not None and self._loaded["trainer"] is not None:
            self._restore("the trainer", trainer, self._loaded["trainer"])
        self._restore_rng()
        return resumed.epoch
