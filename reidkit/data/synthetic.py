"""SyntheticReID: a seeded, procedurally drawn person ReID data set in the Market-1501 layout.

Nothing has to be downloaded: the images are drawn on first use into a cache folder and then
read back by :class:`~reidkit.data.Market1501`'s parser, so the synthetic and the real data sets
go through the same code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from reidkit.data.benchmarks import Market1501
from reidkit.data.pedestrians import (
    CLOTHING_PALETTE,
    CUE_SLOTS,
    CameraStyle,
    FrameCondition,
    LocalCue,
    PedestrianIdentity,
    render_pedestrian,
)

GENERATOR_VERSION = 2
"""Bumped whenever the drawing changes, so that old caches are not reused."""

MARKET_MAX_CAMERAS = 6

VARIANTS = ("default", "local_cues")
"""Appearance models of :class:`SyntheticReID` (see its ``variant`` argument)."""

CUES_PER_IDENTITY = 3
"""Local cues worn by each identity of the ``local_cues`` variant."""

CUE_ARRANGEMENTS = tuple(itertools.permutations(CUE_SLOTS, CUES_PER_IDENTITY))
"""The ordered choices of slots for a group's cue colours; each member of a group has its own."""

DEFAULT_GROUP_SIZE = 4
"""Identities per look-alike group of the ``local_cues`` variant unless ``group_size`` says."""

CUE_COLOUR_CONTRAST = 60
"""Contrast (largest per-channel difference) a cue colour should have with each clothes colour."""


def default_cache_dir() -> Path:
    """``$REIDKIT_CACHE`` if set, else ``~/.cache/reidkit``."""
    return Path(os.environ.get("REIDKIT_CACHE", Path.home() / ".cache" / "reidkit"))


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated images (see :class:`SyntheticReID`)."""

    num_train_ids: int
    num_test_ids: int
    num_cameras: int
    cameras_per_id: tuple[int, int]
    images_per_camera: int
    num_distractors: int
    num_junk: int
    image_size: tuple[int, int]
    occlusion_probability: float
    seed: int
    variant: str = "default"
    group_size: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first argument outside its range."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r}; expected one of {list(VARIANTS)}")
        if self.variant == "default" and self.group_size is not None:
            raise ValueError(
                f"group_size={self.group_size!r} applies to variant='local_cues' only; "
                "expected None for variant='default'"
            )
        checks = (
            (self.num_train_ids >= 1, "num_train_ids", ">= 1"),
            (self.num_test_ids >= 1, "num_test_ids", ">= 1"),
            (
                2 <= self.num_cameras <= MARKET_MAX_CAMERAS,
                "num_cameras",
                f"in [2, {MARKET_MAX_CAMERAS}] (Market-1501 naming)",
            ),
            (
                2 <= self.cameras_per_id[0] <= self.cameras_per_id[1] <= self.num_cameras,
                "cameras_per_id",
                "(low, high) with 2 <= low <= high <= num_cameras",
            ),
            (self.images_per_camera >= 2, "images_per_camera", ">= 2 (one query, one gallery)"),
            (self.num_distractors >= 0, "num_distractors", ">= 0"),
            (self.num_junk >= 0, "num_junk", ">= 0"),
            (min(self.image_size) >= 16, "image_size", "(height, width), both >= 16"),
            (0.0 <= self.occlusion_probability <= 1.0, "occlusion_probability", "in [0, 1]"),
            (
                self.group_size is None or 2 <= self.group_size <= len(CUE_ARRANGEMENTS),
                "group_size",
                f"None or in [2, {len(CUE_ARRANGEMENTS)}] (distinct cue arrangements)",
            ),
        )
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected {expected}")

    @property
    def members_per_group(self) -> int:
        """Identities per look-alike group (``local_cues`` variant)."""
        return self.group_size or DEFAULT_GROUP_SIZE

    def cache_key(self) -> dict[str, Any]:
        """The fields that name the cache folder and are recorded in its manifest.

        The ``default`` variant leaves ``variant`` and ``group_size`` out, so that its folders
        keep the names they had before variants existed.
        """
        fields = asdict(self)
        if self.variant == "default":
            del fields["variant"], fields["group_size"]
        return fields

    def fingerprint(self) -> str:
        """Short hash of the configuration and the generator version."""
        text = json.dumps({"version": GENERATOR_VERSION, **self.cache_key()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class SyntheticReID(Market1501):
    """Procedurally drawn pedestrians, written and parsed as a Market-1501 folder.

    Train and test identities are disjoint (pids ``1..num_train_ids`` and the next
    ``num_test_ids``). Each identity walks past ``cameras_per_id`` randomly chosen cameras and is
    captured ``images_per_camera`` times in each; for a test identity the first capture in each
    camera is its query (``..._00.jpg``) and the others go to the gallery. The gallery also
    holds ``num_distractors`` images of unrelated people (pid 0) and ``num_junk`` scene-only
    crops (pid -1, dropped by the parser).

    Appearance is split as in real ReID: the identity owns its clothing colours and pattern,
    sleeve length, lower garment, shoes, skin, hair, body proportions, bag and hat; the camera
    owns the background, illumination gain, colour cast, noise and blur; each frame draws its
    view (front/back), mirroring, stride, scale, translation, illumination jitter and an
    occluder. Colours come from small shared palettes, so a colour histogram identifies a
    person only partly.

    ``variant="local_cues"`` makes the global appearance useless for telling some people apart:
    identities come in look-alike groups of ``group_size`` (train and test identities in
    separate groups) that share every attribute of the default model (clothes, pattern,
    shoes, skin, hair, body proportions; no bag or hat), and each group owns three cue colours
    chosen to contrast with its clothes. Each member wears the three colours as
    :class:`~reidkit.data.pedestrians.LocalCue` patches of equal area at its own ordered choice
    of three places among cap, chest logo, belt bag, knee patch and shoes (each on its own
    left or right side), distinct within the group. The members of a group therefore have the
    same colour histogram up to pose and occlusion; only where the colours sit, which a
    part-level (e.g. horizontal-stripe) feature sees, tells them apart. Occluders (with
    ``occlusion_probability``) hide some cues in some frames. Distractors are drawn as in the
    default model.

    Generation is deterministic in ``seed`` and the other arguments. The images are written to
    ``root/synthetic-reid-<hash>/`` (``<hash>`` of the configuration, next to a
    ``manifest.json``) and reused while that folder exists; a new configuration gets a new
    folder. The defaults make about 600 images of 128×64 pixels in a few seconds.

    Args:
        root: cache folder; defaults to ``$REIDKIT_CACHE`` or ``~/.cache/reidkit``.
        num_train_ids: identities in ``train``.
        num_test_ids: identities in ``query`` and ``gallery``.
        num_cameras: cameras, 2 to 6.
        cameras_per_id: ``(low, high)`` range of the number of cameras that see an identity.
        images_per_camera: captures of an identity per camera (at least 2).
        num_distractors: pid-0 gallery images.
        num_junk: pid -1 gallery images.
        image_size: ``(height, width)`` of the images.
        occlusion_probability: chance that an occluder covers part of a capture.
        seed: seed of every random choice.
        variant: ``"default"`` or ``"local_cues"`` (look-alike groups told apart by local
            cues); the default variant's images and cache folder do not depend on this
            argument's existence.
        group_size: identities per look-alike group of the ``local_cues`` variant (2 to 60,
            default 4; the last group of a split may be smaller); ``None`` for the default.

    Raises:
        ValueError: an argument outside its range.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        num_train_ids: int = 32,
        num_test_ids: int = 32,
        num_cameras: int = 6,
        cameras_per_id: tuple[int, int] = (2, 4),
        images_per_camera: int = 3,
        num_distractors: int = 16,
        num_junk: int = 8,
        image_size: tuple[int, int] = (128, 64),
        occlusion_probability: float = 0.2,
        seed: int = 0,
        variant: str = "default",
        group_size: int | None = None,
    ) -> None:
        self.config = SyntheticConfig(
            num_train_ids=num_train_ids,
            num_test_ids=num_test_ids,
            num_cameras=num_cameras,
            cameras_per_id=cast(tuple[int, int], tuple(cameras_per_id)),
            images_per_camera=images_per_camera,
            num_distractors=num_distractors,
            num_junk=num_junk,
            image_size=cast(tuple[int, int], tuple(image_size)),
            occlusion_probability=occlusion_probability,
            seed=seed,
            variant=variant,
            group_size=group_size,
        )
        self.config.validate()
        cache = Path(root).expanduser() if root is not None else default_cache_dir()
        folder = cache / f"synthetic-reid-{self.config.fingerprint()}"
        if not _is_complete(folder, self.config):
            _generate(folder, self.config)
        super().__init__(folder)


MANIFEST_NAME = "manifest.json"


def _is_complete(folder: Path, config: SyntheticConfig) -> bool:
    """Whether ``folder`` holds a finished generation of ``config``."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return False
    recorded: dict[str, Any] = json.loads(manifest.read_text())
    return recorded.get("version") == GENERATOR_VERSION and recorded.get("config") == json.loads(
        json.dumps(config.cache_key())
    )


def _generate(folder: Path, config: SyntheticConfig) -> None:
    """Draw every image into a private folder, then move it to ``folder`` in one rename.

    Several processes (e.g. distributed ranks) may generate at once: the first rename wins and
    the others discard their copy.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    counts = _write_images(staging, config)
    manifest = {"version": GENERATOR_VERSION, "config": config.cache_key(), "counts": counts}
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    if folder.exists() and not _is_complete(folder, config):
        shutil.rmtree(folder)  # an unfinished or outdated generation of this configuration
    try:
        staging.rename(folder)
    except OSError:
        if not _is_complete(folder, config):
            raise
        shutil.rmtree(staging)


def _write_images(folder: Path, config: SyntheticConfig) -> dict[str, int]:
    """Draw all captures in Market-1501 naming; return the number of files per split folder."""
    splits = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for name in splits.values():
        (folder / name).mkdir(parents=True)
    cameras = [
        CameraStyle.sample(np.random.default_rng([config.seed, 1, camera]))
        for camera in range(config.num_cameras)
    ]
    layout = np.random.default_rng([config.seed, 0])
    counts = dict.fromkeys(splits.values(), 0)
    frame_number = 0

    def capture(pid: int, identity: PedestrianIdentity | None, camera: int, split: str) -> None:
        nonlocal frame_number
        frame_number += int(layout.integers(25, 200))
        rng = np.random.default_rng([config.seed, 2, frame_number])
        frame = FrameCondition.sample(rng, config.occlusion_probability)
        image = render_pedestrian(identity, cameras[camera], frame, config.image_size, rng)
        detection = 0 if split == "query" else int(layout.integers(1, 8))
        sequence = int(layout.integers(1, 7))
        name = f"{pid:04d}" if pid >= 0 else str(pid)
        file_name = f"{name}_c{camera + 1}s{sequence}_{frame_number:06d}_{detection:02d}.jpg"
        image.save(folder / splits[split] / file_name, quality=92)
        counts[splits[split]] += 1

    num_ids = config.num_train_ids + config.num_test_ids
    for pid in range(1, num_ids + 1):
        identity = synthetic_identity(config, pid)
        low, high = config.cameras_per_id
        seen_by = layout.choice(config.num_cameras, int(layout.integers(low, high + 1)), False)
        for camera in sorted(int(c) for c in seen_by):
            for index in range(config.images_per_camera):
                if pid <= config.num_train_ids:
                    capture(pid, identity, camera, "train")
                else:
                    capture(pid, identity, camera, "query" if index == 0 else "gallery")
    for index in range(config.num_distractors):
        identity = PedestrianIdentity.sample(np.random.default_rng([config.seed, 4, index]))
        capture(0, identity, int(layout.integers(config.num_cameras)), "gallery")
    for _ in range(config.num_junk):
        capture(-1, None, int(layout.integers(config.num_cameras)), "gallery")
    return counts


def synthetic_identity(config: SyntheticConfig, pid: int) -> PedestrianIdentity:
    """The appearance of identity ``pid`` (1-based, train then test) in ``config``'s data set.

    Args:
        config: the data set's configuration (its seed and variant matter).
        pid: ``1..num_train_ids`` for train, the next ``num_test_ids`` for test identities.

    Raises:
        ValueError: ``pid`` is not an identity of the data set.
    """
    num_ids = config.num_train_ids + config.num_test_ids
    if not 1 <= pid <= num_ids:
        raise ValueError(f"pid={pid!r}; expected an identity in [1, {num_ids}]")
    if config.variant == "default":
        return PedestrianIdentity.sample(np.random.default_rng([config.seed, 3, pid]))
    size = config.members_per_group
    train_groups = -(-config.num_train_ids // size)
    if pid <= config.num_train_ids:
        group, member = divmod(pid - 1, size)
    else:
        group, member = divmod(pid - 1 - config.num_train_ids, size)
        group += train_groups
    look = PedestrianIdentity.sample(np.random.default_rng([config.seed, 5, group]))
    rng = np.random.default_rng([config.seed, 6, group])
    # Cue colours: drawn among the palette colours that contrast with every colour of the
    # clothes (at least the CUES_PER_IDENTITY most contrasting ones).
    clothes = np.array([look.top_colour, look.top_accent, look.lower_colour, look.shoe_colour])
    palette = np.array(CLOTHING_PALETTE)
    contrast = np.abs(palette[:, None, :] - clothes[None, :, :]).max(axis=2).min(axis=1)
    candidates = np.argsort(-contrast, kind="stable")[
        : max(CUES_PER_IDENTITY, int((contrast > CUE_COLOUR_CONTRAST).sum()))
    ]
    chosen = rng.choice(candidates, CUES_PER_IDENTITY, replace=False)
    colours = [CLOTHING_PALETTE[int(index)] for index in chosen]
    arrangement = CUE_ARRANGEMENTS[int(rng.permutation(len(CUE_ARRANGEMENTS))[member])]
    sides = np.random.default_rng([config.seed, 7, pid]).choice([-1, 1], CUES_PER_IDENTITY)
    cues = tuple(
        LocalCue(slot, colour, int(side))
        for slot, colour, side in zip(arrangement, colours, sides, strict=True)
    )
    return replace(look, bag="none", hat_colour=None, local_cues=cues)
