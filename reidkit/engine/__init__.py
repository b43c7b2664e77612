"""Training machinery the examples share: steps, epochs, checkpoints, resume, log, report.

Small parts, each usable alone: :class:`Trainer` (AMP, gradient clipping, several optimisers),
:class:`CheckpointManager` (atomic checkpoints, resume at any stage), :class:`RunReport`
(JSON report), :func:`setup_logging` and :func:`progress_bar` (rank-0 output), the schedulers
:class:`WarmupMultiStepLR`, :class:`WarmupCosineLR` (per epoch) and :class:`WarmupLinearLR`
(per step), :func:`bias_parameter_groups` and :func:`module_parameter_groups`,
:func:`seed_everything`, and :func:`build_arg_parser` (the options of a script that assembles its
own training; the recipes have theirs in :mod:`reidkit.recipes.arguments`).
:class:`TrainingRun` assembles them for a run of named stages. An example stays a thin script::

    import torch
    import reidkit
    from reidkit.distributed import cleanup_distributed, init_distributed, unwrap_model
    from reidkit.engine import (
        Trainer, TrainingRun, WarmupCosineLR, WarmupMultiStepLR, build_arg_parser,
        move_to_device, seed_everything, stage_epochs,
    )

    parser = build_arg_parser("CLIP-ReID on Market-1501", default_output_dir="runs/clip_reid")
    args = parser.parse_args()
    context = init_distributed(args.device)             # torchrun or a single process
    seed_everything(args.seed)                          # same model init on every rank
    epochs = stage_epochs({"prompts": 120, "image_encoder": 60}, args.epochs)

    model = build_model().to(context.device)            # the example's own assembly
    run = TrainingRun(args.output_dir, stages=["prompts", "image_encoder"],
                      config=vars(args), resume=args.resume, eval_every=args.eval_every)
    run.track("model", model)                           # restored at once when resuming
    seed_everything(args.seed, rank=context.rank)       # per-rank augmentation

    def evaluate():                                     # rank 0 only: no collectives
        distmat, q_pids, g_pids, q_cams, g_cams = ...     # features of unwrap_model(model)
        return reidkit.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)  # RankResult

    # stage 1: skip its expensive set-up when a resumed checkpoint already covers it
    if not run.stage_completed("prompts"):
        cache = cache_image_features(model, loader)
        optimizer = torch.optim.Adam(model.prompt_learner.parameters(), lr=3.5e-4)
        trainer = Trainer(optimizer, WarmupCosineLR(optimizer, epochs["prompts"], 5),
                          amp=args.amp, device=context.device)
        run.fit("prompts", trainer, cache, prompt_step, epochs=epochs["prompts"])

    # stage 2
    optimizer = torch.optim.Adam(model.image_encoder.parameters(), lr=5e-6)
    scheduler = WarmupMultiStepLR(optimizer, milestones=(30, 50), warmup_epochs=10,
                                  warmup_start_factor=0.1)
    trainer = Trainer(optimizer, scheduler, amp=args.amp, device=context.device)

    def image_step(batch):
        images, pids = move_to_device(batch[:2], context.device)
        ...
        return {"loss": id_loss + tri_loss + i2t_loss, "id": id_loss, "tri": tri_loss}

    metrics = run.fit("image_encoder", trainer, train_loader, image_step,
                      epochs=epochs["image_encoder"], evaluate=evaluate)
    run.finish({"clip_reid": metrics})                  # writes report.json
    cleanup_distributed()

The output folder then holds ``train.log``, ``report.json``, ``last.pt`` (replaced atomically
after every epoch) and ``{stage}_final.pt``; ``--resume`` (alone: the output folder's
``last.pt``) continues from the last completed epoch of whichever stage it was written in,
restoring the models, optimisers, schedulers, AMP scaler, random generators and report.
"""

from reidkit.engine.atomic import (
    atomic_copy,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from reidkit.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    TrainingState,
    read_checkpoint,
    resolve_resume_path,
)
from reidkit.engine.cli import build_arg_parser, stage_epochs
from reidkit.engine.meters import MetricTracker
from reidkit.engine.parameter_groups import bias_parameter_groups, module_parameter_groups
from reidkit.engine.progress import (
    format_metrics,
    progress_bar,
    set_progress_enabled,
    setup_logging,
)
from reidkit.engine.report import RunReport, environment_info, to_jsonable
from reidkit.engine.run import EveryRankEvaluation, TrainingRun, evaluation_metrics
from reidkit.engine.run_folder import RunFolderError, check_run_folder, clear_run_folder
from reidkit.engine.schedulers import WarmupCosineLR, WarmupLinearLR, WarmupMultiStepLR
from reidkit.engine.seeding import capture_rng_state, restore_rng_state, seed_everything
from reidkit.engine.trainer import Trainer, move_to_device
from reidkit.engine.weights import load_weights, save_weights

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "EveryRankEvaluation",
    "MetricTracker",
    "RunFolderError",
    "RunReport",
    "Trainer",
    "TrainingRun",
    "TrainingState",
    "WarmupCosineLR",
    "WarmupLinearLR",
    "WarmupMultiStepLR",
    "atomic_copy",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "bias_parameter_groups",
    "build_arg_parser",
    "capture_rng_state",
    "check_run_folder",
    "clear_run_folder",
    "environment_info",
    "evaluation_metrics",
    "format_metrics",
    "load_weights",
    "module_parameter_groups",
    "move_to_device",
    "progress_bar",
    "read_checkpoint",
    "remove_stale_temporaries",
    "resolve_resume_path",
    "restore_rng_state",
    "save_weights",
    "seed_everything",
    "set_progress_enabled",
    "setup_logging",
    "stage_epochs",
    "to_jsonable",
]
