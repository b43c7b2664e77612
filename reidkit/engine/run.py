"""One training run of one or more stages: epochs, evaluation, checkpoints, log and report.

:class:`TrainingRun` ties together the run folder (:mod:`reidkit.engine.run_folder`), the log
(``train.log``), the checkpoints (``last.pt``, ``{stage}_final.pt``, ``best.pt``), the JSON
report (``report.json``), the TensorBoard scalars (``tensorboard/``, see
:mod:`reidkit.engine.tensorboard`) and the inference model's weights (``model.safetensors``,
``best_model.safetensors``). Its :meth:`fit` runs the epochs of one stage with a
:class:`~reidkit.engine.Trainer`, evaluates every ``eval_every`` epochs and after the last one,
keeps the checkpoint of the best evaluation, writes a checkpoint and the report after every
epoch, and, when the run was resumed, starts where the checkpoint left off.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from reidkit import checks
from reidkit.distributed import barrier, broadcast_object, is_main_process, raise_on_every_rank
from reidkit.engine.atomic import atomic_copy, atomic_write_text
from reidkit.engine.checkpoint import (
    LAST_CHECKPOINT,
    CheckpointManager,
    Stateful,
    TrainingState,
    resolve_resume_path,
)
from reidkit.engine.progress import format_metrics, setup_logging
from reidkit.engine.report import RunReport, to_jsonable
from reidkit.engine.run_folder import (
    BEST_CHECKPOINT,
    MODEL_SPEC,
    REPORT_FILE,
    check_run_folder,
    clear_run_folder,
)
from reidkit.engine.tensorboard import ScalarLog
from reidkit.engine.trainer import StepFunction, Trainer
from reidkit.engine.weights import BEST_WEIGHTS, MODEL_WEIGHTS, save_weights

Evaluate = Callable[[], Any]
RANKS = (1, 5, 10)
BEST_METRIC = "mAP"


def evaluation_metrics(result: Any) -> dict[str, float]:
    """Flat metrics from what an evaluation returns.

    Args:
        result: a mapping of scalars, or a rank result with ``mAP``, ``mINP`` and ``cmc``
            (such as :class:`reidkit.RankResult`), which gives ``mAP``, ``mINP``, ``R1``,
            ``R5`` and ``R10`` (the ranks its ``cmc`` covers), and ``skipped_queries`` (an
            integer) when it counts them.
    """
    if isinstance(result, Mapping):
        return {
            str(name): value if checks.is_integer(value) else float(value)
            for name, value in result.items()
        }
    if all(hasattr(result, name) for name in ("mAP", "mINP", "cmc")):
        metrics = {"mAP": float(result.mAP), "mINP": float(result.mINP)}
        metrics.update({f"R{k}": float(result.cmc[k - 1]) for k in RANKS if k <= len(result.cmc)})
        skipped = getattr(result, "num_skipped_queries", None)
        if skipped is not None:
            metrics["skipped_queries"] = int(skipped)
        return metrics
    raise ValueError(
        "evaluate must return a mapping of scalars or a rank result with mAP, mINP and cmc, "
        f"got {type(result).__name__}"
    )


class EveryRankEvaluation:
    """An evaluation that runs on every rank (it may call collectives, e.g. to extract features
    in shards and gather them, see :func:`reidkit.evaluate_model`); its result counts on rank
    0. A plain function given to :meth:`TrainingRun.evaluate` runs on rank 0 alone.

    Args:
        evaluate: returns what :func:`evaluation_metrics` reads; called on every rank.
    """

    def __init__(self, evaluate: Evaluate) -> None:
        self.evaluate = evaluate

    def __call__(self) -> Any:
        return self.evaluate()


def _set_loader_epoch(batches: Iterable[Any], epoch: int) -> None:
    """Tell samplers with ``set_epoch`` (distributed, P x K) which epoch starts."""
    for holder in (
        batches,
        getattr(batches, "sampler", None),
        getattr(batches, "batch_sampler", None),
    ):
        set_epoch = getattr(holder, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


class TrainingRun:
    """Output folder, log, checkpoints and report shared by the stages of a run.

    A new run refuses a folder that holds another run's files (see
    :func:`~reidkit.engine.run_folder.check_run_folder`) unless it resumes it or ``overwrite``
    deletes them first.

    Every evaluation whose ``best_metric`` beats the earlier ones is the run's best: its
    checkpoint is copied to ``best.pt``, the inference model's weights (see
    :meth:`set_inference_model`) to ``best_model.safetensors``, and the report's ``best``
    records the stage, the epoch and the metrics.

    Args:
        output_dir: the run folder.
        stages: the stage names, in the order they run.
        config: the run's configuration, stored in the report.
        resume: ``None``, ``"auto"``, a folder or a checkpoint file (see
            :func:`~reidkit.engine.resolve_resume_path`).
        eval_every: evaluate every this many epochs (0: only after a stage's last epoch).
        checkpoint_every: write ``last.pt`` every this many epochs (and after the last one).
        overwrite: delete another run's files in ``output_dir`` instead of refusing it.
        best_metric: the evaluation metric whose largest value is the best.
        tensorboard: also write the scalars for TensorBoard (when it is installed, see
            :class:`~reidkit.engine.tensorboard.ScalarLog`).

    Attributes:
        logger: the ``reidkit`` logger.
        scalars: the TensorBoard scalars.
        report: the :class:`~reidkit.engine.RunReport`.
        checkpoints: the :class:`~reidkit.engine.CheckpointManager`.
    """

    def __init__(
        self,
        output_dir: str | Path,
        stages: Sequence[str],
        *,
        config: Any = None,
        resume: str | Path | None = None,
        eval_every: int = 0,
        checkpoint_every: int = 1,
        overwrite: bool = False,
        best_metric: str = BEST_METRIC,
        tensorboard: bool = True,
    ) -> None:
        checks.check_integer("eval_every", eval_every, 0)
        checks.check_integer("checkpoint_every", checkpoint_every, 1)
        self.output_dir = Path(output_dir)
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.best_metric = best_metric
        with raise_on_every_rank():
            if is_main_process():
                check_run_folder(self.output_dir, resume=resume, overwrite=overwrite)
                if overwrite:
                    clear_run_folder(self.output_dir)
        self._inference_model: nn.Module | None = None
        self.logger: logging.Logger = setup_logging(self.output_dir)
        self.report = RunReport(self.output_dir / REPORT_FILE, config)
        self.checkpoints = CheckpointManager(self.output_dir, stages)
        self.checkpoints.track("report", self.report)
        self.scalars = ScalarLog(self.output_dir, enabled=tensorboard)
        resume_path = resolve_resume_path(resume, self.output_dir)
        if resume_path is not None:
            state = self.checkpoints.load(resume_path)
            self.report.note_resume(state.stage, state.epoch)
            self.logger.info(
                "resumed from %s: stage %s, %d epochs done", resume_path, state.stage, state.epoch
            )
        elif resume is not None:
            self.logger.info(
                "no checkpoint in %s yet (%s): the run starts from its first epoch",
                self.output_dir,
                LAST_CHECKPOINT,
            )

    def describe_data(
        self,
        name: str,
        splits: Mapping[str, Mapping[str, int]],
        chance: Any = None,
    ) -> None:
        """Log the data set's splits and the chance level of its evaluation, and record both
        in the report (``data``).

        Args:
            name: the data set's name.
            splits: ``{split: {"identities": ..., "images": ..., "cameras": ...}}``, e.g.
                :meth:`reidkit.data.ReIDSplits.summary`.
            chance: what a random ranking scores on the evaluated split (a rank result or a
                mapping, see :func:`evaluation_metrics`, e.g. from
                :func:`reidkit.eval.chance_rank_result`); ``None``: not known.
        """
        columns = list(dict.fromkeys(column for counts in splits.values() for column in counts))
        header = "".join(f"{column:>12}" for column in columns)
        lines = [f"data set {name}:", "  " + "split".ljust(10) + header]
        for split, counts in splits.items():
            cells = "".join(f"{counts.get(column, '-'):>12}" for column in columns)
            lines.append("  " + split.ljust(10) + cells)
        metrics = None
        if chance is not None:
            metrics = evaluation_metrics(chance)
            lines.append(f"  chance level (random ranking): {format_metrics(metrics)}")
        self.logger.info("\n".join(lines))
        self.report.set_data(name, splits, metrics)

    def set_inference_model(self, model: nn.Module, spec: Mapping[str, Any]) -> None:
        """Keep the weights of ``model`` at the run's end and at its best evaluation.

        ``spec`` (JSON-able) says what ``model`` is, so that it can be rebuilt without the
        training code (see :func:`reidkit.load_model`); it is written to ``model.json`` now,
        the weights to ``best_model.safetensors`` at every new best evaluation and to
        ``model.safetensors`` by :meth:`finish`.
        """
        self._inference_model = model
        if is_main_process():
            text = json.dumps(to_jsonable(spec), indent=2) + "\n"
            atomic_write_text(text, self.output_dir / MODEL_SPEC)

    def track(self, name: str, obj: Stateful) -> Stateful:
        """Checkpoint ``obj`` under ``name`` (restored now if the run was resumed)."""
        return self.checkpoints.track(name, obj)

    def stage_completed(self, stage: str) -> bool:
        """Whether a resumed checkpoint already covers ``stage``: skip its set-up as well.

        Ask where the stage would run, before its set-up: when the checkpoint was written at
        the end of ``stage``, this restores the random generators of that moment (see
        :meth:`~reidkit.engine.CheckpointManager.stage_completed`).
        """
        return self.checkpoints.stage_completed(stage)

    def evaluate(self, stage: str, epoch: int, evaluate: Evaluate) -> dict[str, float]:
        """Run ``evaluate``, log and record its metrics, and share rank 0's with every rank.

        ``evaluate`` returns a mapping of scalars or a rank result (see
        :func:`evaluation_metrics`). A plain function runs on rank 0 only, so it must not call
        collectives (evaluate the unwrapped model, e.g.
        ``reidkit.distributed.unwrap_model(model)``); an :class:`EveryRankEvaluation` runs on
        every rank. An error raised by the evaluation on any rank is raised on every rank
        (instead of leaving the others waiting for rank 0's metrics).
        """
        metrics: dict[str, float] = {}
        every_rank = isinstance(evaluate, EveryRankEvaluation)
        with raise_on_every_rank():
            if every_rank or is_main_process():
                result = evaluate()
                if is_main_process():
                    metrics = evaluation_metrics(result)
        metrics = broadcast_object(metrics)
        self.report.log_evaluation(stage, epoch, metrics)
        self.scalars.add(f"{stage}/eval", epoch, metrics)
        self.logger.info(
            "[%s] evaluation after epoch %d: %s", stage, epoch, format_metrics(metrics)
        )
        return metrics

    def fit(
        self,
        stage: str,
        trainer: Trainer,
        batches: Iterable[Any],
        step: StepFunction,
        *,
        epochs: int,
        evaluate: Evaluate | None = None,
    ) -> dict[str, float]:
        """Train ``stage`` for ``epochs`` epochs (or the ones a resumed checkpoint has not done).

        Each epoch: ``set_epoch`` on the loader's sampler, :meth:`Trainer.run_epoch`, the
        schedulers' step, a log line and a report entry, evaluation when due (every
        ``eval_every`` epochs and after the last epoch), a checkpoint when due, the report.

        Args:
            stage: one of the run's stage names.
            trainer: the stage's optimisers, schedulers and AMP settings.
            batches: the training loader (iterated once per epoch).
            step: the step function (batch to loss, see :mod:`reidkit.engine.trainer`).
            epochs: number of epochs of the stage.
            evaluate: returns metrics such as ``{"mAP": ..., "R1": ...}`` or a
                :class:`reidkit.RankResult`; ``None``: no evaluation.

        Returns:
            The metrics of the stage's latest evaluation (``{}`` without one).
        """
        checks.check_integer("epochs", epochs, 0)
        if self.stage_completed(stage):
            self.logger.info("[%s] already completed by the resumed checkpoint; skipped", stage)
            return self.report.last_evaluation(stage)
        start = self.checkpoints.resume_epoch(stage, trainer)
        resumed = f", resumed after epoch {start}" if start else ""
        self.logger.info("[%s] ---- stage %s: %d epochs%s ----", stage, stage, epochs, resumed)
        for epoch in range(start + 1, epochs + 1):
            _set_loader_epoch(batches, epoch - 1)
            started = time.perf_counter()
            metrics = trainer.run_epoch(batches, step, desc=f"{stage} {epoch}/{epochs}")
            trainer.end_epoch()
            elapsed = time.perf_counter() - started
            self.report.log_epoch(stage, epoch, metrics, elapsed)
            self.scalars.add(stage, epoch, metrics)
            self.logger.info(
                "[%s] epoch %d/%d %s (%.1fs)",
                stage,
                epoch,
                epochs,
                format_metrics(metrics),
                elapsed,
            )
            last = epoch == epochs
            best = False
            if evaluate is not None and (
                last or (self.eval_every and epoch % self.eval_every == 0)
            ):
                best = self._note_best(stage, epoch, self.evaluate(stage, epoch, evaluate))
            if last or best or epoch % self.checkpoint_every == 0:
                self.checkpoints.save(TrainingState(stage, epoch, last), trainer)
            if best:
                self._keep_best()
            self.report.save()
        return self.report.last_evaluation(stage)

    def _note_best(self, stage: str, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record ``metrics`` as the run's best if its ``best_metric`` beats the best so far."""
        value = metrics.get(self.best_metric)
        if value is None:
            return False
        best = self.report.best
        if best is not None and value <= best["metrics"][self.best_metric]:
            return False
        weights = BEST_WEIGHTS if self._inference_model is not None else None
        self.report.set_best(stage, epoch, self.best_metric, metrics, BEST_CHECKPOINT, weights)
        self.logger.info(
            "[%s] best %s so far (%.4f) after epoch %d: %s",
            stage,
            self.best_metric,
            value,
            epoch,
            BEST_CHECKPOINT,
        )
        return True

    def _keep_best(self) -> None:
        """Copy the checkpoint just written to ``best.pt``, and the model's weights."""
        if is_main_process():
            atomic_copy(self.output_dir / LAST_CHECKPOINT, self.output_dir / BEST_CHECKPOINT)
            if self._inference_model is not None:
                save_weights(self._inference_model, self.output_dir / BEST_WEIGHTS)
        barrier()

    def finish(self, results: Mapping[str, Any] | None = None) -> Path:
        """Store final ``results`` in the report, write it and the inference model's weights,
        and return the report's path."""
        for name, value in (results or {}).items():
            self.report.set_result(name, value)
        if self._inference_model is not None and is_main_process():
            save_weights(self._inference_model, self.output_dir / MODEL_WEIGHTS)
        path = self.report.save()
        self.scalars.close()
        barrier()
        self.logger.info("report written to %s", path)
        return path
