"""Evaluating a trained run on any data set: the one it trained on, or another (cross-domain).

:func:`evaluate_run` loads the model of a run folder (:func:`reidkit.load_model`), reads the
query and gallery of a data set with the model's own input size and normalisation, ranks the
gallery for every query with the model's metric (optionally re-ranked), and writes into
``<run>/eval/<name>/``::

    metrics.json     mAP, mINP, CMC, R1/R5/R10, queries scored and skipped, what was evaluated
    rank_grid.png    the first queries and their top-10 results (with ``rank_grid=True``)

where ``<name>`` is the data set's name, with ``_rerank`` and ``_best`` when asked for. A query
whose identity has no gallery image from another camera cannot be scored and is skipped; their
number is reported (``skipped_queries``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from reidkit.data import build_test_transforms, make_test_loader
from reidkit.engine.atomic import atomic_write_text
from reidkit.engine.progress import LOGGER_NAME
from reidkit.eval import ReIDEvaluator, save_rank_grid
from reidkit.models import load_model
from reidkit.recipes.common import load_dataset
from reidkit.recipes.config import DataConfig
from reidkit.retrieval import extract_features

EVAL_FOLDER = "eval"
METRICS_FILE = "metrics.json"
RANK_GRID_FILE = "rank_grid.png"
CMC_RANKS = 20
"""Ranks of the CMC curve stored in ``metrics.json``."""


@dataclasses.dataclass(frozen=True)
class RunEvaluation:
    """The result of :func:`evaluate_run`.

    Attributes:
        metrics: what ``metrics.json`` holds.
        folder: where it was written.
    """

    metrics: dict[str, Any]
    folder: Path

    def summary(self) -> str:
        """One line: ``market1501: mAP 85.1 | R1 94.2 | R5 ... | 3 queries skipped``."""
        m = self.metrics
        values = " | ".join(f"{k} {100 * m[k]:.1f}" for k in ("mAP", "mINP", "R1", "R5", "R10"))
        return (
            f"{m['dataset']}: {values} (%, {m['scored_queries']} queries scored, "
            f"{m['skipped_queries']} skipped)"
        )


def evaluation_name(dataset: str, rerank: bool, weights: str) -> str:
    """The folder name of an evaluation under ``<run>/eval/``."""
    return dataset + ("_rerank" if rerank else "") + ("_best" if weights == "best" else "")


def evaluate_run(
    run_dir: str | Path,
    dataset: str,
    data_root: str | Path | None,
    *,
    filename_pattern: str | None = None,
    weights: str = "final",
    rerank: bool = False,
    rank_grid: bool = False,
    flip: bool = False,
    batch_size: int = 128,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    output_dir: str | Path | None = None,
) -> RunEvaluation:
    """Evaluate the model of ``run_dir`` on the query and gallery of a data set.

    Args:
        run_dir: a run folder with ``model.json`` and the weights.
        dataset: a data set name of :func:`reidkit.data.build_dataset`.
        data_root: its folder (``None`` only for the built-in data).
        filename_pattern: for ``dataset="image_folder"``, how file names give the person and
            the camera.
        weights: ``"final"`` or ``"best"`` (see :func:`reidkit.load_model`).
        rerank: k-reciprocal re-ranking of the distances.
        rank_grid: draw the first queries' top-10 results to ``rank_grid.png``.
        flip: average each image's features with its mirror's.
        batch_size, num_workers: of the test loader.
        device: where the model runs.
        output_dir: where to write (default ``<run_dir>/eval/<name>``).

    Raises:
        FileNotFoundError: no model in ``run_dir``, or no data set at ``data_root``.
        ConfigError: a data set that needs a folder and has none, or a bad pattern.
    """
    logger = logging.getLogger(LOGGER_NAME)
    data = DataConfig(
        dataset=dataset,
        root=None if data_root is None else str(data_root),
        batch_size=1,
        num_instances=1,
        filename_pattern=filename_pattern,
    )
    splits = load_dataset(data)
    model = load_model(run_dir, weights=weights, device=device)
    spec = model.spec
    transform = build_test_transforms(spec.image_size, mean=spec.pixel_mean, std=spec.pixel_std)
    loader = make_test_loader(
        splits.query, splits.gallery, transform, batch_size=batch_size, num_workers=num_workers
    )
    logger.info(
        "evaluating %s (%s weights) on %s: %d queries, %d gallery images",
        run_dir,
        weights,
        dataset,
        len(splits.query),
        len(splits.gallery),
    )
    extracted = extract_features(model, loader, flip, device, desc=f"Evaluating on {dataset}")
    num_query = len(splits.query)
    evaluator = ReIDEvaluator(num_query, spec.metric, re_rank=rerank, max_rank=CMC_RANKS)
    evaluator.update(extracted.features, extracted.pids, extracted.camids)
    distances = evaluator.distances()
    result = evaluator.compute()
    folder = (
        Path(output_dir)
        if output_dir is not None
        else (Path(run_dir) / EVAL_FOLDER / evaluation_name(dataset, rerank, weights))
    )
    folder.mkdir(parents=True, exist_ok=True)
    trained_on = spec.trained_on.get("dataset")
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "data_root": None if data_root is None else str(data_root),
        "run": str(run_dir),
        "weights": weights,
        "rerank": rerank,
        "flip": flip,
        "metric": spec.metric,
        "trained_on": trained_on,
        "cross_domain": trained_on is not None and not _same_data(trained_on, dataset),
        "num_query": num_query,
        "num_gallery": len(splits.gallery),
        "scored_queries": result.num_valid_queries,
        "skipped_queries": num_query - result.num_valid_queries,
        "mAP": result.mAP,
        "mINP": result.mINP,
        **{f"R{k}": float(result.cmc[k - 1]) for k in (1, 5, 10) if k <= len(result.cmc)},
        "cmc": [float(value) for value in result.cmc],
        "rank_grid": None,
    }
    if rank_grid:
        q = num_query
        grid = save_rank_grid(
            distances,
            extracted.paths[:q],
            extracted.paths[q:],
            extracted.pids[:q],
            extracted.pids[q:],
            extracted.camids[:q],
            extracted.camids[q:],
            folder / RANK_GRID_FILE,
        )
        metrics["rank_grid"] = grid.name
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", folder / METRICS_FILE)
    evaluation = RunEvaluation(metrics, folder)
    logger.info("%s; written to %s", evaluation.summary(), folder)
    return evaluation


def _same_data(trained_on: str, dataset: str) -> bool:
    """Whether two data set names name the same data (``-`` read as ``_``, any case)."""
    return trained_on.lower().replace("-", "_") == dataset.lower().replace("-", "_")
