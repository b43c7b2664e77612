"""The run folder: the files a training run writes, and the refusal to write over another run.

A run folder holds::

    config.yaml              the resolved configuration (written by the recipes)
    train.log                the log
    report.json              configuration, environment, metrics per epoch, results, best epoch
    last.pt                  the latest checkpoint (every tracked object, optimisers, generators)
    {stage}_final.pt         the checkpoint at the end of each stage
    best.pt                  the checkpoint of the best evaluation (by mAP)
    model.json               what the inference model is (architecture, input, retrieval)
    model.safetensors        the inference model's weights at the end of the run
    best_model.safetensors   its weights at the best evaluation
    eval/, export/           what ``reidkit eval`` and ``reidkit export`` write from the run

A run may train another run first into a subfolder (MMPL's CLIP-ReID baseline). A new run does
not start in a folder that holds the files of another one (:func:`check_run_folder`) unless it
resumes that run or replaces it (:func:`clear_run_folder`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from reidkit.engine.checkpoint import LAST_CHECKPOINT
from reidkit.engine.progress import LOG_FILE
from reidkit.engine.weights import BEST_WEIGHTS, MODEL_WEIGHTS

REPORT_FILE = "report.json"
CONFIG_FILE = "config.yaml"
BEST_CHECKPOINT = "best.pt"
MODEL_SPEC = "model.json"
FINAL_CHECKPOINT_SUFFIX = "_final.pt"
RUN_FILES = (
    CONFIG_FILE,
    LOG_FILE,
    REPORT_FILE,
    LAST_CHECKPOINT,
    BEST_CHECKPOINT,
    MODEL_SPEC,
    MODEL_WEIGHTS,
    BEST_WEIGHTS,
)
"""The files of a run, besides ``{stage}_final.pt``."""

DERIVED_FOLDERS = ("eval", "export")
"""Folders of results computed from a run's model (stale once the run is replaced)."""


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked: it holds another run, or no run to resume."""


def run_files(folder: str | Path) -> list[Path]:
    """The files of a run in ``folder`` (not in its subfolders), in a fixed order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = [folder / name for name in RUN_FILES if (folder / name).is_file()]
    files += sorted(
        path
        for path in folder.iterdir()
        if path.name.endswith(FINAL_CHECKPOINT_SUFFIX) and path.is_file()
    )
    return files


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder``, or a run it trains into a subfolder, has written any run file."""
    folder = Path(folder)
    if run_files(folder):
        return True
    return folder.is_dir() and any(run_files(sub) for sub in folder.iterdir() if sub.is_dir())


def check_run_folder(
    folder: str | Path, *, resume: str | Path | None, overwrite: bool = False
) -> None:
    """Raise unless a run may start in ``folder`` as asked; changes nothing.

    * A new run (``resume`` and ``overwrite`` off) needs a folder without run files.
    * ``resume="auto"`` needs a folder that holds a run (its own files or a sub-run's); the run
      continues from ``last.pt``, or from its first epoch if it was stopped before its first
      checkpoint. A ``resume`` path is checked when the checkpoint is read.
    * ``overwrite`` accepts any folder (:func:`clear_run_folder` then deletes the old run).

    Raises:
        RunFolderError: the folder holds another run (the message names its files and the
            ways out), or ``resume="auto"`` finds no run.
    """
    folder = Path(folder)
    if resume is not None:
        if str(resume) == "auto" and not holds_run(folder):
            raise RunFolderError(
                f"--resume: {folder} holds no run to resume (no {LAST_CHECKPOINT}, no "
                f"{REPORT_FILE}); start the run without --resume"
            )
        return
    if overwrite:
        return
    existing = run_files(folder)
    if existing:
        names = ", ".join(path.name for path in existing)
        raise RunFolderError(
            f"{folder} already holds a run ({names}); continue it with --resume, replace it "
            "with --overwrite (its files are deleted), or choose another --output-dir"
        )


def clear_run_folder(folder: str | Path) -> list[Path]:
    """Delete the run files of ``folder`` and the folders derived from them (``eval/``,
    ``export/``); subfolders holding other runs stay. Returns what was deleted."""
    folder = Path(folder)
    removed = run_files(folder)
    for path in removed:
        path.unlink(missing_ok=True)
    for name in DERIVED_FOLDERS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            removed.append(folder / name)
    return removed
