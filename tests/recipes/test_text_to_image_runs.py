"""UniPT and VAL-PAT as software: a saved text-to-image model gives the features of the model it
was saved from, ``reidkit eval`` ranks a data set's captions against its images as a per-query
loop does, the command line knows their data, and (slow) ``reidkit train``, ``eval``, ``export``
and ``--resume`` work on a run of each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reidkit.cli import main
from reidkit.data import build_test_transforms
from reidkit.models import (
    InferenceModel,
    TextToImageInferenceModel,
    TextToImageModel,
    UniPTImageEncoder,
    UniPTTextEncoder,
    VALPATImageEncoder,
    VALPATTextEncoder,
    load_model,
)
from reidkit.recipes import get_recipe, load_config, replace_field
from reidkit.recipes.config import ConfigError
from reidkit.recipes.evaluate import evaluate_run
from reidkit.recipes.text_to_image import build_text_clip, text_model_spec
from tests.models.test_saved import BUILDERS, _save

NUM_CLASSES = 5
IMAGE_SIZE = (64, 32)


def _text_model(name: str) -> tuple[TextToImageModel, dict]:
    """A random tiny UniPT or VAL-PAT fine-tuning model and its ``model.json``, built as the
    recipe builds them."""
    config = replace_field(get_recipe(name).presets["tiny"], "clip.image_size", IMAGE_SIZE)
    clip_model, _ = build_text_clip(config.clip, config.data.text_length, torch.device("cpu"))
    if name == "unipt":
        image = UniPTImageEncoder(clip_model, config.embed_dim)
        text = UniPTTextEncoder(clip_model, config.embed_dim, causal=config.causal_text)
        model = TextToImageModel(image, text, config.embed_dim, NUM_CLASSES)
        extra = {"embed_dim": config.embed_dim, "causal_text": config.causal_text}
    else:
        width = clip_model.visual.transformer.width
        image = VALPATImageEncoder(clip_model, config.pretrain.ssl_dim, width)
        model = TextToImageModel(
            image, VALPATTextEncoder(clip_model), clip_model.visual.output_dim, NUM_CLASSES
        )
        extra = {"ssl_dim": config.pretrain.ssl_dim}
    return model.eval(), text_model_spec(name, name, config, NUM_CLASSES, **extra)


CAPTIONS = {
    # image file: (person id, captions)
    "a.png": (1, ["a woman in a red coat", "red coat, black trousers"]),
    "b.png": (1, ["the woman walks in a red coat"]),
    "c.png": (2, ["a man with a blue backpack", "blue bag, white shirt"]),
    "d.png": (3, ["a child in yellow"]),
    "e.png": (3, ["yellow shirt, short hair", "small person in yellow"]),
}


def _pedes_folder(root: Path) -> Path:
    """A CUHK-PEDES release with random images: one train image and the test split above."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    entries = [{"split": "train", "captions": ["x"], "file_path": "t.png", "id": 9}]
    entries += [
        {"split": "test", "captions": captions, "file_path": file, "id": pid}
        for file, (pid, captions) in CAPTIONS.items()
    ]
    for entry in entries:
        pixels = rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "imgs" / entry["file_path"])
    (root / "reid_raw.json").write_text(json.dumps(entries))
    return root


def _reference_metrics(model: TextToImageModel, spec: dict, root: Path) -> dict[str, float]:
    """R1, R5 and mAP of the captions against the test images, one caption at a time, in
    float64, from the model the run was saved from (not through evaluate_run)."""
    from reidkit.clip import clip_tokenizer

    transform = build_test_transforms(
        tuple(spec["image_size"]), mean=spec["pixel_mean"], std=spec["pixel_std"]
    )
    files = list(CAPTIONS)
    images = torch.stack([transform(Image.open(root / "imgs" / f).convert("RGB")) for f in files])
    tokenizer = clip_tokenizer(spec["arguments"]["clip"]["name"], 64)
    gallery_pids = [CAPTIONS[file][0] for file in files]
    with torch.no_grad():
        image_features = F.normalize(model.encode_image(images).double(), dim=1)
    ranks, precisions = [], []
    for file in files:
        pid, captions = CAPTIONS[file]
        for caption in captions:
            tokens = tokenizer([caption], context_length=spec["arguments"]["text_length"])
            with torch.no_grad():
                text = F.normalize(model.encode_text(tokens).double(), dim=1)[0]
            order = torch.argsort(image_features @ text, descending=True).tolist()
            hits = [gallery_pids[index] == pid for index in order]
            ranks.append(hits.index(True) + 1)
            positions = [rank for rank, hit in enumerate(hits, 1) if hit]
            precisions.append(np.mean([k / rank for k, rank in enumerate(positions, 1)]))
    ranks_array = np.array(ranks)
    return {
        "R1": float(np.mean(ranks_array <= 1)),
        "R5": float(np.mean(ranks_array <= 5)),
        "mAP": float(np.mean(precisions)),
    }


@pytest.mark.parametrize("name", ["unipt", "valpat"])
def test_a_saved_text_to_image_model_embeds_images_and_texts_as_the_model_did(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model, spec = _text_model(name)
    loaded = load_model(_save(model, spec, tmp_path / "run"))
    assert isinstance(loaded, TextToImageInferenceModel) and not loaded.training
    assert loaded.spec.arguments["text_length"] == 64
    images = torch.randn(3, 3, *IMAGE_SIZE)
    tokens = loaded.tokenize(["a woman in a red coat", "a man with a blue backpack"])
    assert tokens.shape == (2, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(
            loaded.encode_text(tokens), model.encode_text(tokens), rtol=0, atol=0
        )


@pytest.mark.parametrize("name", ["unipt", "valpat"])
def test_eval_of_a_text_to_image_run_is_the_per_caption_ranking(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, spec = _text_model(name)
    run = _save(model, spec, tmp_path / "run")
    root = _pedes_folder(tmp_path / "CUHK-PEDES")
    evaluation = evaluate_run(run, "cuhk_pedes", root, num_workers=0)
    metrics = json.loads((run / "eval" / "cuhk_pedes" / "metrics.json").read_text())
    assert metrics == evaluation.metrics and evaluation.folder == run / "eval" / "cuhk_pedes"
    assert (metrics["task"], metrics["num_query"], metrics["num_gallery"]) == (
        "text_to_image",
        8,
        5,
    )
    assert metrics["cross_domain"] is True  # trained on synthetic_captions
    expected = _reference_metrics(model, spec, root)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key


def test_text_to_image_evaluation_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, spec = _text_model("unipt")
    run = _save(model, spec, tmp_path / "run")
    with pytest.raises(ValueError, match="rerank, flip: not available for the text-to-image"):
        evaluate_run(run, "cuhk_pedes", tmp_path, rerank=True, flip=True)
    with pytest.raises(ConfigError, match=r"^data\.root is needed: the data set 'rstpreid'"):
        evaluate_run(run, "rstpreid", None)
    image_model, image_spec = BUILDERS["clip_reid"]()
    image_run = _save(image_model, image_spec, tmp_path / "image_run")
    root = _pedes_folder(tmp_path / "CUHK-PEDES")
    with pytest.raises(ValueError, match="'cuhk_pedes' is a text-to-image data set, and the model"):
        evaluate_run(image_run, "cuhk_pedes", root)
    assert type(load_model(image_run)) is InferenceModel


def test_the_command_line_knows_the_text_to_image_data(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # --data-root alone reads CUHK-PEDES (not Market-1501) for a text-to-image recipe
    assert main(["config", "unipt", "--data-root", str(tmp_path), "--epochs", "pretrain=0"]) == 0
    printed = capsys.readouterr().out
    assert "dataset: cuhk_pedes\n" in printed and f"root: {tmp_path}\n" in printed
    # a file written by `reidkit config` reads back as the same configuration
    (tmp_path / "unipt.yaml").write_text(printed)
    recipe, config = load_config(tmp_path / "unipt.yaml")
    assert recipe == "unipt" and config.pretrain.epochs == 0 and config.data.root == str(tmp_path)
    # the paper's data sets need their folders, checked before anything is built
    output = ["--output-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "unipt", "--preset", "paper", *output])
    assert exit_info.value.code == 2
    assert "data.root is needed: the data set 'cuhk_pedes' is read from its folder" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["train", "valpat", "--preset", "tiny", "reid.dataset", "msmt17", *output])
    assert "reid.root is needed: the ReID data set 'msmt17'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "valpat", "--epochs", "pretrain=2", "pretrain.warmup_epochs", "3", *output])
    assert "pretrain.warmup_epochs must be < epochs (2)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# Through subprocesses, as a user runs them


def _reidkit(*argv: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reidkit", *argv],
        env={**os.environ, "REIDKIT_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=1800,
    )


RUNTIME = ["--device", "cpu", "--num-workers", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unipt", "valpat"])
def test_train_eval_export_and_resume_a_text_to_image_run(name: str, tmp_path: Path) -> None:
    cache, run = tmp_path / "cache", tmp_path / "run"
    train = ["train", name, "--preset", "tiny", "--output-dir", str(run), *RUNTIME]
    train += ["--image-size", "64", "32", "--epochs", "1", "finetune=2"]
    train += ["pretrain.warmup_epochs", "0", "finetune.warmup_epochs", "1"]
    completed = _reidkit(*train, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    recipe, config = load_config(run / "config.yaml")
    assert recipe == name and config.clip.image_size == (64, 32)
    report = json.loads((run / "report.json").read_text())
    for file in ("model.json", "model.safetensors", "best_model.safetensors", "last.pt"):
        assert (run / file).is_file(), file

    # eval of the run on the data it trained on: the numbers of its last evaluation
    completed = _reidkit("eval", str(run), "--dataset", "synthetic_captions", *RUNTIME, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((run / "eval" / "synthetic_captions" / "metrics.json").read_text())
    assert metrics["task"] == "text_to_image" and metrics["cross_domain"] is False
    for key in ("mAP", "mINP", "R1", "R5", "R10"):
        assert metrics[key] == pytest.approx(report["results"][name][key], abs=1e-6), key
    # its image encoder on an image ReID data set: the ReID transfer
    completed = _reidkit("eval", str(run), "--dataset", "synthetic", *RUNTIME, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    reid = json.loads((run / "eval" / "synthetic" / "metrics.json").read_text())
    assert reid["task"] == "image_reid" and 0 <= reid["mAP"] <= 1

    # export: the image encoder, checked against the eager model
    completed = _reidkit("export", str(run), "--format", "torchscript", cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    exported = json.loads((run / "export" / "export.json").read_text())
    assert exported["files"]["torchscript"]["max_abs_difference"] <= 1e-5
    assert exported["text"].startswith("not exported")

    # the folder refuses a new run; resuming the finished run trains nothing
    completed = _reidkit(*train, cache=cache)
    assert completed.returncode == 2 and "already holds a run" in completed.stderr
    completed = _reidkit("train", "--resume", "--output-dir", str(run), *RUNTIME, cache=cache)
    assert completed.returncode == 0, completed.stderr[-3000:]
    resumed = json.loads((run / "report.json").read_text())
    assert resumed["results"] == report["results"] and len(resumed["resumes"]) == 1
