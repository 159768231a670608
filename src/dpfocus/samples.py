"""Bundled sample DP scenes (rendered by :mod:`dpfocus.scenes`) and their ground truth.

Each sample lives in ``dpfocus/sample_data/<name>/`` (``sample_data/`` at the repository root
points there) as ``<name>_L.png`` / ``<name>_R.png`` (16-bit), the ordinary photo
``<name>_combined.png``, and ground truth: ``<name>_aif.png``, ``<name>_disparity.tif`` and
``<name>_coc.tif`` (float32, px), ``<name>_labels.png`` (object masks) and ``scene.json`` (seed,
config, objects, camera). ``python scripts/make_sample_data.py`` re-renders them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np

from .io import DPPair, load_pair, read_image, save_image, save_map
from .scenes import Scene, SceneConfig, generate_scene

__all__ = ["SAMPLES", "sample_names", "sample_dir", "load_sample", "load_ground_truth", "write_sample"]

#: name -> (seed, scene config) of each bundled sample
SAMPLES: dict[str, tuple[int, SceneConfig]] = {
    "garden": (101, SceneConfig(height=432, width=648, focus="on", max_coc=(9.0, 9.0), n_objects=(3, 4), ground_probability=1.0)),
    "workshop": (23, SceneConfig(height=432, width=648, focus="front", max_coc=(12.0, 12.0), n_objects=(3, 4), ground_probability=1.0)),
    "gallery": (37, SceneConfig(height=432, width=648, focus="behind", max_coc=(10.0, 10.0), n_objects=(3, 5), ground_probability=0.0)),
    "microscope": (41, SceneConfig(height=360, width=480, focus="on", max_coc=(7.0, 7.0), n_objects=(2, 3), ground_probability=0.0, grey_probability=1.0)),
}


def sample_names() -> list[str]:
    return list(SAMPLES)


def sample_dir(name: str) -> Path:
    """Folder of a bundled sample (inside the installed package)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    return Path(str(resources.files("dpfocus") / "sample_data" / name))


def load_sample(name: str) -> DPPair:
    """The bundled pair ``name`` as a :class:`~dpfocus.io.DPPair` (its ordinary photo attached)."""
    folder = sample_dir(name)
    pair = load_pair(folder / f"{name}_L.png")
    combined = folder / f"{name}_combined.png"
    if combined.exists():
        pair.combined = read_image(combined)[0]
    return pair


def load_ground_truth(name: str) -> dict:
    """Ground truth of a sample: aif, disparity, coc, labels (arrays) and the scene record."""
    import tifffile

    folder = sample_dir(name)
    return {
        "aif": read_image(folder / f"{name}_aif.png")[0],
        "disparity": tifffile.imread(folder / f"{name}_disparity.tif"),
        "coc": tifffile.imread(folder / f"{name}_coc.tif"),
        "labels": np.round(read_image(folder / f"{name}_labels.png")[0] * 255).astype(np.int32),
        "scene": json.loads((folder / "scene.json").read_text()),
    }


def write_sample(folder: Path, name: str, seed: int, config: SceneConfig) -> Scene:
    """Render a scene and write it in the sample layout."""
    scene = generate_scene(seed, config)
    folder.mkdir(parents=True, exist_ok=True)
    bits = config.bit_depth
    save_image(folder / f"{name}_L.png", scene.left, bits)
    save_image(folder / f"{name}_R.png", scene.right, bits)
    save_image(folder / f"{name}_combined.png", scene.combined, bits)
    save_image(folder / f"{name}_aif.png", scene.aif, bits)
    save_map(folder / f"{name}_disparity.tif", scene.disparity)
    save_map(folder / f"{name}_coc.tif", scene.coc)
    save_image(folder / f"{name}_labels.png", scene.labels.astype(np.float32) / 255.0, 8)
    record = {
        "name": name,
        "seed": seed,
        "config": asdict(config),
        "objects": scene.objects,
        "camera": {k: v for k, v in scene.meta.items() if k not in ("config", "seconds_views", "seconds_total")},
        "units": {"disparity": "px (B_R(x) = B_L(x - d))", "coc": "px, signed radius, + = behind focus"},
        "labels": "8-bit PNG, value = object label (0 = backdrop/ground)",
    }
    (folder / "scene.json").write_text(json.dumps(record, indent=2))
    return scene
