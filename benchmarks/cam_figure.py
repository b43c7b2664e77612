"""MMPL fig. 9: where the baseline and MMPL look, and the patches MMPL selects at each level.

For the first query images of the data set, one row each: the image; the class-activation map
(attention rollout, :mod:`reidkit.explain`) of the CLIP-ReID baseline and of MMPL (visual
prompts included in the rollout); then, per granularity level, the patches that MMPL's stage 1
keeps (its selector agents on the frozen encoder's patches, or the class token's attention in a
run without agents), drawn over the image. ::

    python benchmarks/cam_figure.py                          # trains both on the built-in data
    python benchmarks/cam_figure.py --mmpl runs/mmpl_market --baseline runs/mmpl_market/clip_reid

Without ``--mmpl`` the tiny MMPL preset, with its CLIP-ReID baseline, is trained on the
built-in ``synthetic_local_cues`` data (short schedules, a few minutes on a CPU) into
``--runs-dir``; a finished run there is reused. The figure goes to
``results/mmpl_cam.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import RESULTS_DIR
from torch import Tensor

from reidkit.clip import CLIPImageEncoder, CLIPTextEncoder
from reidkit.data import build_dataset, build_test_transforms
from reidkit.engine import seed_everything
from reidkit.engine.checkpoint import read_checkpoint
from reidkit.engine.run_folder import CONFIG_FILE, REPORT_FILE
from reidkit.explain import class_token_rollout
from reidkit.models import load_model
from reidkit.parts import render_part_maps
from reidkit.prompts import MultiGranularityPromptLearner
from reidkit.recipes import Runtime, mmpl
from reidkit.recipes.common import build_clip
from reidkit.recipes.serialization import config_from_file, read_config_file
from reidkit.selection.attention import top_indices

DATASET = "synthetic_local_cues"
# Short schedules for the default runs: enough for the maps to differ from the untrained ones.
DEFAULT_SIZES = {
    "prompt_stage": {"epochs": 4, "warmup_epochs": 1},
    "agent": {"epochs": 3},
    "image_stage": {"epochs": 6, "warmup_epochs": 1, "milestones": (5,)},
}


def default_runs(runs_dir: Path, seed: int) -> tuple[Path, Path]:
    """Train (or reuse) the tiny MMPL run and its CLIP-ReID baseline; their folders."""
    if not (runs_dir / REPORT_FILE).is_file():
        config = dataclasses.replace(mmpl.PRESETS["tiny"], compare_baseline=True)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=DATASET))
        for section, values in DEFAULT_SIZES.items():
            config = dataclasses.replace(
                config, **{section: dataclasses.replace(getattr(config, section), **values)}
            )
        runtime = Runtime(
            output_dir=str(runs_dir), seed=seed, device="cpu", num_workers=0, overwrite=True
        )
        mmpl.train(config, runtime)
    return runs_dir / mmpl.BASELINE_FOLDER, runs_dir


def rollout_maps(run_dir: Path, images: Tensor) -> Tensor:
    """``(B, h, w)`` class-token rollout of the trained model of ``run_dir``."""
    model = load_model(run_dir).model  # a CLIPReIDModel
    encoder: CLIPImageEncoder = model.image_encoder
    generator = model.prompt_generator
    with torch.no_grad():
        prompts = None if generator is None else generator(images)
        attentions = encoder.attention_weights(images, prompts)
    return class_token_rollout(attentions, tuple(encoder.visual.grid_size))


def selected_patches(run_dir: Path, images: Tensor) -> list[tuple[Tensor, tuple[int, int]]]:
    """Per level, ``(B, M_c)`` masks of the patches MMPL's stage 1 keeps, and the level grid.

    Stage 1 selects on the frozen image encoder the run started from (rebuilt from the run's
    configuration and seed), with the agents of the run's last checkpoint, or by the class
    token's attention when the run has none.
    """
    saved = read_config_file(run_dir / CONFIG_FILE)
    config = config_from_file(mmpl.MMPLConfig, {}, saved)
    if not config.alignment.enabled:
        raise ValueError(f"{run_dir}: a run without alignment selects no patches")
    report = read_report(run_dir)
    seed_everything(int(report["config"]["runtime"]["seed"]))  # as mmpl.train seeds
    clip_model = build_clip(config.clip, torch.device("cpu"))
    encoder = CLIPImageEncoder(clip_model, return_layers=(-2,)).eval()
    # The prompts only complete the stage-1 module; the selection does not read them.
    prompts = MultiGranularityPromptLearner(
        1, clip_model, config.levels.n_ctx, config.prompt.template
    )
    stage1 = mmpl.build_hierarchical_prompt_learning(
        config,
        prompts,
        CLIPTextEncoder(clip_model),
        tuple(clip_model.visual.grid_size),
        clip_model.visual.output_dim,
    ).eval()
    if stage1.agents is not None:
        state = read_checkpoint(run_dir / "last.pt")["objects"]["agents"]
        stage1.agents.load_state_dict(state)
    with torch.no_grad():
        features = encoder(images)
        levels = stage1.partition(features.projected_patches, features.embedding)
        masks = []
        for k, level in enumerate(levels):
            if stage1.agents is not None:
                indices = stage1.agents[k](level.features).indices
            else:
                attention = encoder.class_token_attention(features)
                scores = stage1.partition.pool(attention, k)[..., 0]
                indices = top_indices(scores, config.levels.selected[k])
            mask = torch.zeros(level.features.shape[:2]).scatter_(1, indices, 1.0)
            masks.append((mask, level.grid))
    return masks


def read_report(run_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8"))


def query_images(run_dir: Path, count: int) -> tuple[Tensor, tuple[float, ...], tuple[float, ...]]:
    """The first ``count`` query images of the run's data set, as the run's model takes them."""
    spec = load_model(run_dir).spec
    saved = read_config_file(run_dir / CONFIG_FILE)
    data = saved.fields["data"]
    dataset = build_dataset(data["dataset"], data.get("root"))
    transform = build_test_transforms(spec.image_size, mean=spec.pixel_mean, std=spec.pixel_std)
    from PIL import Image

    images = [transform(Image.open(path).convert("RGB")) for path, _, _ in dataset.query[:count]]
    return torch.stack(images), spec.pixel_mean, spec.pixel_std


def draw(
    images: Tensor,
    baseline: Tensor,
    ours: Tensor,
    selections: Sequence[tuple[Tensor, tuple[int, int]]],
    mean: Sequence[float],
    std: Sequence[float],
    path: Path,
) -> Path:
    """The figure: image, two rollout maps, then the selected patches of each level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = render_part_maps(images, torch.stack([baseline, ours], dim=1), mean=mean, std=std)
    columns = [maps[:, 0], maps[:, 1], maps[:, 2]]
    titles = ["image", "CLIP-ReID", "MMPL"]
    for level, (mask, grid) in enumerate(selections):
        panels = render_part_maps(
            images, mask.reshape(-1, 1, *grid), mean=mean, std=std, alpha=0.35
        )
        columns.append(np.where(panels[:, 1] > 0, panels[:, 1], 0.25 * panels[:, 0]))
        titles.append(f"level {level + 1}: {int(mask[0].sum())}/{mask.shape[1]}")
    rows = images.shape[0]
    figure, axes = plt.subplots(
        rows, len(columns), figsize=(1.4 * len(columns), 2.6 * rows), squeeze=False
    )
    for row in range(rows):
        for column, (panel, title) in enumerate(zip(columns, titles)):
            axis = axes[row][column]
            axis.imshow(panel[row])
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    from PIL import Image

    # A palette of 256 colours keeps the noisy textures of the built-in data small on disk.
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mmpl", type=Path, help="a trained MMPL run folder")
    parser.add_argument(
        "--baseline", type=Path, help="its CLIP-ReID run (default: <mmpl>/clip_reid)"
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/cam_figure"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "mmpl_cam.png")
    args = parser.parse_args(argv)
    if args.mmpl is None:
        baseline_dir, mmpl_dir = default_runs(args.runs_dir, args.seed)
    else:
        mmpl_dir = args.mmpl
        baseline_dir = args.baseline or args.mmpl / mmpl.BASELINE_FOLDER
    images, mean, std = query_images(mmpl_dir, args.images)
    path = draw(
        images,
        rollout_maps(baseline_dir, images),
        rollout_maps(mmpl_dir, images),
        selected_patches(mmpl_dir, images),
        mean,
        std,
        args.output,
    )
    print(f"figure written to {path}")
    return path


if __name__ == "__main__":
    main()
