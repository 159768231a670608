"""Export a refocus result with everything that reproduces it, and read such a record back.

An export folder holds ``refocused.png`` (the pair's bit depth), ``focus_mask.png``, the analysis
maps under ``analysis/`` (the files ``dpfocus analyze`` writes) and ``record.json``: pair paths,
backend, version, ``d_trg``, strength and tolerance. ``dpfocus refocus --record record.json -o X``
re-runs the analysis on the recorded pair and renders the same image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .analysis import save_analysis
from .io import DPPairError, save_image
from .refocus import FocusError
from .session import FocusSession

__all__ = ["RECORD_KIND", "export_refocus", "next_export_folder", "load_record"]

RECORD_KIND = "dpfocus refocus record"
RECORD_FILE = "record.json"


def next_export_folder(parent: str | Path, stem: str) -> Path:
    """``parent/<stem>_refocus_NNN``, the first that does not exist yet (earlier exports stay)."""
    parent = Path(parent)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "pair"
    n = 1
    while (parent / f"{safe}_refocus_{n:03d}").exists():
        n += 1
    return parent / f"{safe}_refocus_{n:03d}"


def export_refocus(
    folder: str | Path,
    session: FocusSession,
    mask: np.ndarray | None = None,
    image: np.ndarray | None = None,
    views: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write the refocused image, the mask, the analysis maps and ``record.json`` into a new folder.

    Parameters
    ----------
    folder : path
        Must not exist or be empty: an export never overwrites anything.
    session : FocusSession
        Its analysis, ``d_trg``, strength and tolerance are recorded.
    mask : ndarray, optional
        The focus mask (non-zero = target), saved as an 8-bit PNG.
    image : ndarray, optional
        The full-quality refocused image; rendered from the session when not given.
    views : (left, right), optional
        Saved beside the record when the analysis has no source paths (in-memory pairs), so the
        record still reproduces.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FocusError(f"{folder}: exists and is not an empty folder; export into a new folder (nothing is overwritten)")
    if session.d_trg is None:
        raise FocusError("nothing to export yet: set a focus target first (paint, click, box or text)")
    analysis = session.analysis
    bits = int(analysis.meta.get("bit_depth", 16))
    bits = bits if bits in (8, 16) else 16
    if image is None:
        _, image = session.render_full()
    if image.shape[:2] != analysis.shape:
        raise FocusError(f"the refocused image is {image.shape[1]}x{image.shape[0]} but the pair is {analysis.shape[1]}x{analysis.shape[0]}; export the full-quality render")
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"refocused": save_image(folder / "refocused.png", image, bits)}
    if mask is not None:
        files["focus_mask"] = save_image(folder / "focus_mask.png", (np.asarray(mask) > 0).astype(np.float32), 8)
    for key, path in save_analysis(analysis, folder / "analysis", bit_depth=bits).items():
        files[f"analysis/{key}"] = path
    record = session.record()
    left, right = analysis.meta.get("left_path"), analysis.meta.get("right_path")
    if (not left or not right) and views is not None:
        name = analysis.meta.get("pair_name", "pair")
        left = str(save_image(folder / f"{name}_L.png", views[0], bits).name)
        right = str(save_image(folder / f"{name}_R.png", views[1], bits).name)
        files["left"], files["right"] = folder / left, folder / right
    record.update(
        kind=RECORD_KIND,
        pair={"name": analysis.meta.get("pair_name"), "left": left, "right": right, "bit_depth": bits},
        quality="full",
        files={k: str(p.relative_to(folder)) for k, p in files.items()},
    )
    record_path = folder / RECORD_FILE
    record_path.write_text(json.dumps(record, indent=2, default=float))
    files["record"] = record_path
    return files


def load_record(path: str | Path) -> dict:
    """Read and check a ``record.json``; pair paths come back absolute (relative = beside the record)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    if not path.is_file():
        raise DPPairError(f"{path}: no such record; give the record.json an export wrote")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DPPairError(f"{path}: not a JSON record ({exc.__class__.__name__}); give the record.json an export wrote") from None
    if not isinstance(record, dict) or record.get("kind") != RECORD_KIND:
        raise DPPairError(f"{path}: not a dpfocus refocus record; give the record.json an export wrote")
    pair = record.get("pair") or {}
    for side in ("left", "right"):
        if not pair.get(side):
            raise DPPairError(f"{path}: the record names no {side} view; pass the pair on the command line")
        p = Path(pair[side])
        pair[side] = str(p if p.is_absolute() else (path.parent / p).resolve())
    d_trg = record.get("d_trg")
    if not isinstance(d_trg, (int, float)) or not np.isfinite(d_trg):
        raise DPPairError(f"{path}: the record has no valid d_trg")
    record["pair"] = pair
    return record
