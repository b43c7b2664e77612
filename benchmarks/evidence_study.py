"""Evidence that each method's own parts work: every ablation on the built-in data, over seeds.

The study trains, on the built-in ``synthetic_local_cues`` data (look-alike identities told
apart by local cues, with occluders; :class:`reidkit.data.SyntheticReID`), each variant below
with several seeds, through the recipes' public API (the registry's presets, the recipes' own
ablation helpers and :func:`reidkit.recipes.replace_field`):

* CLIP-ReID, the baseline MMPL extends, and CLIP-ReID without its image-to-text loss (whether
  the learned text features reach retrieval at all);
* MMPL, and MMPL without the selector agents (class-token attention selects the patches,
  table 3), without patch-to-token alignment (table 4), without collaborative prompts
  (table 5), and with the alignment weighted as the contrast (``beta = 1``, figs. 7-8);
* AAformer with the optimal-transport assignment, with fixed horizontal stripes (when the
  installed :mod:`reidkit.parts` offers ``"stripes"``) and with nearest-prototype assignment
  (table V);
* PCL-CLIP supervised and unsupervised, against the untrained model (the CLIP model the runs
  start from, evaluated before any training).

It writes ``results/evidence.json`` (per variant the mAP and R1 mean and standard deviation over
the seeds, each compared with chance, and the comparisons of every ablation with its full
method, paired by seed, with Student's t intervals), ``results/evidence.csv`` and
``results/evidence.png``, and prints the table. For MMPL it also records the final
patch-to-token OT loss against its chance level (``K ln L`` for balanced identities) and the
agents' overlap with the best selection (the ``M`` patches of highest score) against random
(``M / M_c``); for AAformer, how much of a patch's row and column its [PART] tells
(:func:`position_share`); for unsupervised PCL-CLIP, the adjusted Rand index of the pseudo
labels against the identities, the look-alike groups and the cameras after every clustering.

The study sizes (epochs) are set here as overrides of the ``tiny`` presets, not in the presets;
the whole study takes about 30 minutes on two CPU cores. The runs go to ``--runs-dir`` (one
folder per variant and seed); a finished run whose configuration matches is read back instead
of trained again, so an interrupted study continues where it stopped. ::

    python benchmarks/evidence_study.py              # the whole study, five seeds
    python benchmarks/evidence_study.py --quick      # one seed, one epoch per stage
    python benchmarks/evidence_study.py --variants mmpl mmpl_no_agent --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from harness import RESULTS_DIR, describe_machine

from reidkit.data import build_dataset
from reidkit.engine.run_folder import CONFIG_FILE, REPORT_FILE
from reidkit.eval import evaluate_rank
from reidkit.recipes import Runtime, aaformer, get_field, mmpl, pcl_clip, replace_field
from reidkit.recipes.config import ConfigError
from reidkit.recipes.registry import get_recipe
from reidkit.recipes.serialization import config_differences, config_from_file, read_config_file

DATASET = "synthetic_local_cues"
SEEDS = (0, 1, 2, 3, 4)
PROBE_FILE = "evidence_probes.json"
CHANCE_DRAWS = 200
MMPL_DIAGNOSTICS = "stage1_diagnostics"
PCL_PSEUDO_LABELS = "pseudo_labels"
"""Where the reports keep MMPL's stage-1 diagnostics and PCL-CLIP's clusterings, when they do;
without them the probes below measure the same quantities during training."""
CONFIDENCE = 0.95
"""An effect counts as beyond seed noise when the two-sided confidence interval of the
difference at this level (Student's t) excludes zero."""

# The study sizes: overrides of the tiny presets, by section (``""``: the configuration itself).
FULL_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "clip_reid": {
        "prompt_stage": {"epochs": 30},
        "image_stage": {"epochs": 60, "milestones": (45,)},
    },
    "mmpl": {
        "": {"compare_baseline": False},
        "prompt_stage": {"epochs": 30},
        "agent": {"epochs": 20},
        "image_stage": {"epochs": 60, "milestones": (45,)},
    },
    "aaformer": {"optimizer": {"epochs": 40}, "": {"part_maps": 0}},
    "pcl_clip": {"optimizer": {"epochs": 30, "milestones": (20,)}},
}
QUICK_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "clip_reid": {
        "prompt_stage": {"epochs": 1, "warmup_epochs": 0},
        "image_stage": {"epochs": 1, "warmup_epochs": 0, "milestones": ()},
    },
    "mmpl": {
        "": {"compare_baseline": False},
        "prompt_stage": {"epochs": 1, "warmup_epochs": 0},
        "agent": {"epochs": 1},
        "image_stage": {"epochs": 1, "warmup_epochs": 0, "milestones": ()},
    },
    "aaformer": {"optimizer": {"epochs": 1, "warmup_epochs": 0}, "": {"part_maps": 0}},
    "pcl_clip": {"optimizer": {"epochs": 1, "warmup_epochs": 0, "milestones": ()}},
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the study.

    Attributes:
        name: its key in the results.
        method: the method it belongs to (rows of one method are compared with its first).
        recipe: the registry name of the recipe that trains it.
        result_key: its entry in the report's ``results``.
        describe: one line for the table.
        make: ``make(tiny_config) -> config``, the variant's configuration; ``None``: the
            untrained model of the recipe (evaluated, not trained).
        compare_with: the variant it is compared with (``None``: chance only).
        preset: the preset it starts from.
    """

    name: str
    method: str
    recipe: str
    result_key: str
    describe: str
    make: Callable[[Any], Any] | None
    compare_with: str | None = None
    preset: str = "tiny"


def _identity(config: Any) -> Any:
    return config


def _setting(field: str, value: Any) -> Callable[[Any], Any]:
    def make(config: Any) -> Any:
        return replace_field(config, field, value)

    return make


VARIANTS: tuple[Variant, ...] = (
    Variant("clip_reid", "CLIP-ReID", "clip_reid", "clip_reid", "CLIP-ReID", _identity),
    Variant(
        "clip_reid_no_text",
        "CLIP-ReID",
        "clip_reid",
        "clip_reid",
        "CLIP-ReID without the image-to-text loss (the prompts unused in stage 2)",
        _setting("loss.image_to_text_weight", 0.0),
        "clip_reid",
    ),
    Variant("mmpl", "MMPL", "mmpl", "mmpl", "MMPL", _identity, "clip_reid"),
    Variant(
        "mmpl_no_agent",
        "MMPL",
        "mmpl",
        "mmpl",
        "MMPL, class-token attention instead of agents",
        mmpl.without_agent,
        "mmpl",
    ),
    Variant(
        "mmpl_no_alignment",
        "MMPL",
        "mmpl",
        "mmpl",
        "MMPL without patch-to-token alignment",
        mmpl.without_alignment,
        "mmpl",
    ),
    Variant(
        "mmpl_no_visual_prompts",
        "MMPL",
        "mmpl",
        "mmpl",
        "MMPL without collaborative prompts",
        mmpl.without_visual_prompts,
        "mmpl",
    ),
    Variant(
        "mmpl_beta1",
        "MMPL",
        "mmpl",
        "mmpl",
        "MMPL with the alignment weighted as the contrast (beta = 1, alpha / beta = 1)",
        _setting("beta", 1.0),
        "mmpl",
    ),
    Variant(
        "aaformer_sinkhorn",
        "AAformer",
        "aaformer",
        "aaformer",
        "AAformer, OT assignment",
        _setting("assignment", "sinkhorn"),
    ),
    Variant(
        "aaformer_stripes",
        "AAformer",
        "aaformer",
        "aaformer",
        "AAformer, fixed stripes",
        _setting("assignment", "stripes"),
        "aaformer_sinkhorn",
    ),
    Variant(
        "aaformer_nearest",
        "AAformer",
        "aaformer",
        "aaformer",
        "AAformer, nearest prototype",
        _setting("assignment", "nearest"),
        "aaformer_sinkhorn",
    ),
    Variant("pcl_clip_untrained", "PCL-CLIP", "pcl_clip", "", "untrained CLIP", None),
    Variant(
        "pcl_clip_supervised",
        "PCL-CLIP",
        "pcl_clip",
        "pcl_clip_supervised",
        "PCL-CLIP, supervised",
        _identity,
        "pcl_clip_untrained",
    ),
    Variant(
        "pcl_clip_unsupervised",
        "PCL-CLIP",
        "pcl_clip",
        "pcl_clip_unsupervised",
        "PCL-CLIP, unsupervised",
        _identity,
        "pcl_clip_untrained",
        preset=pcl_clip.preset_name("tiny", "unsupervised"),
    ),
)
VARIANT_NAMES = tuple(variant.name for variant in VARIANTS)


def unavailable(variant: Variant) -> str | None:
    """Why ``variant`` cannot run with the installed reidkit, or ``None``."""
    if variant.recipe == "aaformer" and variant.make is not None:
        choice = variant.name.removeprefix("aaformer_")
        if choice not in aaformer.ASSIGNMENTS:
            return (
                f"AAformer offers the assignments {aaformer.ASSIGNMENTS}, not {choice!r}, in "
                "this version of reidkit"
            )
    return None


def with_sizes(config: Any, sizes: Mapping[str, Mapping[str, Any]]) -> Any:
    """``config`` with each section's fields replaced at once (so that a smaller ``epochs``
    and its ``warmup_epochs`` are checked together)."""
    for section, values in sizes.items():
        if not section:
            config = dataclasses.replace(config, **values)
        else:
            config = replace_field(
                config, section, dataclasses.replace(get_field(config, section), **values)
            )
    return config


def variant_config(variant: Variant, quick: bool) -> Any:
    """The configuration of ``variant`` at the study's size, on the study's data."""
    recipe = get_recipe(variant.recipe)
    config = recipe.presets[variant.preset]
    config = replace_field(config, "data.dataset", DATASET)
    sizes = (QUICK_SIZES if quick else FULL_SIZES)[variant.recipe]
    config = with_sizes(config, sizes)
    return config if variant.make is None else variant.make(config)


# --- Probes: quantities that the reports do not (yet) hold, recorded while a run trains. ------
# Each probe wraps one method of the library for the duration of a run and restores it after;
# when the reports carry these numbers, read them from there instead and drop the probe.


@contextmanager
def record_agent_overlap(records: dict[str, list[float]]) -> Iterator[None]:
    """Record, for every training batch of every selector agent, the overlap of its selection
    (top ``M`` of its probabilities) with the best selection (top ``M`` of the scores ``s^e``
    its reward is computed from): ``|selected & best| / M``, under ``records["level_<k>"]``."""
    from reidkit.selection import InformationSelectorAgent
    from reidkit.selection.attention import top_indices

    original = InformationSelectorAgent.forward
    levels: dict[int, int] = {}

    def forward(self: Any, features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        output = original(self, features, *args, **kwargs)
        scores = args[0] if args else kwargs.get("scores")
        if self.training and scores is not None:
            level = levels.setdefault(id(self), len(levels))
            best = top_indices(scores.detach(), self.num_selected)
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, output.indices, True)
            hits = chosen.gather(1, best).float().mean().item()
            records.setdefault(f"level_{level}", []).append(hits)
        return output

    InformationSelectorAgent.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        InformationSelectorAgent.forward = original  # type: ignore[method-assign]


PARTITIONS = ("groups", "cameras")
"""What the pseudo labels are compared with besides the identities."""


def train_partitions() -> dict[str, list[int]]:
    """Per train image of the study's data, in the order of the recipes' train feature loader
    (the train split as listed): its look-alike group (runs of ``members_per_group``
    consecutive identities of the file names, see :class:`reidkit.data.SyntheticReID`) and
    its camera."""
    dataset = build_dataset(DATASET, None)
    size = dataset.config.members_per_group
    return {
        "groups": [(int(Path(path).name[:4]) - 1) // size for path, _, _ in dataset.train],
        "cameras": [camid for _, _, camid in dataset.train],
    }


@contextmanager
def record_pseudo_label_ari(
    records: list[dict[str, float]], partitions: Mapping[str, Sequence[int]] | None = None
) -> Iterator[None]:
    """Record, after every clustering of unsupervised PCL-CLIP, the adjusted Rand index of its
    pseudo labels against the true identities (outliers counted as clusters of their own), as
    ``ari_<name>`` against each of ``partitions`` (one label per train image, in the order
    the images are labelled) and the number of outliers and clusters."""
    from sklearn.metrics import adjusted_rand_score

    original = getattr(pcl_clip.EpochBatches, "pseudo_labels", None)
    if original is None:  # the recipe labels elsewhere (and reports the index itself)
        yield
        return

    def pseudo_labels(self: Any, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        labels = original(self, features, pids)
        if self.config.mode == "unsupervised":
            values = labels.cpu().numpy().copy()
            outliers = values < 0
            values[outliers] = values.max() + 1 + np.arange(int(outliers.sum()))
            truth = pids.cpu().numpy()
            record = {
                "epoch": self.epoch + 1,
                "ari": float(adjusted_rand_score(truth, values)),
                "outliers": int(outliers.sum()),
                "clusters": len(set(labels[labels >= 0].tolist())),
            }
            for name, partition in (partitions or {}).items():
                if len(partition) == len(values):
                    record[f"ari_{name}"] = float(adjusted_rand_score(partition, values))
            records.append(record)
        return labels

    pcl_clip.EpochBatches.pseudo_labels = pseudo_labels  # type: ignore[method-assign]
    try:
        yield
    finally:
        pcl_clip.EpochBatches.pseudo_labels = original  # type: ignore[method-assign]


def mmpl_diagnostics(
    report: Mapping[str, Any], probes: Mapping[str, Any], config: Any, num_classes: int
) -> dict[str, Any]:
    """The final OT loss against its chance level and the agents' overlap with the best
    selection against random, for one MMPL run.

    The OT loss ``L_otce`` is a cross-entropy over the ``L`` identities summed over the ``K``
    levels: a model that cannot tell the identities apart scores ``K ln L``. A random selection
    of ``M`` of ``M_c`` patches overlaps the best one by ``M / M_c`` on average. The overlap is
    the mean over the batches of the last stage-1 epoch. When the report holds the recipe's own
    measurement (``results["stage1_diagnostics"]``), that is used instead.
    """
    levels = config.levels
    reported = report["results"].get(MMPL_DIAGNOSTICS)
    if reported is not None:  # the recipe's own measurement, over the whole train split
        out: dict[str, Any] = {}
        if "otce" in reported:
            out["ot_loss"], out["ot_loss_chance"] = reported["otce"], reported["otce_chance"]
        if all("overlap" in level for level in reported["levels"]):
            out["agent_overlap"] = [level["overlap"] for level in reported["levels"]]
            out["agent_overlap_random"] = [level["random_overlap"] for level in reported["levels"]]
        return out
    out = {}
    epochs = report["stages"]["prompts"]["epochs"]
    if config.alignment.enabled and epochs and "otce" in epochs[-1]:
        out["ot_loss"] = float(epochs[-1]["otce"])
        out["ot_loss_chance"] = levels.count * math.log(num_classes)
    overlap = probes.get("agent_overlap", {})
    if overlap:
        per_epoch = max(1, len(next(iter(overlap.values()))) // len(epochs))
        out["agent_overlap"] = [
            statistics.fmean(overlap[f"level_{k}"][-per_epoch:]) for k in range(levels.count)
        ]
        out["agent_overlap_random"] = [
            kept / count for kept, count in zip(levels.selected, levels.patch_counts)
        ]
    return out


def position_share(part_mask: torch.Tensor, grid: tuple[int, int]) -> dict[str, float]:
    """How much of a patch's position its [PART] tells: the correlation ratio
    ``eta^2 = 1 - sum_p sum_{n in Phi_p} (x_n - mean_p x)^2 / (G sum_n (x_n - mean x)^2)`` of
    the patch row and of the patch column ``x``, averaged over everything but the sets.

    Args:
        part_mask: ``(..., P, N)`` the sets ``Phi_p`` of ``P`` [PART]s in ``G`` groups, each
            group a partition of the ``N = h * w`` patches (row-major).
        grid: ``(h, w)``.

    Returns:
        ``{"row": eta^2, "column": eta^2}``: 1 when a part's patches share one row (column), 0
        when every part spans the rows (columns) as the whole image does; ``1 - 1 / G^2`` for
        ``G`` equal horizontal stripes of a tall grid.
    """
    grid_h, grid_w = grid
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)
    columns = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)
    mask = part_mask.to(torch.float64)
    groups = mask.sum((-2, -1)) / mask.shape[-1]
    out = {}
    for name, position in (("row", rows), ("column", columns)):
        size = mask.sum(-1).clamp_min(1.0)
        mean = (mask * position).sum(-1) / size
        within = (mask * (position - mean[..., None]) ** 2).sum((-2, -1))
        total = groups * ((position - position.mean()) ** 2).sum()
        out[name] = float((1.0 - within / total).mean())
    return out


def part_layout(folder: Path, images: int = 32) -> dict[str, float]:
    """:func:`position_share` of a trained AAformer run's sets ``Phi_p``, over the first
    ``images`` query images, every head and every layer with [PART]s: whether its parts are
    places (stripes: near 1 for rows) or not (near 0)."""
    from reidkit import load_model
    from reidkit.data import build_test_transforms, make_test_loader
    from reidkit.parts import AAformer

    model = load_model(folder)
    network = next(module for module in model.modules() if isinstance(module, AAformer))
    spec = model.spec
    transform = build_test_transforms(spec.image_size, mean=spec.pixel_mean, std=spec.pixel_std)
    query = build_dataset(DATASET, None).query[:images]
    batch = next(iter(make_test_loader(query, [], transform, batch_size=images)))[0]
    with torch.no_grad():
        model(batch)
    shares = [
        position_share(cast(torch.Tensor, layer.last_part_mask), network.grid_size)
        for layer in network.attention_layers()
        if layer.last_part_mask is not None and layer.last_part_mask.shape[-2] > 0
    ]
    return {
        f"part_{name}_share": statistics.fmean(share[name] for share in shares)
        for name in ("row", "column")
    }


# --- Runs -----------------------------------------------------------------------------------


def finished_report(folder: Path, recipe: str, config: Any) -> dict[str, Any] | None:
    """The report of a finished run of ``config`` in ``folder``, else ``None``."""
    report_file, config_file = folder / REPORT_FILE, folder / CONFIG_FILE
    if not (report_file.is_file() and config_file.is_file()):
        return None
    report = json.loads(report_file.read_text(encoding="utf-8"))
    if not report.get("results"):
        return None
    saved = read_config_file(config_file)
    try:
        previous = config_from_file(type(config), {}, saved)
    except ConfigError:
        return None
    if saved.recipe != recipe or config_differences(previous, config):
        return None
    return report


def train_variant(
    variant: Variant, config: Any, seed: int, folder: Path, num_classes: int
) -> dict[str, Any]:
    """Train (or read back) one run; its mAP, R1, wall time and diagnostics."""
    probes_file = folder / PROBE_FILE
    report = finished_report(folder, variant.recipe, config)
    if report is None or not probes_file.is_file():
        probes: dict[str, Any] = {}
        overlap: dict[str, list[float]] = {}
        ari: list[dict[str, float]] = []
        runtime = Runtime(
            output_dir=str(folder), seed=seed, device="cpu", num_workers=0, overwrite=True
        )
        partitions = train_partitions() if variant.recipe == "pcl_clip" else None
        with record_agent_overlap(overlap), record_pseudo_label_ari(ari, partitions):
            get_recipe(variant.recipe).train(config, runtime)
        probes = {"agent_overlap": overlap, "pseudo_label_ari": ari}
        probes_file.write_text(json.dumps(probes), encoding="utf-8")
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
    probes = json.loads(probes_file.read_text(encoding="utf-8"))
    metrics = report["results"][variant.result_key]
    run: dict[str, Any] = {
        "seed": seed,
        "mAP": metrics["mAP"],
        "R1": metrics["R1"],
        "wall_s": report["timing"]["wall_time_s"],
    }
    if variant.recipe == "mmpl":
        run.update(mmpl_diagnostics(report, probes, config, num_classes))
    if variant.recipe == "aaformer":
        run.update(part_layout(folder))
    reported = report["results"].get(PCL_PSEUDO_LABELS)
    if reported is not None:  # the recipe's own record of every clustering
        run["pseudo_label_ari"] = [
            {
                "epoch": entry["epoch"],
                "ari": entry["adjusted_rand_index"],
                "clusters": entry["clusters"],
                "outliers": entry["outliers"],
            }
            for entry in reported["epochs"]
        ]
    elif probes.get("pseudo_label_ari"):
        run["pseudo_label_ari"] = probes["pseudo_label_ari"]
    for name in PARTITIONS:
        if probes.get("pseudo_label_ari") and f"ari_{name}" in probes["pseudo_label_ari"][0]:
            run[f"pseudo_label_ari_{name}"] = [
                epoch[f"ari_{name}"] for epoch in probes["pseudo_label_ari"]
            ]
    return run


def evaluate_untrained(variant: Variant, config: Any, seed: int) -> dict[str, Any]:
    """The model the recipe's runs start from (same seed, same weights), evaluated as the
    recipe evaluates it: the untrained baseline."""
    from reidkit.models import PCLCLIPModel
    from reidkit.recipes.common import begin, build_clip, build_clip_data, rank_evaluation

    start = time.perf_counter()
    runtime = Runtime(seed=seed, device="cpu", num_workers=0)
    context = begin(runtime)
    clip_model = build_clip(config.clip, context.device, frozen=False)
    data = build_clip_data(
        config.clip, config.data, runtime=runtime, device=context.device, train_loader=False
    )
    model = PCLCLIPModel(clip_model, data.dataset.num_train_pids)
    result = rank_evaluation(model, data, context.device, normalize=True)()
    return {
        "seed": seed,
        "mAP": result.mAP,
        "R1": result.rank(1),
        "wall_s": time.perf_counter() - start,
    }


def chance_level(draws: int = CHANCE_DRAWS, seed: int = 0) -> dict[str, float]:
    """mAP and R1 of random rankings of the study's test split (mean over ``draws``)."""
    dataset = build_dataset(DATASET, None)
    q_pids, q_cams = (np.array(values) for values in zip(*[(p, c) for _, p, c in dataset.query]))
    g_pids, g_cams = (np.array(values) for values in zip(*[(p, c) for _, p, c in dataset.gallery]))
    generator = np.random.default_rng(seed)
    maps, r1s = [], []
    for _ in range(draws):
        distances = generator.random((len(q_pids), len(g_pids)))
        result = evaluate_rank(distances, q_pids, g_pids, q_cams, g_cams)
        maps.append(result.mAP)
        r1s.append(result.rank(1))
    return {"mAP": float(np.mean(maps)), "R1": float(np.mean(r1s))}


def summarise(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (``None`` for one value)."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def compare(a: Mapping[str, Any], b: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """``a - b`` in ``metric``, its standard error over the seeds and whether it is beyond seed
    noise: whether the :data:`CONFIDENCE` interval of the difference excludes zero.

    When both ran the same seeds the runs are paired (a seed draws the initial weights and the
    batches of every variant), and the test is on the per-seed differences ``d``: standard error
    ``s_d / sqrt(n)`` with ``n - 1`` degrees of freedom. Otherwise the means are independent
    (Welch): ``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the Welch-Satterthwaite degrees of
    freedom. ``stderr``, ``dof`` and ``beyond_noise`` are ``None`` when either has one seed
    (or, paired, when all differences are equal).
    """
    from scipy.stats import t as student_t

    runs_a = {run["seed"]: run[metric] for run in a["runs"]}
    runs_b = {run["seed"]: run[metric] for run in b["runs"]}
    delta = statistics.fmean(runs_a.values()) - statistics.fmean(runs_b.values())
    paired = runs_a.keys() == runs_b.keys()
    out: dict[str, Any] = {
        "delta": delta,
        "paired": paired,
        "stderr": None,
        "dof": None,
        "ci_halfwidth": None,
        "beyond_noise": None,
    }
    n_a, n_b = len(runs_a), len(runs_b)
    if min(n_a, n_b) < 2:
        return out
    if paired:
        differences = [runs_a[seed] - runs_b[seed] for seed in runs_a]
        stderr = statistics.stdev(differences) / math.sqrt(n_a)
        dof = float(n_a - 1)
    else:
        share_a = statistics.variance(runs_a.values()) / n_a
        share_b = statistics.variance(runs_b.values()) / n_b
        stderr = math.sqrt(share_a + share_b)
        dof = (share_a + share_b) ** 2 / (share_a**2 / (n_a - 1) + share_b**2 / (n_b - 1))
    if stderr == 0.0:
        return out
    halfwidth = float(student_t.ppf(0.5 + CONFIDENCE / 2, dof)) * stderr
    out.update(stderr=stderr, dof=dof, ci_halfwidth=halfwidth, beyond_noise=abs(delta) > halfwidth)
    return out


def above_chance(entry: Mapping[str, Any], chance: Mapping[str, float]) -> dict[str, Any]:
    """Each metric's margin over chance, and whether every seed is above it."""
    return {
        metric: {
            "margin": entry[metric]["mean"] - chance[metric],
            "every_seed_above": all(run[metric] > chance[metric] for run in entry["runs"]),
        }
        for metric in ("mAP", "R1")
    }


def run_study(
    variants: Sequence[Variant], seeds: Sequence[int], runs_dir: Path, quick: bool
) -> dict[str, Any]:
    """Train every variant with every seed; the contents of ``evidence.json``."""
    chance = chance_level()
    num_classes = build_dataset(DATASET, None).num_train_pids
    entries: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for variant in variants:
        reason = unavailable(variant)
        if reason is not None:
            skipped[variant.name] = reason
            print(f"[skip] {variant.name}: {reason}", flush=True)
            continue
        config = variant_config(variant, quick)
        runs = []
        for seed in seeds:
            print(f"[run] {variant.name} seed {seed}", flush=True)
            if variant.make is None:
                runs.append(evaluate_untrained(variant, config, seed))
            else:
                folder = runs_dir / variant.name / f"seed{seed}"
                runs.append(train_variant(variant, config, seed, folder, num_classes))
        entry: dict[str, Any] = {
            "method": variant.method,
            "recipe": variant.recipe,
            "description": variant.describe,
            "runs": runs,
            "mAP": summarise([run["mAP"] for run in runs]),
            "R1": summarise([run["R1"] for run in runs]),
        }
        entry["vs_chance"] = above_chance(entry, chance)
        entry.update(diagnostics_summary(runs))
        entries[variant.name] = entry
    comparisons = [
        {
            "variant": variant.name,
            "against": variant.compare_with,
            **{
                metric: compare(entries[variant.name], entries[variant.compare_with], metric)
                for metric in ("mAP", "R1")
            },
        }
        for variant in variants
        if variant.compare_with in entries and variant.name in entries
    ]
    return {
        "command": "python benchmarks/evidence_study.py " + " ".join(sys.argv[1:]),
        "machine": describe_machine(),
        "dataset": DATASET,
        "quick": quick,
        "seeds": list(seeds),
        "sizes": QUICK_SIZES if quick else FULL_SIZES,
        "chance": chance,
        "confidence": CONFIDENCE,
        "variants": entries,
        "comparisons": comparisons,
        "skipped": skipped,
    }


def diagnostics_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over the seeds of the MMPL diagnostics, and the per-epoch ARI of unsupervised
    PCL-CLIP (mean over the seeds, epoch by epoch)."""
    out: dict[str, Any] = {}
    for key in ("ot_loss", "ot_loss_chance", "part_row_share", "part_column_share"):
        if all(key in run for run in runs):
            out[key] = summarise([run[key] for run in runs])
    for key in ("agent_overlap", "agent_overlap_random"):
        if all(key in run for run in runs):
            out[key] = [statistics.fmean(level) for level in zip(*(run[key] for run in runs))]
    if all("pseudo_label_ari" in run for run in runs):
        curves = [[epoch["ari"] for epoch in run["pseudo_label_ari"]] for run in runs]
        out["pseudo_label_ari"] = [statistics.fmean(epoch) for epoch in zip(*curves)]
    for key in (f"pseudo_label_ari_{name}" for name in PARTITIONS):
        if all(key in run for run in runs):
            curves = [run[key] for run in runs]
            out[key] = [statistics.fmean(epoch) for epoch in zip(*curves)]
    return out


# --- Output ---------------------------------------------------------------------------------


def table_rows(study: Mapping[str, Any]) -> list[list[str]]:
    """Header and one row per variant: mAP and R1 (mean, std) in percent, chance, effect."""

    def cell(summary: Mapping[str, float | None]) -> str:
        std = summary["std"]
        return f"{100 * summary['mean']:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")

    effects = {item["variant"]: item for item in study["comparisons"]}
    rows = [["variant", "mAP", "R1", "chance mAP", "chance R1", "vs", "ΔmAP", "beyond noise"]]
    for name, entry in study["variants"].items():
        effect = effects.get(name)
        rows.append(
            [
                name,
                cell(entry["mAP"]),
                cell(entry["R1"]),
                f"{100 * study['chance']['mAP']:.1f}",
                f"{100 * study['chance']['R1']:.1f}",
                "" if effect is None else effect["against"],
                "" if effect is None else f"{100 * effect['mAP']['delta']:+.1f}",
                "" if effect is None else str(effect["mAP"]["beyond_noise"]),
            ]
        )
    return rows


def print_table(study: Mapping[str, Any]) -> None:
    rows = table_rows(study)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)))
    for name, entry in study["variants"].items():
        if "ot_loss" in entry:
            print(
                f"{name}: OT loss {entry['ot_loss']['mean']:.3f} (chance "
                f"{entry['ot_loss_chance']['mean']:.3f})",
                end="",
            )
            if "agent_overlap" in entry:
                ours = "/".join(f"{value:.2f}" for value in entry["agent_overlap"])
                rand = "/".join(f"{value:.2f}" for value in entry["agent_overlap_random"])
                print(f"; agent overlap {ours} (random {rand})", end="")
            print()
        if "part_row_share" in entry:
            print(
                f"{name}: the [PART] sets explain {entry['part_row_share']['mean']:.2f} of the "
                f"patch rows' variance and {entry['part_column_share']['mean']:.2f} of the columns'"
            )
        if "pseudo_label_ari" in entry:
            curve = ", ".join(f"{value:.2f}" for value in entry["pseudo_label_ari"])
            print(f"{name}: pseudo-label ARI per epoch {curve}")
        for partition in PARTITIONS:
            if f"pseudo_label_ari_{partition}" in entry:
                curve = ", ".join(
                    f"{value:.2f}" for value in entry[f"pseudo_label_ari_{partition}"]
                )
                print(f"{name}: pseudo-label ARI against the {partition} per epoch {curve}")
    for name, reason in study["skipped"].items():
        print(f"{name}: skipped ({reason})")


def write_csv(study: Mapping[str, Any], path: Path) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(
            [
                "variant",
                "method",
                "seeds",
                "mAP_mean",
                "mAP_std",
                "R1_mean",
                "R1_std",
                "chance_mAP",
                "chance_R1",
                "against",
                "delta_mAP",
                "stderr_mAP",
                "ci_halfwidth_mAP",
                "paired",
                "beyond_noise",
            ]
        )
        effects = {item["variant"]: item for item in study["comparisons"]}
        for name, entry in study["variants"].items():
            effect = effects.get(name, {})
            writer.writerow(
                [
                    name,
                    entry["method"],
                    len(entry["runs"]),
                    entry["mAP"]["mean"],
                    entry["mAP"]["std"],
                    entry["R1"]["mean"],
                    entry["R1"]["std"],
                    study["chance"]["mAP"],
                    study["chance"]["R1"],
                    effect.get("against", ""),
                    effect.get("mAP", {}).get("delta", ""),
                    effect.get("mAP", {}).get("stderr", ""),
                    effect.get("mAP", {}).get("ci_halfwidth", ""),
                    effect.get("mAP", {}).get("paired", ""),
                    effect.get("mAP", {}).get("beyond_noise", ""),
                ]
            )


def plot(study: Mapping[str, Any], path: Path) -> None:
    """mAP per variant (mean and std over the seeds, every seed as a dot) against chance, and
    the pseudo-label ARI of unsupervised PCL-CLIP per epoch (against the identities, the
    look-alike groups and the cameras)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = study["variants"]
    names = list(entries)
    curves = {name: e["pseudo_label_ari"] for name, e in entries.items() if "pseudo_label_ari" in e}
    figure, axes = plt.subplots(
        1,
        2 if curves else 1,
        figsize=(12 if curves else 8, 4.5),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 1] if curves else [1]},
    )
    bars = axes[0][0]
    methods = list(dict.fromkeys(entries[name]["method"] for name in names))
    colours = {method: f"C{index}" for index, method in enumerate(methods)}
    for index, name in enumerate(names):
        entry = entries[name]
        std = entry["mAP"]["std"] or 0.0
        bars.bar(
            index,
            100 * entry["mAP"]["mean"],
            yerr=100 * std,
            capsize=3,
            color=colours[entry["method"]],
            alpha=0.8,
        )
        seeds = [100 * run["mAP"] for run in entry["runs"]]
        bars.plot([index] * len(seeds), seeds, "k.", markersize=4)
    bars.axhline(100 * study["chance"]["mAP"], color="grey", linestyle="--", label="chance")
    bars.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    bars.set_ylabel("mAP (%)")
    bars.set_title(f"{study['dataset']}, seeds {study['seeds']}")
    bars.legend()
    if curves:
        ari = axes[0][1]
        for name, curve in curves.items():
            ari.plot(range(1, len(curve) + 1), curve, marker="o", label=f"{name}: identities")
            for partition, marker in zip(PARTITIONS, "s^"):
                other = entries[name].get(f"pseudo_label_ari_{partition}")
                if other:
                    ari.plot(
                        range(1, len(other) + 1), other, marker=marker, label=f"{name}: {partition}"
                    )
        ari.axhline(0.0, color="grey", linestyle="--", label="chance")
        ari.set_xlabel("epoch")
        ari.set_ylabel("adjusted Rand index")
        ari.set_title("pseudo labels")
        ari.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one epoch per stage")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 3 4 (--quick: 0)")
    parser.add_argument("--variants", nargs="+", choices=VARIANT_NAMES, default=VARIANT_NAMES)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/evidence"))
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default=None, help="default: evidence (--quick: evidence_quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    chosen = [variant for variant in VARIANTS if variant.name in args.variants]
    runs_dir = args.runs_dir / ("quick" if args.quick else "full")
    study = run_study(chosen, seeds, runs_dir, args.quick)
    name = args.name or ("evidence_quick" if args.quick else "evidence")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{name}.json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    write_csv(study, args.output_dir / f"{name}.csv")
    plot(study, args.output_dir / f"{name}.png")
    print_table(study)
    return study


if __name__ == "__main__":
    main()
