"""Trained models saved apart from their training: rebuilt from a description and weights alone.

A run folder keeps the model it trained as two files: ``model.json``, a :class:`ModelSpec`
(the architecture and its arguments, the input the model expects and how its features are
compared), and ``model.safetensors``, its weights (``best_model.safetensors``: at the best
evaluation). :func:`load_model` rebuilds the module from the description with random weights,
loads the weights, and returns an :class:`InferenceModel`: images in, retrieval features out,
without the recipes, the optimisers or the training data::

    model = reidkit.load_model("runs/clip_reid")        # eval mode, on the CPU
    features = model(images)                            # (B, D)
    model.spec.image_size, model.spec.metric            # (256, 128), "cosine"

The architectures are :data:`ARCHITECTURES`: ``clip_reid`` (:class:`CLIPReIDModel`, with
MMPL's visual prompts when it has any), ``pcl_clip`` (:class:`PCLCLIPModel`), ``aaformer``
(:class:`AAformerReID`), and the text-to-image models ``unipt`` and ``valpat``
(:class:`TextToImageModel` on UniPT's or VAL-PAT's encoders). A text-to-image model loads as a
:class:`TextToImageInferenceModel`, which also embeds texts::

    model = reidkit.load_model("runs/unipt")
    images = model(pixels)                              # (B, D), as any saved model
    texts = model.encode_text(model.tokenize(["a woman in a red coat"]))   # (1, D)
    scores = F.normalize(texts, dim=1) @ F.normalize(images, dim=1).T    # cosine
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip import clip_tokenizer, load_clip
from reidkit.engine.run_folder import MODEL_SPEC
from reidkit.engine.weights import BEST_WEIGHTS, MODEL_WEIGHTS, load_weights
from reidkit.models.aaformer import AAformerReID, build_vit
from reidkit.models.clip_reid import CLIPReIDModel
from reidkit.models.pcl_clip import PCLCLIPModel
from reidkit.models.text_to_image import TextToImageModel
from reidkit.models.unipt import UniPTImageEncoder, UniPTTextEncoder
from reidkit.models.valpat import VALPATImageEncoder, VALPATTextEncoder

SPEC_FORMAT = 1
METRICS = ("cosine", "euclidean")
WEIGHTS = {"final": MODEL_WEIGHTS, "best": BEST_WEIGHTS}
"""Which weights of a run :func:`load_model` reads: at the end of the run, or at its best."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a saved model is: enough to rebuild it and to feed and compare it.

    Attributes:
        architecture: a key of :data:`ARCHITECTURES`.
        arguments: the architecture's arguments (JSON values).
        image_size: input ``(H, W)``.
        pixel_mean, pixel_std: the normalisation of the input images.
        metric: how features are compared: ``"cosine"`` or ``"euclidean"``.
        normalize: the features are L2-normalised before they are compared.
        trained_on: where the weights come from (recipe, data set, identities), for the record.
    """

    architecture: str
    arguments: dict[str, Any]
    image_size: tuple[int, int]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    metric: str = "cosine"
    normalize: bool = False
    trained_on: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.check_choice("architecture", self.architecture, sorted(ARCHITECTURES))
        checks.check_choice("metric", self.metric, METRICS)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (H, W) with H, W >= 1, got {self.image_size}")
        for name in ("pixel_mean", "pixel_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must hold 3 values, got {getattr(self, name)}")
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))

    def to_json(self) -> dict[str, Any]:
        """The JSON mapping written to ``model.json``."""
        return {"format": SPEC_FORMAT, **json.loads(json.dumps(dataclasses.asdict(self)))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "model.json") -> ModelSpec:
        """The spec of a ``model.json`` mapping.

        Raises:
            ValueError: another format, or missing or invalid entries (named with ``source``).
        """
        if not isinstance(data, Mapping) or data.get("format") != SPEC_FORMAT:
            raise ValueError(f"{source} is not a reidkit model description (format {SPEC_FORMAT})")
        fields = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in fields})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None


def _clip_tower(arguments: Mapping[str, Any]) -> Any:
    """The open_clip model of ``arguments["clip"]`` with random weights."""
    clip = arguments["clip"]
    clip_model, _ = load_clip(
        clip["name"], None, image_size=tuple(clip["image_size"]), stride=clip.get("stride")
    )
    return clip_model


def _build_clip_reid(arguments: Mapping[str, Any]) -> nn.Module:
    return CLIPReIDModel(
        _clip_tower(arguments),
        arguments["num_classes"],
        arguments.get("num_visual_prompts", 0),
        arguments.get("prompt_conv_stride", 1),
    )


def _build_pcl_clip(arguments: Mapping[str, Any]) -> nn.Module:
    return PCLCLIPModel(
        _clip_tower(arguments),
        arguments["num_classes"],
        # model.json written before the field: the two necks' classifiers
        id_classifier=arguments.get("id_classifier", "per_neck"),
    )


def _build_aaformer(arguments: Mapping[str, Any]) -> nn.Module:
    from reidkit.parts import AAformer, AAformerLoss

    backbone = arguments["backbone"]
    vit, _, _ = build_vit(backbone["name"], None, tuple(backbone["image_size"]))
    aaformer = AAformer(
        vit,
        tuple(arguments["part_groups"]),
        assignment=arguments["assignment"],
        similarity=arguments.get("similarity", "cosine"),  # model.json before the field: cosine
    )
    heads = AAformerLoss(aaformer.output_dim, 1 + aaformer.num_parts, arguments["num_classes"])
    return AAformerReID(aaformer, heads)


def _build_unipt(arguments: Mapping[str, Any]) -> nn.Module:
    clip_model = _clip_tower(arguments)
    embed_dim = arguments["embed_dim"]
    image_encoder = UniPTImageEncoder(clip_model, embed_dim)
    text_encoder = UniPTTextEncoder(clip_model, embed_dim, causal=arguments["causal_text"])
    return TextToImageModel(image_encoder, text_encoder, embed_dim, arguments["num_classes"])


def _build_valpat(arguments: Mapping[str, Any]) -> nn.Module:
    clip_model = _clip_tower(arguments)
    width = clip_model.visual.transformer.width
    image_encoder = VALPATImageEncoder(clip_model, arguments["ssl_dim"], width)
    text_encoder = VALPATTextEncoder(clip_model)
    embed_dim = clip_model.visual.output_dim
    return TextToImageModel(image_encoder, text_encoder, embed_dim, arguments["num_classes"])


ARCHITECTURES: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "clip_reid": _build_clip_reid,
    "pcl_clip": _build_pcl_clip,
    "aaformer": _build_aaformer,
    "unipt": _build_unipt,
    "valpat": _build_valpat,
}
"""Builders of the saved architectures, by name: each takes :attr:`ModelSpec.arguments` and
returns the module with random weights."""


class InferenceModel(nn.Module):
    """A trained model ready for retrieval: ``(B, 3, H, W)`` images to ``(B, D)`` features.

    The features are the wrapped model's in eval mode, L2-normalised when the spec says so;
    compare them with ``spec.metric``.

    Args:
        model: the rebuilt model (its forward in eval mode returns features).
        spec: its description.
    """

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        features = self.model(images)
        return F.normalize(features, dim=1) if self.spec.normalize else features


TEXT_TO_IMAGE_ARCHITECTURES = ("unipt", "valpat")
"""The architectures that embed texts as well (:class:`TextToImageInferenceModel`); their
arguments hold ``text_length``, the tokens per caption."""


class TextToImageInferenceModel(InferenceModel):
    """A trained text-to-image model: images to features as any :class:`InferenceModel`,
    and texts to features of the same space.

    Args:
        model: a :class:`~reidkit.models.TextToImageModel`.
        spec: its description (``arguments["text_length"]``: tokens per caption).

    Attributes:
        tokenizer: the CLIP tokenizer of the model's text tower.
    """

    def __init__(self, model: TextToImageModel, spec: ModelSpec) -> None:
        super().__init__(model, spec)
        self.text_length = int(spec.arguments["text_length"])
        context_length: int = cast(Any, model.text_encoder).context_length
        self.tokenizer = clip_tokenizer(spec.arguments["clip"]["name"], context_length)

    @property
    def text_model(self) -> TextToImageModel:
        """The wrapped model, with its text side."""
        return cast(TextToImageModel, self.model)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images to ``(B, D)`` image features."""
        return self._output(self.text_model.encode_image(images))

    def encode_text(self, token_ids: Tensor) -> Tensor:
        """``(T, L)`` token ids (:meth:`tokenize`) to ``(T, D)`` text features."""
        return self._output(self.text_model.encode_text(token_ids))

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """``(T, text_length)`` token ids of ``texts`` (longer ones are cut, the end-of-text
        token kept last)."""
        token_ids: Tensor = self.tokenizer(texts, context_length=self.text_length)
        return token_ids

    def _output(self, features: Tensor) -> Tensor:
        return F.normalize(features, dim=1) if self.spec.normalize else features


def build_model(spec: ModelSpec) -> nn.Module:
    """The module that ``spec`` describes, with random weights."""
    return ARCHITECTURES[spec.architecture](spec.arguments)


def read_spec(run_dir: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a run folder (its ``model.json``).

    Raises:
        FileNotFoundError: the folder has no ``model.json``.
        ValueError: the file is not a model description.
    """
    path = Path(run_dir) / MODEL_SPEC
    if not path.is_file():
        raise FileNotFoundError(
            f"{Path(run_dir)} holds no {MODEL_SPEC}: is it the folder of a finished training run?"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    return ModelSpec.from_json(data, str(path))


def load_model(
    run_dir: str | Path, weights: str = "final", device: str | torch.device = "cpu"
) -> InferenceModel:
    """The trained model of a run folder, ready for retrieval (eval mode, on ``device``): a
    :class:`TextToImageInferenceModel` for a text-to-image model, else an
    :class:`InferenceModel`.

    Args:
        run_dir: the run folder (``model.json`` and the weights).
        weights: ``"final"`` (``model.safetensors``, the end of the run) or ``"best"``
            (``best_model.safetensors``, the best evaluation).
        device: where the model goes.

    Raises:
        FileNotFoundError: the folder lacks the description or the weights.
        ValueError: the weights do not fit the description (the message names the keys).
    """
    checks.check_choice("weights", weights, tuple(WEIGHTS))
    spec = read_spec(run_dir)
    path = Path(run_dir) / WEIGHTS[weights]
    if not path.is_file():
        when = "at the end of the run" if weights == "final" else "at the best evaluation"
        raise FileNotFoundError(
            f"{path} does not exist: the run did not write its weights {when} (was it stopped "
            "before? resume it to finish)"
        )
    model = build_model(spec)
    state = load_weights(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not fit the model of {MODEL_SPEC}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, of another shape {wrong[:5]}"
        )
    model.load_state_dict(state)
    if spec.architecture in TEXT_TO_IMAGE_ARCHITECTURES:
        return TextToImageInferenceModel(cast(TextToImageModel, model), spec).to(device)
    return InferenceModel(model, spec).to(device)
