"""Do MMPL's stage-1 parts learn on their own? The OT loss and the selector agents, taken apart.

The tiny preset's frozen encoder features of the built-in data (``--dataset``) are cached once;
then either the prompts learn from eq. 20 with the given ``--alpha``/``--beta`` (patches
selected by the class token's attention) and :func:`reidkit.selection.stage1_diagnostics`
reports the OT loss against its chance level and the OT classifier's top-1, or the agents
learn alone (their REINFORCE loss) and their overlap with the best selection is reported
against random. One intra-op thread: the shapes are tiny.

Run (docs/pipelines/mmpl.md quotes the results)::

    python benchmarks/diagnose_mmpl_stage1.py ot --steps 60 --alpha 1 --beta 0.1
    python benchmarks/diagnose_mmpl_stage1.py ot --steps 60 --alpha 0 --beta 1
    python benchmarks/diagnose_mmpl_stage1.py agents --steps 400 --agent-lr 1e-3
    python benchmarks/diagnose_mmpl_stage1.py agents --steps 100 --agent-lr 1e-3 --reads-scores
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import torch

from reidkit.clip import CLIPTextEncoder
from reidkit.models import CLIPReIDModel
from reidkit.prompts import MultiGranularityPromptLearner
from reidkit.recipes import mmpl
from reidkit.recipes.common import build_clip, build_clip_data, cache_frozen_features
from reidkit.recipes.config import Runtime
from reidkit.selection import random_selection_overlap, selection_overlap, stage1_diagnostics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("ot", "agents"))
    parser.add_argument("--dataset", default="synthetic_local_cues")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--reports", type=int, default=2, help="diagnostics this many times")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--agent-lr", type=float, default=1e-3)
    parser.add_argument("--reads-scores", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("runs/diagnose_mmpl_stage1"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tiny = mmpl.PRESETS["tiny"]
    agent = dataclasses.replace(tiny.agent, reads_scores=args.reads_scores)
    config = dataclasses.replace(
        tiny,
        data=dataclasses.replace(tiny.data, dataset=args.dataset),
        alpha=args.alpha,
        beta=args.beta,
        agent=agent,
    )
    device = torch.device("cpu")
    clip_model = build_clip(config.clip, device)
    data = build_clip_data(
        config.clip, config.data, runtime=Runtime(output_dir=str(args.cache)), device=device
    )
    num_classes = data.dataset.num_train_pids
    encoder = CLIPReIDModel(clip_model, num_classes, 0).eval().image_encoder

    def encode(images: torch.Tensor) -> list[torch.Tensor]:
        features = encoder(images)
        return [
            features.projected_patches,
            features.embedding,
            encoder.class_token_attention(features),
        ]

    maps, embeddings, attention = cache_frozen_features(encode, data.feature_loader(0), device)
    pids = torch.tensor([pid for _, pid, _ in data.dataset.train])
    if args.part == "ot":
        config = mmpl.without_agent(config)
    prompts = MultiGranularityPromptLearner(
        num_classes, clip_model, config.levels.n_ctx, config.prompt.template
    )
    text_encoder = CLIPTextEncoder(clip_model, checkpoint_activations=True, chunk_size=256)
    stage1 = mmpl.build_hierarchical_prompt_learning(
        config,
        prompts,
        text_encoder,
        tuple(clip_model.visual.grid_size),
        clip_model.visual.output_dim,
    )
    trained = prompts.parameters() if args.part == "ot" else stage1.agents.parameters()
    lr = config.prompt_stage.lr if args.part == "ot" else args.agent_lr
    optimizer = torch.optim.Adam(trained, lr=lr)
    generator = torch.Generator().manual_seed(args.seed)
    size = config.data.batch_size

    def batches():
        while True:
            order = torch.randperm(len(pids), generator=generator)
            for start in range(0, len(pids) - size + 1, size):
                index = order[start : start + size]
                yield maps[index], embeddings[index], pids[index], attention[index]

    def report(step: int) -> dict:
        if args.part == "ot":
            chunks = zip(*(t.split(64) for t in (maps, embeddings, pids, attention)))
            result = stage1_diagnostics(stage1, chunks, num_classes)
            return {
                "step": step,
                "otce": result["otce"],
                "otce_chance": result["otce_chance"],
                "ot_accuracy": [level["ot_accuracy"] for level in result["levels"]],
            }
        stage1.eval()
        with torch.no_grad():
            levels = stage1.partition(maps, embeddings)
            overlap = [
                float(
                    selection_overlap(
                        agent(level.features, level.scores).indices, level.scores
                    ).mean()
                )
                for agent, level in zip(stage1.agents, levels)
            ]
        stage1.train()
        random = [
            random_selection_overlap(count, kept)
            for count, kept in zip(config.levels.patch_counts, config.levels.selected)
        ]
        return {"step": step, "overlap": overlap, "random_overlap": random}

    every = max(1, args.steps // args.reports)
    stream = batches()
    for step in itertools.count():
        if step % every == 0 or step == args.steps:
            print(json.dumps(report(step)), flush=True)
        if step == args.steps:
            break
        patch_map, embedding, labels, selection = next(stream)
        if args.part == "ot":
            loss = stage1(patch_map, embedding, labels, selection)["loss"]
        else:
            levels = stage1.partition(patch_map, embedding)
            loss = sum(
                agent(level.features, level.scores).loss
                for agent, level in zip(stage1.agents, levels)
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
