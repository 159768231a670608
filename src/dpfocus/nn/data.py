"""Synthetic DP training data from the project's scene generator (never the benchmark's seeds).

Scenes are randomised widely so the network transfers: PSF shape (split softness, rim, fall-off),
blur from phone-small to DSLR-large (|CoC| up to 25 px), noise, left/right gain ramps, grey and RGB,
8 and 16 bit, optionally PSFs shaped like calibrated real ones (polygonal stops, unequal halves,
off-axis vignetting), and optionally featureless surfaces (sky, plain walls, blown highlights) and
overexposed crops, which real photos have and the generator's grainy surfaces do not.
:func:`make_shards` renders scenes into ``.npz`` shards (uint16 images) so training can reuse them;
:class:`SceneSampler` draws random crops from shards or renders on the fly, and, given a
:class:`RealPairPool`, mixes in crops of real DP pairs with sharp targets (a DPDD-layout folder):
those carry no disparity, so their crops train the deblur and reblur terms only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluate import HELD_OUT_SEED
from ..io import quantise
from ..scenes import SceneConfig, generate_scene

__all__ = ["TRAIN_SEED_OFFSET", "training_config", "render_training_scene", "make_shards", "ShardRecipe", "SceneSampler", "Batch", "RealPairPool", "list_real_pairs"]

TRAIN_SEED_OFFSET = 100_000  # training seeds: TRAIN_SEED_OFFSET + i, far from samples and the benchmark


def training_config(rng: np.random.Generator, height: int, width: int, max_coc: float = 25.0, featureless: float = 0.0,
                    psf_variety: float = 0.0) -> SceneConfig:
    """One scene's randomised generator settings (``featureless``: each surface's chance of being
    featureless; ``psf_variety``: the chance of a PSF shaped like a calibrated one; see :class:`SceneConfig`)."""
    top = float(rng.uniform(2.0, max_coc))
    return SceneConfig(
        height=height,
        width=width,
        max_coc=(min(1.0, top), top),
        grey_probability=0.25,
        noise_shot=(1e-5, 8e-3),
        noise_read=(1e-8, 1e-4),
        vignetting=(0.0, 0.2),
        bit_depth=int(rng.choice([8, 16])),
        with_refocus=False,
        featureless_probability=featureless,
        psf_variety=psf_variety,
    )


#: training scenes (shards and on-the-fly) are this many px high and wide; crops fit inside
SCENE_SIZE = (192, 256)


IMAGE_KEYS = ("left", "right", "aif", "combined")  # stored as uint16 in shards and in memory


def _rgb(img: np.ndarray) -> np.ndarray:
    """Grey repeated to three channels (the network always sees RGB)."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def render_training_scene(seed: int, height: int = SCENE_SIZE[0], width: int = SCENE_SIZE[1], max_coc: float = 25.0, featureless: float = 0.0,
                          psf_variety: float = 0.0) -> dict:
    """One training scene as arrays: left, right, aif (H x W x 3; grey repeated), disparity, coc, J."""
    if HELD_OUT_SEED <= seed < HELD_OUT_SEED + 100_000:
        raise ValueError(f"seed {seed} is a benchmark seed; training never uses {HELD_OUT_SEED}+")
    rng = np.random.default_rng(seed + 7)
    scene = generate_scene(seed, training_config(rng, height, width, max_coc, featureless, psf_variety))
    return {
        "left": _rgb(scene.left),
        "right": _rgb(scene.right),
        "aif": _rgb(scene.aif),
        "combined": _rgb(scene.combined),
        "disparity": scene.disparity.astype(np.float32),
        "coc": scene.coc.astype(np.float32),
        "J": np.float32(scene.coc_per_disparity),
        "grey": scene.left.ndim == 2,
    }


SCENES_PER_SHARD = 200


def check_whole(name: str, value: object, least: int) -> None:
    """ValueError unless ``value`` is a whole number >= ``least`` (a config field's check)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def check_number(name: str, value: object, positive: bool = False) -> None:
    """ValueError unless ``value`` is a finite number > 0 (``positive``) or >= 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")


def check_chance(name: str, value: object) -> None:
    """ValueError unless ``value`` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a chance between 0 and 1, got {value!r}")


def shard_path(folder: str | Path, start: int) -> Path:
    """The shard :func:`make_shards` writes for the scenes from ``start`` on."""
    return Path(folder) / f"scenes_{start:07d}.npz"


@dataclass(frozen=True)
class ShardRecipe:
    """One ``dpfocus train --make-shards`` call: scenes ``first`` to ``first + count - 1`` and how
    they are drawn. A training config lists the calls that rendered its shard folder, so a missing
    or half-rendered folder can be named and re-rendered."""

    first: int
    count: int
    scene_size: tuple[int, int] = SCENE_SIZE
    featureless: float = 0.0
    psf_variety: float = 0.0

    @classmethod
    def from_dict(cls, spec: object) -> "ShardRecipe":
        """ValueError naming the first field that is missing, of a wrong type or out of range."""
        if not isinstance(spec, dict):
            raise ValueError(f"a recipe is an object like {{\"first\": 0, \"count\": 2000}}, got {spec!r}")
        unknown = set(spec) - {"first", "count", "scene_size", "featureless", "psf_variety"}
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))} (fields: first, count, scene_size, featureless, psf_variety)")
        for name, least in (("first", 0), ("count", 1)):
            check_whole(name, spec.get(name), least)
        size = spec.get("scene_size", list(SCENE_SIZE))
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 64 for n in size)):
            raise ValueError(f"scene_size must be [height, width], each a whole number >= 64, got {size!r}")
        for name in ("featureless", "psf_variety"):
            check_chance(name, spec.get(name, 0.0))
        return cls(spec["first"], spec["count"], (size[0], size[1]), float(spec.get("featureless", 0.0)), float(spec.get("psf_variety", 0.0)))

    def paths(self, folder: str | Path) -> list[Path]:
        """The shard files this call writes into ``folder``."""
        return [shard_path(folder, start) for start in range(self.first, self.first + self.count, SCENES_PER_SHARD)]

    def command(self, folder: str | Path) -> str:
        """The ``dpfocus train --make-shards`` command line that renders these scenes into ``folder``."""
        words = [f"dpfocus train --make-shards {self.first} {self.count}"]
        if self.scene_size != SCENE_SIZE:
            words.append(f"--scene-size {self.scene_size[0]} {self.scene_size[1]}")
        if self.featureless:
            words.append(f"--featureless {self.featureless:g}")
        if self.psf_variety:
            words.append(f"--psf-variety {self.psf_variety:g}")
        words.append(f"-o {folder}")
        return " ".join(words)


def make_shards(out_dir: str | Path, first: int, count: int, per_shard: int = SCENES_PER_SHARD, height: int = SCENE_SIZE[0],
                width: int = SCENE_SIZE[1], featureless: float = 0.0, psf_variety: float = 0.0, log=print) -> list[Path]:
    """Render ``count`` training scenes (seeds ``TRAIN_SEED_OFFSET + first + i``) into npz shards;
    ``featureless`` is each surface's chance of being featureless (sky, plain walls, highlights),
    ``psf_variety`` each scene's chance of a PSF shaped like a calibrated real one."""
    if first < 0 or count < 1:
        raise ValueError(f"give a first scene >= 0 and a count >= 1 (got {first} and {count})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(first, first + count, per_shard):
        path = shard_path(out, start)
        if path.exists():
            written.append(path)
            continue
        scenes = [render_training_scene(TRAIN_SEED_OFFSET + s, height, width, featureless=featureless, psf_variety=psf_variety)
                  for s in range(start, min(start + per_shard, first + count))]
        arrays = {key: quantise(np.stack([s[key] for s in scenes]), 16) for key in IMAGE_KEYS}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays, disparity=np.stack([s["disparity"] for s in scenes]).astype(np.float16),
                 coc=np.stack([s["coc"] for s in scenes]).astype(np.float16), J=np.array([s["J"] for s in scenes], np.float32))
        tmp.rename(path)
        written.append(path)
        log(f"{path.name}: {len(scenes)} scenes")
    return written


@dataclass
class Batch:
    """A training batch (N x 3 x H x W float32 images in [0, 1]; disparity/coc N x 1 x H x W, px).

    ``has_depth`` (N,) is False for crops of real pairs, whose disparity and CoC are unknown (zeros
    here; the loss leaves them out)."""

    left: np.ndarray
    right: np.ndarray
    aif: np.ndarray
    combined: np.ndarray
    disparity: np.ndarray
    coc: np.ndarray
    J: np.ndarray
    has_depth: np.ndarray | None = None


def list_real_pairs(folder: str | Path) -> list[tuple[Path, Path, str]]:
    """``(left, right, name)`` of the DP pairs in ``folder`` that come with a sharp target (DPDD:
    ``*_l/source``, ``*_r/source``, ``*_c/target``). ValueError naming the folder when there are none."""
    from ..io import DPPairError, dpdd_extras, list_pairs

    try:
        pairs = list_pairs(folder)
    except DPPairError as exc:
        raise ValueError(str(exc)) from None
    found = [(left, right, name) for left, right, name, _ in pairs if "target" in dpdd_extras(left)]
    if not found:
        raise ValueError(f"{folder}: no dual-pixel pairs with a sharp target; give a DPDD-layout folder "
                         "(train_l/source, train_r/source, train_c/source, train_c/target)")
    return found


class RealPairPool:
    """Crops of real DP pairs with sharp targets, from a few pairs held in memory at a time.

    A folder of full-size pairs does not fit in memory (DPDD's 350 training pairs would take 16 GB as
    uint16), so ``size`` pairs are held, and every ``refresh`` crops one of them is replaced by a
    pair drawn at random. Its state (which pairs, how many crops) goes into the training checkpoint.
    """

    def __init__(self, folder: str | Path, seed: int = 0, size: int = 8, refresh: int = 16) -> None:
        self.pairs = list_real_pairs(folder)
        self.rng = np.random.default_rng(seed + 99)
        self.size = min(size, len(self.pairs))
        self.refresh = refresh
        self.crops = 0
        self.members = [int(i) for i in self.rng.choice(len(self.pairs), self.size, replace=False)]
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def state(self) -> dict:
        return {"members": list(self.members), "crops": self.crops, "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.members, self.crops = [int(i) for i in state["members"]], int(state["crops"])
        self.rng.bit_generator.state = state["rng"]
        self._cache = {}

    def _load(self, index: int) -> dict[str, np.ndarray]:
        if index not in self._cache:
            from ..io import load_pair

            left, right, _ = self.pairs[index]
            pair = load_pair(left, right)  # DPPairError names an unreadable file
            images = {"left": pair.left, "right": pair.right, "aif": pair.target,
                      "combined": pair.photo}
            self._cache[index] = {k: quantise(_rgb(v), 16) for k, v in images.items()}
        return self._cache[index]

    def smallest_side(self) -> int:
        """The smaller side of the first pair (crops must fit; DPDD pairs all have one size)."""
        return min(self._load(self.members[0])["left"].shape[:2])

    def scene(self) -> dict:
        """One held pair, as a scene dict without depth (disparity and CoC zero, ``has_depth`` False)."""
        if self.crops and self.crops % self.refresh == 0:
            slot = int(self.rng.integers(self.size))
            gone = self.members[slot]
            self.members[slot] = int(self.rng.integers(len(self.pairs)))
            if gone not in self.members:
                self._cache.pop(gone, None)
        self.crops += 1
        index = self.members[int(self.rng.integers(self.size))]
        item = dict(self._load(index))
        h, w = item["left"].shape[:2]
        zeros = np.zeros((h, w), np.float16)
        return {**item, "disparity": zeros, "coc": zeros, "J": np.float32(0.0), "has_depth": False}


def list_shards(folder: str | Path) -> list[Path]:
    """The training shards :func:`make_shards` wrote into ``folder``, in seed order."""
    return sorted(Path(folder).glob("scenes_*.npz"))


def shard_scene_size(shard: Path) -> tuple[int, int]:
    """Height and width of the scenes in a training shard."""
    with np.load(shard) as z:
        return tuple(int(n) for n in z["disparity"].shape[1:3])


def _load_shards(shards: list[Path]) -> dict[str, np.ndarray]:
    """All scenes of the shards in one array per key, filled shard by shard (peak memory: the data
    plus one shard, not twice the data)."""
    counts = []
    for p in shards:
        with np.load(p) as z:
            counts.append(len(z["J"]))
    with np.load(shards[0]) as z:
        data = {k: np.empty((sum(counts), *z[k].shape[1:]), z[k].dtype) for k in z.files}
    start = 0
    for p, n in zip(shards, counts):
        with np.load(p) as z:
            for k in data:
                data[k][start : start + n] = z[k]
        start += n
    return data


def _overexpose(item: dict[str, np.ndarray], gain: float) -> None:
    """Brighten a crop by ``gain`` in linear light and clip, as a sensor saturates: each view's
    photodiodes clip on their own, the photo is the mean of the clipped views, and the sharp target
    clips where the scene itself is too bright. Disparity and CoC stay what they were."""
    from ..optics import linear_to_srgb, srgb_to_linear

    views = {k: np.minimum(srgb_to_linear(item[k]) * np.float32(gain), 1.0) for k in ("left", "right", "aif")}
    views["combined"] = 0.5 * (views["left"] + views["right"])
    for k, v in views.items():
        item[k] = linear_to_srgb(v).astype(np.float32)


def _on_the_fly_scene(seed: int, size: tuple[int, int], psf_variety: float) -> dict:
    """A training scene with its images as 16-bit integers, as shards hold them (module level: the
    sampler's worker processes call it)."""
    s = render_training_scene(seed, *size, psf_variety=psf_variety)
    return {k: (quantise(v, 16) if k in IMAGE_KEYS else v) for k, v in s.items()}


class SceneSampler:
    """Random crops (with flips that keep DP geometry) from shards, or from scenes rendered now.

    A horizontal flip must also swap the views (the mirrored left kernel is the right one); then
    ``B_R(x) = B_L(x - d)`` holds with the same signed disparity and CoC. A vertical flip is free.
    """

    def __init__(self, shards: list[Path] | None, seed: int = 0, crop: int = 128, scene_size: tuple[int, int] = SCENE_SIZE,
                 highlight_clip: float = 0.0, real: RealPairPool | None = None, real_fraction: float = 0.0,
                 psf_variety: float = 0.0, workers: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        # on-the-fly scenes rendered ahead by this many processes, in seed order (the same scenes
        # whatever the number); 0: rendered here when needed
        self.workers = workers
        self._pool = None
        self._ahead: deque = deque()
        self.crop = crop
        self.highlight_clip = highlight_clip
        self.psf_variety = psf_variety  # scenes rendered on the fly
        self.real = real
        self.real_fraction = real_fraction if real is not None else 0.0
        self.scene_size = scene_size
        self.data = None
        self._next_seed = 5_000_000 + seed * 100_000  # on-the-fly scenes never overlap the shards
        if shards:
            self.data = _load_shards(shards)

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data["J"])

    def state(self) -> dict:
        """What a checkpoint keeps, so a resumed run draws the crops and scenes an uninterrupted one would."""
        return {"rng": self.rng.bit_generator.state, "next_seed": self._next_seed}

    def set_state(self, state: dict) -> None:
        """Back to a :meth:`state`; one without ``next_seed`` (checkpoints before stop 22 kept only
        the crop generator) leaves the on-the-fly scenes where they are."""
        self.rng.bit_generator.state = state["rng"]
        if state.get("next_seed") is not None:
            self._next_seed = int(state["next_seed"])
        self._ahead.clear()

    def close(self) -> None:
        """Stop the rendering processes (a later scene starts them again)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._ahead.clear()

    def _rendered(self) -> dict:
        """The next on-the-fly scene."""
        self._next_seed += 1
        if not self.workers:
            return _on_the_fly_scene(TRAIN_SEED_OFFSET + self._next_seed, self.scene_size, self.psf_variety)
        if self._pool is None:
            import multiprocessing as mp

            # spawn, not fork: the training process runs torch's thread pools
            self._pool = mp.get_context("spawn").Pool(self.workers)
        # the queue's head is always the scene of seed _next_seed (cleared when the state is set)
        while len(self._ahead) < 4 * self.workers:
            seed = TRAIN_SEED_OFFSET + self._next_seed + len(self._ahead)
            self._ahead.append(self._pool.apply_async(_on_the_fly_scene, (seed, self.scene_size, self.psf_variety)))
        return self._ahead.popleft().get()

    def _scene(self) -> dict:
        if self.real_fraction and self.rng.uniform() < self.real_fraction:
            return self.real.scene()
        if self.data is not None:
            i = int(self.rng.integers(len(self)))
            return {k: self.data[k][i] for k in self.data}
        return self._rendered()

    def batch(self, size: int) -> Batch:
        cols: dict[str, list] = {k: [] for k in ("left", "right", "aif", "combined", "disparity", "coc", "J", "has_depth")}
        for _ in range(size):
            s = self._scene()
            cols["has_depth"].append(bool(s.get("has_depth", True)))
            h, w = s["disparity"].shape
            y = int(self.rng.integers(0, h - self.crop + 1))
            x = int(self.rng.integers(0, w - self.crop + 1))
            sl = (slice(y, y + self.crop), slice(x, x + self.crop))
            item = {k: s[k][sl].astype(np.float32) for k in ("left", "right", "aif", "combined", "disparity", "coc")}
            for k in IMAGE_KEYS:
                item[k] /= 65535.0
            if self.highlight_clip > 0 and self.rng.uniform() < self.highlight_clip:
                _overexpose(item, float(self.rng.uniform(1.5, 4.0)))
            if self.rng.uniform() < 0.5:  # mirror + swap views: same signed disparity and CoC
                item = {k: v[:, ::-1] for k, v in item.items()}
                item["left"], item["right"] = item["right"], item["left"]
            if self.rng.uniform() < 0.5:
                item = {k: v[::-1] for k, v in item.items()}
            for k in IMAGE_KEYS:
                cols[k].append(np.ascontiguousarray(item[k].transpose(2, 0, 1)))
            for k in ("disparity", "coc"):
                cols[k].append(np.ascontiguousarray(item[k])[None])
            cols["J"].append(np.float32(s["J"]))
        has_depth = np.array(cols.pop("has_depth"), bool)
        return Batch(**{k: np.stack(v).astype(np.float32) for k, v in cols.items()}, has_depth=has_depth)
