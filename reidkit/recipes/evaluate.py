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

A text-to-image model (a UniPT or VAL-PAT run, :class:`~reidkit.models.TextToImageInferenceModel`)
is evaluated on a text-to-image data set (``synthetic_captions``, ``cuhk_pedes``, ...) by
text-to-image retrieval on its test split: every caption a query, every image in the gallery,
cosine similarities, the protocol of the training's evaluations (``task``:
``"text_to_image"``). On an image ReID data set its image features are ranked as any model's
(``task``: ``"image_reid"``: the transfer of its image encoder to ReID).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from reidkit.data import TEXT_DATASETS, build_test_transforms, build_text_dataset, make_test_loader
from reidkit.engine.atomic import atomic_write_text
from reidkit.engine.progress import LOGGER_NAME
from reidkit.eval import RankResult, ReIDEvaluator, evaluate_t2i_model, save_rank_grid
from reidkit.models import InferenceModel, TextToImageInferenceModel, load_model
from reidkit.recipes.common import check_data_root, load_dataset
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
    """Evaluate the model of ``run_dir`` on the query and gallery of a data set (on the
    captions and images of a text-to-image data set's test split, for a text-to-image model).

    Args:
        run_dir: a run folder with ``model.json`` and the weights.
        dataset: a data set name of :func:`reidkit.data.build_dataset`, or of
            :func:`reidkit.data.build_text_dataset` for a text-to-image model.
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
        ValueError: a text-to-image data set for a model that embeds images only, or an
            option that text-to-image retrieval does not have (``rerank``, ``rank_grid``,
            ``flip``, ``filename_pattern``).
    """
    if _text_dataset(dataset) is not None:
        text_options = {
            "rerank": rerank,
            "rank_grid": rank_grid,
            "flip": flip,
            "filename_pattern": filename_pattern,
        }
        given = [name for name, value in text_options.items() if value not in (False, None)]
        if given:
            raise ValueError(
                f"{', '.join(given)}: not available for the text-to-image data set {dataset!r} "
                "(they are options of image ReID)"
            )
        return _evaluate_text_to_image(
            run_dir,
            dataset,
            data_root,
            weights=weights,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            output_dir=output_dir,
        )
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
    folder = _folder(run_dir, output_dir, evaluation_name(dataset, rerank, weights))
    metrics = {
        **_description(run_dir, model, dataset, data_root, weights, "image_reid"),
        "rerank": rerank,
        "flip": flip,
        **_rank_metrics(result, num_query, len(splits.gallery)),
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
    return _write(metrics, folder)


def _text_dataset(name: str) -> str | None:
    """The key of a text-to-image data set name (``None``: not one)."""
    key = name.lower().replace("-", "_")
    return key if key in TEXT_DATASETS else None


def _evaluate_text_to_image(
    run_dir: str | Path,
    dataset: str,
    data_root: str | Path | None,
    *,
    weights: str,
    batch_size: int,
    num_workers: int,
    device: str | torch.device,
    output_dir: str | Path | None,
) -> RunEvaluation:
    """Text-to-image retrieval of the model of ``run_dir`` on the test split of ``dataset``."""
    from reidkit.recipes.text_to_image import BUILT_IN_TEXT_DATASETS

    root = None if data_root is None else str(data_root)
    check_data_root(SimpleNamespace(dataset=dataset, root=root), BUILT_IN_TEXT_DATASETS)
    model = load_model(run_dir, weights=weights, device=device)
    if not isinstance(model, TextToImageInferenceModel):
        raise ValueError(
            f"{dataset!r} is a text-to-image data set, and the model of {run_dir} (architecture "
            f"{model.spec.architecture!r}) embeds images only: evaluate it on an image ReID data "
            "set, or evaluate a unipt or valpat run"
        )
    protocol = build_text_dataset(dataset, root).protocol("test")
    spec = model.spec
    transform = build_test_transforms(spec.image_size, mean=spec.pixel_mean, std=spec.pixel_std)
    logging.getLogger(LOGGER_NAME).info(
        "evaluating %s (%s weights) on %s: %d captions, %d images",
        run_dir,
        weights,
        dataset,
        len(protocol.captions),
        len(protocol.gallery),
    )
    result = evaluate_t2i_model(
        model,
        model.encode_text,
        protocol,
        transform,
        model.tokenize,
        device,
        batch_size=batch_size,
        num_workers=num_workers,
        max_rank=CMC_RANKS,
    )
    metrics = {
        **_description(run_dir, model, dataset, data_root, weights, "text_to_image"),
        **_rank_metrics(result, len(protocol.captions), len(protocol.gallery)),
    }
    return _write(metrics, _folder(run_dir, output_dir, evaluation_name(dataset, False, weights)))


def _description(
    run_dir: str | Path,
    model: InferenceModel,
    dataset: str,
    data_root: str | Path | None,
    weights: str,
    task: str,
) -> dict[str, Any]:
    """What was evaluated, for ``metrics.json``."""
    trained_on = model.spec.trained_on.get("dataset")
    return {
        "dataset": dataset,
        "data_root": None if data_root is None else str(data_root),
        "run": str(run_dir),
        "weights": weights,
        "task": task,
        "metric": model.spec.metric,
        "trained_on": trained_on,
        "cross_domain": trained_on is not None and not _same_data(trained_on, dataset),
    }


def _rank_metrics(result: RankResult, num_query: int, num_gallery: int) -> dict[str, Any]:
    """The rank metrics of ``result``, for ``metrics.json``."""
    return {
        "num_query": num_query,
        "num_gallery": num_gallery,
        "scored_queries": result.num_valid_queries,
        "skipped_queries": num_query - result.num_valid_queries,
        "mAP": result.mAP,
        "mINP": result.mINP,
        **{f"R{k}": float(result.cmc[k - 1]) for k in (1, 5, 10) if k <= len(result.cmc)},
        "cmc": [float(value) for value in result.cmc],
    }


def _folder(run_dir: str | Path, output_dir: str | Path | None, name: str) -> Path:
    folder = Path(output_dir) if output_dir is not None else Path(run_dir) / EVAL_FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(metrics: dict[str, Any], folder: Path) -> RunEvaluation:
    atomic_write_text(json.dumps(metrics, indent=2) + "\n", folder / METRICS_FILE)
    evaluation = RunEvaluation(metrics, folder)
    logging.getLogger(LOGGER_NAME).info("%s; written to %s", evaluation.summary(), folder)
    return evaluation


def _same_data(trained_on: str, dataset: str) -> bool:
    """Whether two data set names name the same data (``-`` read as ``_``, any case)."""
    return trained_on.lower().replace("-", "_") == dataset.lower().replace("-", "_")
