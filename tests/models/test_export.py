"""Exporting a saved model: the TorchScript and ONNX files give the eager model's features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.models import InferenceModel, ModelSpec, build_model
from reidkit.models.export import ExportError, export_model
from tests.models.test_saved import BUILDERS, _settle

TOLERANCE = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _inference_model(name: str) -> InferenceModel:
    torch.manual_seed(0)
    model, spec = BUILDERS[name]()
    _settle(model, tuple(spec["image_size"]))
    return InferenceModel(model, ModelSpec.from_json(spec))


def _images(spec: ModelSpec, batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, *spec.image_size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", ["pcl_clip", pytest.param("mmpl", marks=pytest.mark.slow)])
def test_both_exports_give_the_features_of_the_model(name: str, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _inference_model(name)
    exported = export_model(model, tmp_path, tolerance=TOLERANCE)
    assert [item.format for item in exported] == ["torchscript", "onnx"]
    assert all(item.max_abs_difference <= TOLERANCE for item in exported)
    images = _images(model.spec, 5)  # neither the traced batch size nor the checked one
    with torch.no_grad():
        expected = model(images)
        scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))(images)
    torch.testing.assert_close(scripted, expected, rtol=0, atol=TOLERANCE)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (features,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(features, expected.numpy(), rtol=0, atol=TOLERANCE)
    record = json.loads((tmp_path / "export.json").read_text())
    assert record["input"]["shape"] == ["batch", 3, *model.spec.image_size]
    assert set(record["files"]) == {"torchscript", "onnx"}


@pytest.mark.slow
def test_aaformer_exports_to_torchscript(tmp_path: Path) -> None:
    model = _inference_model("aaformer")
    (item,) = export_model(model, tmp_path, ["torchscript"])
    images = _images(model.spec, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.jit.load(str(item.path))(images), model(images), rtol=0, atol=TOLERANCE
        )


@pytest.mark.slow
def test_aaformer_says_why_it_does_not_export_to_onnx(tmp_path: Path) -> None:
    # The optimal-transport steps decide on tensor values (checks, the solver's domain), which
    # the ONNX exporter cannot trace.
    pytest.importorskip("onnxruntime")
    model = _inference_model("aaformer")
    export_model(model, tmp_path, ["torchscript"])
    with pytest.raises(ExportError, match=r"ONNX exporter cannot trace the model .*TorchScript"):
        export_model(model, tmp_path, ["onnx"])
    assert not (tmp_path / "model.onnx").exists()
    assert set(json.loads((tmp_path / "export.json").read_text())["files"]) == {"torchscript"}


def test_an_export_that_differs_is_refused_and_removed(tmp_path: Path, monkeypatch) -> None:
    model = _inference_model("clip_reid")
    real_load = torch.jit.load

    def perturbed(path: str):
        module = real_load(path)
        return lambda images: module(images) + 1e-3

    monkeypatch.setattr(torch.jit, "load", perturbed)
    with pytest.raises(ExportError, match=r"differ from the model's by up to 0\.001"):
        export_model(model, tmp_path, ["torchscript"])
    assert not (tmp_path / "model.torchscript.pt").exists()
    with pytest.raises(ValueError, match="formats must be one of"):
        export_model(model, tmp_path, ["tflite"])


def test_build_model_makes_the_architecture_of_the_spec() -> None:
    _, spec = BUILDERS["aaformer"]()
    assert type(build_model(ModelSpec.from_json(spec))).__name__ == "AAformerReID"
