"""Procedural pedestrian crops: who a person is, how a camera sees, and what a frame changes.

Three independent sources of appearance, each drawn from its own seeded generator:

- :class:`PedestrianIdentity` (the person): clothing colours, top pattern, sleeve length,
  lower garment, shoes, skin, hair, body proportions, bag and hat.
- :class:`CameraStyle` (the camera): background wall and floor colours and texture, horizon
  height, illumination gain and colour cast, sensor noise and blur.
- :class:`FrameCondition` (one frame): front or back view, horizontal mirror, stride, scale and
  translation of the crop, illumination jitter and an optional occluder.

Colours are drawn from small shared palettes, so several identities wear the same colour and
identity is a combination of attributes rather than a single pixel value. An identity may also
wear :class:`LocalCue` patches (a cap, a logo, a belt bag, a knee patch, coloured shoes), which
the ``local_cues`` variant of :class:`~reidkit.data.SyntheticReID` uses to tell apart people
who share their global appearance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Colour = tuple[int, int, int]
OptionT = TypeVar("OptionT")

CLOTHING_PALETTE: tuple[Colour, ...] = (
    (20, 20, 24),  # black
    (235, 235, 230),  # white
    (128, 128, 128),  # grey
    (30, 40, 90),  # navy
    (50, 100, 190),  # blue
    (190, 30, 35),  # red
    (110, 25, 35),  # dark red
    (40, 120, 60),  # green
    (100, 105, 50),  # olive
    (190, 170, 120),  # khaki
    (110, 70, 40),  # brown
    (225, 190, 40),  # yellow
    (225, 140, 170),  # pink
    (100, 60, 140),  # purple
)
CLOTHING_COLOUR_NAMES = (
    "black",
    "white",
    "grey",
    "navy",
    "blue",
    "red",
    "dark red",
    "green",
    "olive",
    "khaki",
    "brown",
    "yellow",
    "pink",
    "purple",
)
"""The name of each :data:`CLOTHING_PALETTE` colour, in order."""
SKIN_TONES: tuple[Colour, ...] = (
    (245, 210, 180),
    (225, 180, 145),
    (195, 145, 105),
    (150, 100, 70),
    (100, 65, 45),
)
HAIR_COLOURS: tuple[Colour, ...] = ((25, 20, 18), (70, 45, 30), (140, 100, 60), (200, 170, 110))
HAIR_COLOUR_NAMES = ("black", "dark brown", "light brown", "blond")
SHOE_PALETTE: tuple[Colour, ...] = CLOTHING_PALETTE[:4] + CLOTHING_PALETTE[9:11]
"""Shoe colours: black, white, grey, navy, khaki, brown."""
CLOTHING_JITTER = 12
"""Largest per-channel shift of a drawn clothing colour from its palette colour."""
SCENE_PALETTE: tuple[Colour, ...] = (
    (150, 150, 145),
    (120, 110, 100),
    (90, 100, 95),
    (170, 160, 140),
    (100, 110, 130),
    (70, 75, 80),
    (140, 130, 110),
    (160, 170, 175),
)
TOP_PATTERNS = ("plain", "plain", "horizontal_stripes", "vertical_stripes", "checks")
LOWER_GARMENTS = ("trousers", "trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bald")
BAGS = ("none", "none", "backpack", "shoulder_bag")
BACKGROUND_TEXTURES = ("plain", "tiles", "bars", "noise")
CUE_SLOTS = ("head", "chest", "waist", "thigh", "feet")
"""Where a :class:`LocalCue` is worn: a cap, a chest logo, a belt bag, a knee patch, the shoes."""
CUE_SIZE = 0.12
"""Side of a local cue's square as a fraction of the body height (every cue has this area)."""


def _pick(rng: np.random.Generator, options: tuple[OptionT, ...]) -> OptionT:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, colour: Colour, amount: int) -> Colour:
    shifted = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    red, green, blue = (int(c) for c in shifted)
    return red, green, blue


@dataclass(frozen=True)
class LocalCue:
    """A small patch of one colour worn at one place on the body.

    Every cue covers the same area, a square of side ``CUE_SIZE`` times the body height, so
    that moving a cue from one slot to another leaves the person's colour histogram unchanged.
    ``slot`` is one of :data:`CUE_SLOTS`: a cap on the ``head``, a logo on the ``chest``, a belt
    bag at the ``waist``, a patch on the ``thigh``, or both shoes (``feet``, two half squares).
    ``side`` (-1 left, +1 right, before any mirroring) places chest, waist and thigh cues.
    """

    slot: str
    colour: Colour
    side: int


@dataclass(frozen=True)
class PedestrianIdentity:
    """Appearance that belongs to the person and is the same in every camera.

    Lengths are fractions: ``height`` of the crop height, ``shoulder_width`` of the crop
    width, ``leg_fraction`` and ``head_fraction`` of the body height. ``local_cues`` are drawn
    over everything else, in order.
    """

    top_colour: Colour
    top_accent: Colour
    top_pattern: str
    pattern_period: float
    long_sleeves: bool
    lower_colour: Colour
    lower_garment: str
    shoe_colour: Colour
    skin: Colour
    hair_colour: Colour
    hair_style: str
    height: float
    shoulder_width: float
    leg_fraction: float
    head_fraction: float
    bag: str
    bag_colour: Colour
    hat_colour: Colour | None
    local_cues: tuple[LocalCue, ...] = ()

    @classmethod
    def sample(cls, rng: np.random.Generator) -> PedestrianIdentity:
        """Draw an identity (without local cues); every attribute is independent of the others."""
        top = _pick(rng, CLOTHING_PALETTE)
        return cls(
            top_colour=_jitter(rng, top, CLOTHING_JITTER),
            top_accent=_jitter(rng, _pick(rng, CLOTHING_PALETTE), CLOTHING_JITTER),
            top_pattern=_pick(rng, TOP_PATTERNS),
            pattern_period=float(rng.uniform(0.04, 0.09)),
            long_sleeves=bool(rng.random() < 0.5),
            lower_colour=_jitter(rng, _pick(rng, CLOTHING_PALETTE), CLOTHING_JITTER),
            lower_garment=_pick(rng, LOWER_GARMENTS),
            shoe_colour=_jitter(rng, _pick(rng, SHOE_PALETTE), 8),
            skin=_jitter(rng, _pick(rng, SKIN_TONES), 6),
            hair_colour=_pick(rng, HAIR_COLOURS),
            hair_style=_pick(rng, HAIR_STYLES),
            height=float(rng.uniform(0.8, 0.94)),
            shoulder_width=float(rng.uniform(0.55, 0.75)),
            leg_fraction=float(rng.uniform(0.42, 0.52)),
            head_fraction=float(rng.uniform(0.12, 0.15)),
            bag=_pick(rng, BAGS),
            bag_colour=_jitter(rng, _pick(rng, CLOTHING_PALETTE), 10),
            hat_colour=_pick(rng, CLOTHING_PALETTE) if rng.random() < 0.25 else None,
        )


def _three_floats(values: np.ndarray) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in values)
    return first, second, third


@dataclass(frozen=True)
class CameraStyle:
    """Appearance that belongs to the camera: scene and sensor."""

    wall_colour: Colour
    floor_colour: Colour
    texture: str
    horizon: float
    gain: float
    colour_cast: tuple[float, float, float]
    noise_std: float
    blur_radius: float
    texture_seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator) -> CameraStyle:
        """Draw a camera: its scene colours, texture, illumination and sensor quality."""
        return cls(
            wall_colour=_jitter(rng, _pick(rng, SCENE_PALETTE), 20),
            floor_colour=_jitter(rng, _pick(rng, SCENE_PALETTE), 20),
            texture=_pick(rng, BACKGROUND_TEXTURES),
            horizon=float(rng.uniform(0.45, 0.75)),
            gain=float(rng.uniform(0.75, 1.2)),
            colour_cast=_three_floats(rng.uniform(0.9, 1.1, size=3)),
            noise_std=float(rng.uniform(2.0, 8.0)),
            blur_radius=float(rng.uniform(0.0, 1.2)),
            texture_seed=int(rng.integers(2**31)),
        )


@dataclass(frozen=True)
class FrameCondition:
    """What changes from one frame to the next in the same camera.

    ``offset`` is the body's horizontal and vertical shift as a fraction of the crop size,
    ``stride`` in ``[-1, 1]`` the phase of the walk (legs and arms), ``occluder`` a box
    ``(x0, y0, x1, y1)`` in crop fractions with its colour, or ``None``.
    """

    back_view: bool
    mirrored: bool
    stride: float
    scale: float
    offset: tuple[float, float]
    gain: float
    occluder: tuple[tuple[float, float, float, float], Colour] | None

    @classmethod
    def sample(cls, rng: np.random.Generator, occlusion_probability: float) -> FrameCondition:
        """Draw a frame; an occluder appears with ``occlusion_probability``."""
        occluder = None
        if rng.random() < occlusion_probability:
            kind = int(rng.integers(3))
            depth = float(rng.uniform(0.25, 0.45))
            box = (
                (0.0, 1.0 - depth, 1.0, 1.0),  # something in front: bench, car, railing
                (0.0, 0.0, depth, 1.0),  # pole or passer-by on the left
                (1.0 - depth, 0.0, 1.0, 1.0),  # ... on the right
            )[kind]
            occluder = (box, _jitter(rng, _pick(rng, SCENE_PALETTE + CLOTHING_PALETTE), 15))
        return cls(
            back_view=bool(rng.random() < 0.5),
            mirrored=bool(rng.random() < 0.5),
            stride=float(rng.uniform(-1.0, 1.0)),
            scale=float(rng.uniform(0.88, 1.05)),
            offset=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.03, 0.02))),
            gain=float(rng.uniform(0.88, 1.12)),
            occluder=occluder,
        )


SUPERSAMPLING = 2
"""Drawing happens at this multiple of the output size, then is downsampled (anti-aliasing)."""


def render_pedestrian(
    identity: PedestrianIdentity | None,
    camera: CameraStyle,
    frame: FrameCondition,
    size: tuple[int, int],
    rng: np.random.Generator,
) -> Image.Image:
    """Draw one crop of ``identity`` seen by ``camera`` in ``frame``.

    Args:
        identity: the person; ``None`` draws the scene alone (a junk detection).
        camera: scene and sensor.
        frame: pose, placement, illumination jitter and occluder.
        size: output ``(height, width)`` in pixels.
        rng: source of the sensor noise.

    Returns:
        An RGB image of ``size``.
    """
    height, width = size[0] * SUPERSAMPLING, size[1] * SUPERSAMPLING
    image = _background(camera, height, width).copy()
    if identity is not None:
        person = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        _draw_person(person, identity, frame, height, width)
        if frame.mirrored:
            person = person.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.alpha_composite(person)
    if frame.occluder is not None:
        (x0, y0, x1, y1), colour = frame.occluder
        ImageDraw.Draw(image).rectangle(
            (x0 * width, y0 * height, x1 * width, y1 * height), fill=(*colour, 255)
        )
    image = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BOX)
    if camera.blur_radius > 0:
        image = image.filter(ImageFilter.GaussianBlur(camera.blur_radius))
    pixels = np.asarray(image, dtype=np.float32)
    pixels *= camera.gain * frame.gain * np.asarray(camera.colour_cast, dtype=np.float32)
    pixels += rng.normal(0.0, camera.noise_std, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@lru_cache(maxsize=16)
def _background(camera: CameraStyle, height: int, width: int) -> Image.Image:
    """The camera's fixed scene: wall above the horizon with its texture, floor below."""
    ys, xs = np.ogrid[0:height, 0:width]
    wall = ys < camera.horizon * height
    pixels = np.where(
        wall[..., None],
        np.asarray(camera.wall_colour, dtype=np.float32),
        np.asarray(camera.floor_colour, dtype=np.float32),
    ) * np.ones((1, width, 1), dtype=np.float32)
    cell = max(2, width // 10)
    if camera.texture == "tiles":
        pixels[wall & (((ys // cell) + (xs // cell)) % 2 == 0)] *= 0.85
    elif camera.texture == "bars":
        pixels[wall & ((xs // cell) % 3 == 0)] *= 0.7
    elif camera.texture == "noise":
        cell = max(2, width // 16)
        blotches = np.random.default_rng(camera.texture_seed).normal(
            0.0, 18.0, size=(height // cell + 1, width // cell + 1, 1)
        )
        pixels += blotches.repeat(cell, 0).repeat(cell, 1)[:height, :width]
    alpha = np.full((height, width, 1), 255, dtype=np.float32)
    return Image.fromarray(np.clip(np.concatenate([pixels, alpha], 2), 0, 255).astype(np.uint8))


def _draw_person(
    layer: Image.Image,
    identity: PedestrianIdentity,
    frame: FrameCondition,
    height: int,
    width: int,
) -> None:
    """Draw the body on a transparent layer, front or back view, facing the viewer."""
    draw = ImageDraw.Draw(layer)
    body = identity.height * frame.scale * height
    centre = width * (0.5 + frame.offset[0])
    feet = height * (0.98 + frame.offset[1])
    top = feet - body
    head_h = identity.head_fraction * body
    head_w = head_h * 0.8
    neck = top + head_h * 1.05
    hip = feet - identity.leg_fraction * body
    shoulder = identity.shoulder_width * width * frame.scale / 2
    hip_half = shoulder * 0.8
    swing = frame.stride * shoulder * 0.35
    strap = max(1, round(width / 40))

    # Front view of a backpack: its straps over the chest.
    if identity.bag == "backpack" and not frame.back_view:
        draw.line(
            (centre - shoulder * 0.6, neck, centre - shoulder * 0.5, hip), (60, 60, 60, 255), strap
        )
        draw.line(
            (centre + shoulder * 0.6, neck, centre + shoulder * 0.5, hip), (60, 60, 60, 255), strap
        )

    # Legs: lower garment, then skin where it ends, then shoes.
    leg_w = hip_half * 0.85
    knee = hip + (feet - hip) * 0.5
    for side in (-1, 1):
        x_hip = centre + side * hip_half * 0.5
        x_foot = x_hip + side * swing * 0.6
        leg = [
            (x_hip - leg_w / 2, hip),
            (x_hip + leg_w / 2, hip),
            (x_foot + leg_w * 0.35, feet),
            (x_foot - leg_w * 0.35, feet),
        ]
        draw.polygon(leg, fill=(*identity.skin, 255))
        if identity.lower_garment == "trousers":
            draw.polygon(leg, fill=(*identity.lower_colour, 255))
        elif identity.lower_garment == "shorts":
            x_knee = (x_hip + x_foot) / 2
            draw.polygon(
                [leg[0], leg[1], (x_knee + leg_w * 0.45, knee), (x_knee - leg_w * 0.45, knee)],
                fill=(*identity.lower_colour, 255),
            )
        draw.ellipse(
            (x_foot - leg_w * 0.6, feet - leg_w * 0.45, x_foot + leg_w * 0.6, feet + 1),
            fill=(*identity.shoe_colour, 255),
        )
    if identity.lower_garment == "skirt":
        draw.polygon(
            [
                (centre - hip_half, hip - 1),
                (centre + hip_half, hip - 1),
                (centre + hip_half * 1.4, knee),
                (centre - hip_half * 1.4, knee),
            ],
            fill=(*identity.lower_colour, 255),
        )

    # Arms: sleeves in the top colour, hands (and forearms for short sleeves) in skin.
    arm_w = shoulder * 0.32
    elbow = neck + (hip - neck) * 0.5
    for side in (-1, 1):
        x0 = centre + side * (shoulder - arm_w / 2)
        x1 = x0 - side * swing * 0.5
        hand = hip + (feet - hip) * 0.12
        draw.line((x0, neck + arm_w / 2, x1, hand), (*identity.skin, 255), int(arm_w))
        sleeve_end = hand if identity.long_sleeves else elbow
        x_sleeve = x0 + (x1 - x0) * (sleeve_end - neck) / (hand - neck)
        draw.line(
            (x0, neck + arm_w / 2, x_sleeve, sleeve_end), (*identity.top_colour, 255), int(arm_w)
        )

    # Torso with its pattern.
    torso = [
        (centre - shoulder + arm_w * 0.6, neck),
        (centre + shoulder - arm_w * 0.6, neck),
        (centre + hip_half, hip + 1),
        (centre - hip_half, hip + 1),
    ]
    _fill_patterned(layer, torso, identity, width)

    if identity.bag == "backpack" and frame.back_view:
        draw.rounded_rectangle(
            (
                centre - shoulder * 0.55,
                neck + head_h * 0.3,
                centre + shoulder * 0.55,
                hip - head_h * 0.2,
            ),
            radius=4,
            fill=(*identity.bag_colour, 255),
        )
    elif identity.bag == "shoulder_bag":
        draw.line((centre - shoulder * 0.7, neck, centre + hip_half, hip), (40, 40, 40, 255), strap)
        draw.rectangle(
            (
                centre + hip_half - 2,
                hip - head_h * 0.9,
                centre + hip_half + shoulder * 0.5,
                hip + head_h * 0.3,
            ),
            fill=(*identity.bag_colour, 255),
        )

    # Head: hair behind, face (front view) or hair (back view), hat on top.
    head_box = (centre - head_w / 2, top, centre + head_w / 2, top + head_h)
    if identity.hair_style == "long":
        draw.rectangle(
            (head_box[0] - 1, top + head_h * 0.4, head_box[2] + 1, neck + head_h * 0.6),
            fill=(*identity.hair_colour, 255),
        )
    covered_by_hair = frame.back_view and identity.hair_style != "bald"
    draw.ellipse(
        head_box, fill=(*(identity.hair_colour if covered_by_hair else identity.skin), 255)
    )
    if identity.hair_style != "bald" and not frame.back_view:
        draw.chord(head_box, 180, 360, fill=(*identity.hair_colour, 255))
    if identity.hat_colour is not None:
        draw.chord(
            (head_box[0] - 1, top - head_h * 0.1, head_box[2] + 1, top + head_h * 0.7),
            180,
            360,
            fill=(*identity.hat_colour, 255),
        )

    landmarks = {
        "head": (centre, top + head_h * 0.25),
        "chest": (centre + shoulder * 0.35, neck + (hip - neck) * 0.3),
        "waist": (centre + hip_half * 0.6, hip),
        "thigh": (centre + hip_half * 0.5, hip + (feet - hip) * 0.35),
    }
    side_length = CUE_SIZE * body
    for cue in identity.local_cues:
        fill = (*cue.colour, 255)
        if cue.slot == "feet":  # two half squares, one over each shoe
            for side in (-1, 1):
                x_foot = centre + side * (hip_half * 0.5 + swing * 0.6)
                draw.rectangle(
                    (
                        x_foot - side_length / 2,
                        feet - side_length / 2,
                        x_foot + side_length / 2,
                        feet,
                    ),
                    fill=fill,
                )
            continue
        x, y = landmarks[cue.slot]
        if cue.slot != "head":
            x = centre + cue.side * (x - centre)
        draw.rectangle(
            (x - side_length / 2, y - side_length / 2, x + side_length / 2, y + side_length / 2),
            fill=fill,
        )


def _fill_patterned(
    layer: Image.Image,
    polygon: list[tuple[float, float]],
    identity: PedestrianIdentity,
    width: int,
) -> None:
    """Fill ``polygon`` on ``layer`` with the identity's top colour and pattern."""
    x0 = max(0, int(min(x for x, _ in polygon)))
    y0 = max(0, int(min(y for _, y in polygon)))
    x1 = min(layer.size[0], int(max(x for x, _ in polygon)) + 1)
    y1 = min(layer.size[1], int(max(y for _, y in polygon)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in polygon], fill=255)
    period = max(2, round(identity.pattern_period * width))
    ys, xs = np.ogrid[y0:y1, x0:x1]
    stripe_rows, stripe_cols = (ys // period) % 2 == 0, (xs // period) % 2 == 0
    accent = {
        "plain": np.zeros((1, 1), dtype=bool),
        "horizontal_stripes": stripe_rows,
        "vertical_stripes": stripe_cols,
        "checks": stripe_rows ^ stripe_cols,
    }[identity.top_pattern]
    accent = np.broadcast_to(accent, (y1 - y0, x1 - x0))
    pixels = np.where(accent[..., None], identity.top_accent, identity.top_colour)
    alpha = np.full((y1 - y0, x1 - x0, 1), 255)
    fill = Image.fromarray(np.concatenate([pixels, alpha], 2).astype(np.uint8), "RGBA")
    layer.paste(fill, (x0, y0), mask)
