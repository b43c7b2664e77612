"""The ``reidkit`` command: options to configurations, every refusal with its message before any
data or model is built, and (slow) train, eval, compare, export and Ctrl-C through subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from reidkit import downloads
from reidkit.cli import main
from reidkit.models import load_model
from reidkit.recipes import RECIPES, Runtime, arguments, load_config, save_config
from reidkit.recipes.presets import preset_yaml
from reidkit.recipes.serialization import config_differences

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHORT = ["--set", "prompt_stage.warmup_epochs=0", "image_stage.warmup_epochs=0"]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The built-in data's cache; a refusal must leave it empty (nothing was built)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("REIDKIT_CACHE", str(cache))
    return cache


def _config(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    """What ``reidkit config ...`` prints, read back."""
    assert main(["config", *argv]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _refused(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """The one error line of a command that must exit with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in error
    return error


def test_the_options_set_the_fields(capsys: pytest.CaptureFixture) -> None:
    shown = _config(
        capsys,
        "clip_reid",
        "--epochs", "prompts=3", "image_encoder=4",
        "--lr", "image_encoder=2e-4",
        "--batch-size", "16",
        "--image-size", "64", "32",
        "--pretrained", "none",
        "--loss-weight", "id=0.5", "image_to_text=2",
        "IMAGE_STAGE.WEIGHT_DECAY", "0.001",  # a yacs-style pair after the list of --loss-weight
        "--set", "prompt.n_ctx=2",
        "loss.triplet_margin", "0.5",
    )  # fmt: skip
    assert shown["recipe"] == "clip_reid"
    assert (shown["prompt_stage"]["epochs"], shown["image_stage"]["epochs"]) == (3, 4)
    assert shown["image_stage"]["lr"] == 2e-4 and shown["data"]["batch_size"] == 16
    assert shown["clip"]["image_size"] == [64, 32] and shown["clip"]["pretrained"] is None
    assert (shown["loss"]["id_weight"], shown["loss"]["image_to_text_weight"]) == (0.5, 2.0)
    assert shown["image_stage"]["weight_decay"] == 0.001 and shown["prompt"]["n_ctx"] == 2
    assert shown["loss"]["triplet_margin"] == 0.5


def test_the_common_settings_find_each_recipe_s_fields(capsys: pytest.CaptureFixture) -> None:
    shown = _config(capsys, "aaformer", "--lr", "3e-4", "--image-size", "96", "48", "--epochs", "9")
    assert shown["optimizer"]["lr"] == 3e-4 and shown["optimizer"]["epochs"] == 9
    assert shown["backbone"]["image_size"] == [96, 48]
    shown = _config(
        capsys, "pcl_clip", "--preset", "tiny-unsupervised", "--loss-weight", "triplet=1"
    )
    assert shown["mode"] == "unsupervised" and shown["triplet_weight"] == 1.0
    shown = _config(capsys, "mmpl", "--loss-weight", "alignment=0.3", "transformation=0")
    assert shown["beta"] == 0.3 and shown["visual_prompts"]["transformation_weight"] == 0.0


def test_data_options(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    shown = _config(capsys, "clip_reid", "--data-root", str(tmp_path))  # tiny: built-in data
    assert (shown["data"]["dataset"], shown["data"]["root"]) == ("market1501", str(tmp_path))
    pattern = r"^(?P<pid>\d+)-(?P<camid>\d+)"
    shown = _config(
        capsys, "clip_reid", "--data-root", str(tmp_path), "--filename-pattern", pattern
    )
    assert (
        shown["data"]["dataset"] == "image_folder" and shown["data"]["filename_pattern"] == pattern
    )
    shown = _config(capsys, "clip_reid", "--data-root", str(tmp_path), "--dataset", "msmt17")
    assert shown["data"]["dataset"] == "msmt17"


def test_a_config_file_and_the_recipe_it_names(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text("recipe: mmpl\npreset: paper\nbeta: 0.5\n")
    shown = _config(capsys, "--config", str(file), "alpha", "2")  # no RECIPE: the file names it
    assert (shown["recipe"], shown["beta"], shown["alpha"]) == ("mmpl", 0.5, 2.0)
    assert shown["levels"] == yaml.safe_load(preset_yaml("mmpl", "paper"))["levels"]
    error = _refused(capsys, "config", "clip_reid", "--config", str(file))
    assert "configures the recipe 'mmpl', not 'clip_reid'" in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "huge"], "--preset must be one of ['paper', 'tiny'], got 'huge'"),
        (["--set", "optim.lr=1"], "optim.lr names no field: CLIPReIDConfig has no field 'optim'"),
        (
            ["image_stage.lr", "fast"],
            "image_stage.lr must be a number, got 'fast' (given by --set)",
        ),
        (["--set", "loss.label_smoothing=1"], "loss.label_smoothing must be in [0, 1), got 1.0"),
        (["--lr", "1e-3"], "--lr must name a stage: clip_reid has the stages ['prompts', "),
        (["--loss-weight", "center=1"], "--loss-weight center names no loss term of clip_reid"),
        (
            ["--epochs", "0"],
            "prompt_stage.epochs must be an integer >= 1, got 0 (given by --epochs)",
        ),
        (
            ["--epochs", "1"],
            "prompt_stage.warmup_epochs must be < epochs (1), got 1: the warm-up would last the "
            "whole stage (prompt_stage.epochs given by --epochs)",
        ),
        (["--epochs", "pompts=2"], "stage 'pompts' is not a stage of clip_reid"),
        (["--batch-size", "30"], "data.batch_size (30) must be a multiple of num_instances (4)"),
        (["--typo", "1"], "unrecognized arguments: --typo"),
        (["loss.id_weight"], "loss.id_weight has no value: write loss.id_weight=VALUE"),
    ],
)
def test_bad_options_are_refused_naming_the_key(
    capsys: pytest.CaptureFixture, empty_cache: Path, argv: list[str], message: str
) -> None:
    assert message in _refused(capsys, "train", "clip_reid", *argv)
    assert not empty_cache.exists()


def test_paper_without_a_data_root_names_the_option(
    capsys: pytest.CaptureFixture, empty_cache: Path, tmp_path: Path
) -> None:
    error = _refused(capsys, "train", "mmpl", "--preset", "paper", "--output-dir", str(tmp_path))
    assert (
        "data.root is needed: the data set 'market1501' is read from its folder; give it " in error
    )
    assert "--data-root" in error and not empty_cache.exists()


def test_a_missing_pretrained_file_is_refused_before_the_data(
    capsys: pytest.CaptureFixture, empty_cache: Path, tmp_path: Path
) -> None:
    error = _refused(
        capsys, "train", "clip_reid", "--pretrained", str(tmp_path / "ViT-B-16.pt"), *SHORT
    )
    assert "clip.pretrained names no file: " in error and "the path of a local checkpoint" in error
    assert not empty_cache.exists()


def test_an_unreachable_weight_tag_is_one_clear_error(
    capsys: pytest.CaptureFixture, empty_cache: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(downloads, "host_reachable", lambda *args, **kwargs: False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.perf_counter()
    paper = ["--preset", "paper", "--data-root", str(tmp_path / "market")]
    status = main(["train", "clip_reid", *paper, "--output-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(error) == 1 and time.perf_counter() - started < 60
    assert error[0].startswith("reidkit train: error: pretrained='openai' of the open_clip model")
    assert "--pretrained PATH" in error[0] and not empty_cache.exists()


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(
    capsys: pytest.CaptureFixture, empty_cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    tiny = RECIPES["clip_reid"].presets["tiny"]
    save_config(run / "config.yaml", "clip_reid", tiny)
    (run / "report.json").write_text("{}")
    error = _refused(capsys, "train", "clip_reid", "--output-dir", str(run))
    assert "already holds a run (config.yaml, report.json); continue it with --resume, " in error
    assert "replace it with --overwrite" in error
    error = _refused(
        capsys, "train", "--resume", "--output-dir", str(run), "--lr", "image_encoder=2e-3"
    )
    assert "--resume: the configuration differs from the run's" in error
    assert "image_stage.lr: 0.001 -> 0.002" in error
    error = _refused(
        capsys, "train", "clip_reid", "--resume", "--overwrite", "--output-dir", str(run)
    )
    assert "not allowed with argument --resume" in error
    # resuming with no configuration option takes the run's own configuration
    assert _config(capsys, "--resume", "--output-dir", str(run)) == yaml.safe_load(
        (run / "config.yaml").read_text()
    )
    assert not empty_cache.exists()


def test_resume_without_a_run_says_so(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    error = _refused(capsys, "train", "clip_reid", "--resume", "--output-dir", str(tmp_path / "x"))
    assert "--resume: " in error and "holds no run to resume (no last.pt, no report.json)" in error


def test_the_preset_files_match_the_code(tmp_path: Path) -> None:
    written = sorted(path.relative_to(CONFIGS).as_posix() for path in CONFIGS.rglob("*.yaml"))
    expected = sorted(f"{r}/{p}.yaml" for r in RECIPES for p in RECIPES[r].presets)
    assert written == expected, "configs/ is stale: run `reidkit presets --write configs`"
    for name in expected:
        recipe, preset = name.removesuffix(".yaml").split("/")
        assert (CONFIGS / name).read_text() == preset_yaml(recipe, preset), name
        assert load_config(CONFIGS / name) == (recipe, RECIPES[recipe].presets[preset])


def test_presets_lists_and_writes(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["presets"]) == 0
    assert "pcl_clip: paper, tiny, paper-unsupervised, tiny-unsupervised" in capsys.readouterr().out
    assert main(["presets", "--write", str(tmp_path)]) == 0
    assert (tmp_path / "aaformer" / "paper.yaml").read_text() == preset_yaml("aaformer", "paper")


# ------------------------------------------------------------------------------------------------
# Through subprocesses, as a user runs them


def _reidkit(*argv: str, cache: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    environment = {**os.environ, "REIDKIT_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "reidkit", *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


RUNTIME = ["--device", "cpu", "--num-workers", "0"]
TRAIN = [*RUNTIME, "--image-size", "64", "32"]


def test_python_m_reidkit_trains_a_tiny_run(tmp_path: Path) -> None:
    # one epoch per stage: the fast end-to-end check of the command (the slow tests do more)
    run = tmp_path / "run"
    completed = _reidkit(
        "train", "clip_reid", "--output-dir", str(run), *TRAIN, "--epochs", "1", *SHORT,
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = completed.stdout.splitlines()[-4:]  # the results' table, chance level and units
    assert [line.split()[0] for line in table[:3]] == ["method", "CLIP-ReID", "chance"]
    assert table[0].split()[-1] == "skipped" and "in %" in table[-1]
    assert "Warning" not in completed.stderr, completed.stderr  # no library warning leaks
    report = json.loads((run / "report.json").read_text())
    assert [report["stages"][s]["epochs"][-1]["epoch"] for s in ("prompts", "image_encoder")] == [
        1,
        1,
    ]
    assert report["best"]["epoch"] == 1 and load_config(run / "config.yaml")[0] == "clip_reid"
    model = load_model(run)
    features = model(torch.rand(2, 3, *model.spec.image_size))
    assert features.shape == (2, 128) and bool(torch.isfinite(features).all())


@pytest.mark.slow
def test_train_eval_compare_export_and_the_run_folder(tmp_path: Path) -> None:
    cache, run = tmp_path / "cache", tmp_path / "run"
    train = ["train", "clip_reid", "--output-dir", str(run), *TRAIN, "--epochs", "2"]
    completed = _reidkit(*train, "--eval-every", "1", *SHORT, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines()[-3].split()[0] == "CLIP-ReID"  # the table

    # the run folder: the resolved configuration, in the file and in the report
    recipe, config = load_config(run / "config.yaml")
    report = json.loads((run / "report.json").read_text())
    assert recipe == "clip_reid" and config.clip.image_size == (64, 32)
    assert config_differences(report["config"]["experiment"], config) == []
    for name in ("model.json", "model.safetensors", "best.pt", "best_model.safetensors"):
        assert (run / name).is_file(), name
    best = report["best"]
    assert best["stage"] == "image_encoder" and best["epoch"] in (1, 2)

    # eval on the data it trained on gives the numbers of the training's last evaluation
    completed = _reidkit(
        "eval", str(run), "--dataset", "synthetic", "--save-rank-grid", cache=cache
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((run / "eval" / "synthetic" / "metrics.json").read_text())
    for name in ("mAP", "R1", "R5", "mINP"):
        assert metrics[name] == pytest.approx(report["results"]["clip_reid"][name], abs=1e-6)
    assert (
        metrics["cross_domain"] is False
        and (run / "eval" / "synthetic" / "rank_grid.png").is_file()
    )
    completed = _reidkit(
        "eval", str(run), "--dataset", "synthetic", "--weights", "best", cache=cache
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    best_metrics = json.loads((run / "eval" / "synthetic_best" / "metrics.json").read_text())
    assert best_metrics["mAP"] == pytest.approx(best["metrics"]["mAP"], abs=1e-6)

    # compare: the table and the plot
    completed = _reidkit(
        "compare", str(run), "--plot", str(tmp_path / "c.png"), "--format", "csv", cache=cache
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    row = completed.stdout.splitlines()[1].split(",")
    assert row[0] == "CLIP-ReID" and float(row[4]) == round(100 * metrics["mAP"], 1)
    assert (tmp_path / "c.png").is_file()

    # export: both files, checked
    completed = _reidkit("export", str(run), cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    exported = json.loads((run / "export" / "export.json").read_text())
    assert all(item["max_abs_difference"] <= 1e-5 for item in exported["files"].values())
    assert set(exported["files"]) == {"torchscript", "onnx"}

    # the folder now refuses a new run; resuming the finished run trains nothing
    completed = _reidkit(*train, *SHORT, cache=cache)
    assert completed.returncode == 2 and "already holds a run" in completed.stderr
    completed = _reidkit("train", "--resume", "--output-dir", str(run), *RUNTIME, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    resumed = json.loads((run / "report.json").read_text())
    assert resumed["results"] == report["results"] and len(resumed["resumes"]) == 1


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    cache, run = tmp_path / "cache", tmp_path / "run"
    command = [sys.executable, "-m", "reidkit", "train", "pcl_clip", "--output-dir", str(run)]
    # Enough epochs (0.1-0.5 s each) that the signal, sent when the first checkpoint appears,
    # lands while the run still trains, however fast the machine.
    epochs = 30
    command += [*TRAIN, "--epochs", str(epochs)]
    process = subprocess.Popen(
        command,
        env={**os.environ, "REIDKIT_CACHE": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and the
        # child would inherit that: give it the default disposition, as a terminal does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600
    while not (run / "last.pt").exists():
        assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint within 600 s"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert "report written" not in stderr, "the run ended before the signal reached it"
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: the last checkpoint is {run / 'last.pt'} (stage ")
    assert last.endswith(f"resume with: reidkit train --resume --output-dir {run}")
    completed = _reidkit("train", "--resume", "--output-dir", str(run), *RUNTIME, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert [e["epoch"] for e in report["stages"]["supervised"]["epochs"]] == list(
        range(1, epochs + 1)
    )
    assert report["resumes"]


def test_a_script_s_own_options_set_fields_with_the_others(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    recipe = RECIPES["aaformer"]
    parser = arguments.train_parser(recipe, default_output_dir=tmp_path / "run")
    arguments.field_option(parser, "--maps", "part_maps", help="figures")
    args = arguments.parse_train_args(
        parser, ["--maps", "0", "--epochs", "3", "assignment", "nearest"]
    )
    config = arguments.config_from_args(parser, args, recipe)
    assert (config.part_maps, config.optimizer.epochs, config.assignment) == (0, 3, "nearest")
    with pytest.raises(SystemExit):
        arguments.config_from_args(
            parser, arguments.parse_train_args(parser, ["--maps", "-1"]), recipe
        )
    assert "part_maps must be an integer >= 0, got -1 (given by --maps)" in capsys.readouterr().err


def test_the_line_after_ctrl_c_says_where_to_resume(tmp_path: Path) -> None:
    runtime = Runtime(output_dir=str(tmp_path / "run"))
    command = "reidkit train --resume --output-dir run"
    assert arguments.interrupted_message(runtime, command) == (
        f"interrupted before the run wrote anything to {tmp_path / 'run'}"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.log").touch()
    assert arguments.interrupted_message(runtime, command).endswith(
        "resume with: reidkit train --resume --output-dir run (it starts from the first epoch)"
    )
    baseline = tmp_path / "run" / "clip_reid"  # MMPL stopped while it trained its baseline
    baseline.mkdir()
    torch.save({"stage": "prompts", "epoch": 3}, baseline / "last.pt")
    assert arguments.interrupted_message(runtime, command) == (
        f"interrupted: the last checkpoint is {baseline / 'last.pt'} (stage prompts, 3 epochs "
        f"done); resume with: {command}"
    )
