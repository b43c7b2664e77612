"""Exporting a trained model to TorchScript and ONNX, checked against the eager model.

:func:`export_model` writes ``model.torchscript.pt`` (:func:`torch.jit.trace`) and
``model.onnx`` (:func:`torch.onnx.export`, dynamic batch size) of an
:class:`~reidkit.models.InferenceModel`, reloads each file (``torch.jit.load``, an
``onnxruntime`` session) and compares its features with the eager model's on a random batch of
another size than the one traced: an export whose features differ by more than ``tolerance``
is an :class:`ExportError`, and the file is removed. ``export.json`` records what the files
expect (input size, normalisation, metric) and the differences measured.

The exported graphs compute every optimal-transport step with the plain-torch reference (a
Triton kernel cannot be traced). Of a text-to-image model (UniPT, VAL-PAT) the image encoder is
exported: the gallery side of text-to-image retrieval and the ReID transfer of its image
features. Its text side is not: captions become token ids through CLIP's byte-pair tokenizer in
Python, and the text encoder cuts each batch after its last end-of-text token, a length that
tracing would freeze to the traced batch's; embed texts with
:meth:`~reidkit.models.TextToImageInferenceModel.encode_text` (``export.json`` says so).

ONNX needs ``onnx``, ``onnxscript`` and ``onnxruntime`` (the
``export`` extra).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from reidkit import checks
from reidkit.engine.atomic import atomic_write_text
from reidkit.models.saved import InferenceModel, TextToImageInferenceModel

FORMATS = ("torchscript", "onnx")
FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
EXPORT_FILE = "export.json"
TOLERANCE = 1e-5
"""The largest difference accepted between the exported model's features and the eager
model's (absolute, float32)."""


class ExportError(RuntimeError):
    """A model that could not be exported, or whose export does not give its features."""


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """One exported file.

    Attributes:
        format: ``"torchscript"`` or ``"onnx"``.
        path: the file.
        max_abs_difference: the largest difference between its features and the eager
            model's, on the check batch.
    """

    format: str
    path: Path
    max_abs_difference: float


def export_model(
    model: InferenceModel,
    folder: str | Path,
    formats: Sequence[str] = FORMATS,
    *,
    tolerance: float = TOLERANCE,
    batch_size: int = 2,
    seed: int = 0,
) -> list[ExportedModel]:
    """Export ``model`` to ``folder`` in each of ``formats`` and check every file.

    Args:
        model: the model (its ``spec`` gives the input size).
        folder: where the files go (created).
        formats: some of :data:`FORMATS`.
        tolerance: the largest accepted difference of the features (see :data:`TOLERANCE`).
        batch_size: images of the traced batch; the check batch has one more.
        seed: of the random batches.

    Returns:
        The exported files, in the order of ``formats``.

    Raises:
        ExportError: a format that cannot trace the model, or an export whose features differ
            by more than ``tolerance`` (the message gives the difference).
    """
    formats = list(dict.fromkeys(formats))
    for name in formats:
        checks.check_choice("formats", name, FORMATS)
    checks.check_integer("batch_size", batch_size, 1)
    checks.check_number("tolerance", tolerance, above=0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    _use_torch_references(model)
    generator = torch.Generator().manual_seed(seed)
    height, width = model.spec.image_size
    traced_batch = torch.randn(batch_size, 3, height, width, generator=generator)
    check_batch = torch.randn(batch_size + 1, 3, height, width, generator=generator)
    with torch.no_grad():
        expected = model(check_batch)
    exporters = {"torchscript": _export_torchscript, "onnx": _export_onnx}
    exported = []
    for name in formats:
        path = folder / FILES[name]
        with torch.no_grad():
            actual = exporters[name](model, traced_batch, check_batch, path)
        difference = float((actual - expected).abs().max())
        if not difference <= tolerance:
            path.unlink(missing_ok=True)
            raise ExportError(
                f"the {name} export gives features that differ from the model's by up to "
                f"{difference:.3g} (> {tolerance:g}) on a batch of {batch_size + 1}; it was "
                "removed"
            )
        exported.append(ExportedModel(name, path, difference))
    _write_record(model, folder, exported, tolerance)
    return exported


def _use_torch_references(model: torch.nn.Module) -> None:
    """Make every module that picks a Triton kernel at run time use its torch reference."""
    for module in model.modules():
        if getattr(module, "sinkhorn_backend", None) is not None:
            cast(Any, module).sinkhorn_backend = "torch"


def _export_torchscript(
    model: InferenceModel, traced_batch: Tensor, check_batch: Tensor, path: Path
) -> Tensor:
    with warnings.catch_warnings():
        # Traced shape checks become constants: the check batch shows the graph is general.
        # torch.jit re-exports TracerWarning without listing it.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", FutureWarning)
        try:
            # torch.jit.trace and torch.jit.load are not annotated in torch.
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                model, traced_batch, check_trace=False
            )
        except Exception as error:
            raise ExportError(
                f"TorchScript cannot trace the model: {_first_line(error)}"
            ) from error
        traced.save(str(path))
        reloaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    features: Tensor = reloaded(check_batch)
    return features


def _export_onnx(
    model: InferenceModel, traced_batch: Tensor, check_batch: Tensor, path: Path
) -> Tensor:
    try:
        import onnxruntime
    except ImportError as error:
        raise ExportError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'reidkit[export]'"
        ) from error
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (traced_batch,),
                str(path),
                input_names=["images"],
                output_names=["features"],
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
                verbose=False,
            )
        except Exception as error:
            path.unlink(missing_ok=True)
            raise ExportError(
                f"the ONNX exporter cannot trace the model ({_first_line(error)}); export it "
                "to TorchScript alone (formats ['torchscript'], on the command line --format "
                "torchscript)"
            ) from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"images": check_batch.numpy()})
    return torch.from_numpy(features)


def _first_line(error: BaseException) -> str:
    """The innermost cause of ``error`` in one line, with the call that raised it if the
    exporter names one."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    texts = [_ANSI.sub("", str(item)) for item in chain]
    innermost = chain[-1]
    line = next((text for text in texts[-1].splitlines() if text.strip()), "")
    reason = f"{type(innermost).__name__}: {line}" if line else type(innermost).__name__
    call = _RAISING_CALL.search("\n".join(texts))
    if call:
        reason += f", raised at {Path(call.group(1)).name}:{call.group(2)}"
    return reason


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISING_CALL = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+)')


def _write_record(
    model: InferenceModel, folder: Path, exported: list[ExportedModel], tolerance: float
) -> None:
    spec = model.spec
    record: dict[str, Any] = {
        "input": {
            "shape": ["batch", 3, *spec.image_size],
            "pixel_mean": spec.pixel_mean,
            "pixel_std": spec.pixel_std,
            "scale": "RGB in [0, 1], then (x - mean) / std",
        },
        "output": {"features": "(batch, D)", "metric": spec.metric},
        "files": {
            item.format: {"file": item.path.name, "max_abs_difference": item.max_abs_difference}
            for item in exported
        },
        "tolerance": tolerance,
        "trained_on": spec.trained_on,
    }
    if isinstance(model, TextToImageInferenceModel):
        record["text"] = (
            "not exported: embed captions with reidkit.load_model(run).encode_text(model."
            "tokenize(texts)) and compare them with the image features by cosine similarity"
        )
    path = folder / EXPORT_FILE
    if path.is_file():  # keep what an earlier export of other formats recorded
        previous = json.loads(path.read_text(encoding="utf-8"))
        record["files"] = {**previous.get("files", {}), **record["files"]}
    atomic_write_text(json.dumps(record, indent=2) + "\n", path)
