"""Reader contribution: either view of a DP pair, a folder with one pair, or both files; an
analysis folder (``dpfocus analyze -o`` or an export's ``analysis/``), whose maps open as layers
and whose analysis the focus dock and the kernel inspector use without running it again; and an
export folder, which also brings back its focus mask, refocused image and focus controls, so the
work goes on where it was left."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..analysis import ANALYSIS_FILES
from ..export import RECORD_FILE
from ..io import DPPairError, load_pair, looks_like_pair
from ._layers import analysis_layer_data, focus_mask_layer_data, layer_name, pair_layer_data, refocused_layer_data

PathLike = str | os.PathLike


def get_reader(path: PathLike | list[PathLike]) -> Callable | None:
    """Return a reader for DP pairs, or None for paths this plugin does not handle. Never raises."""
    try:
        if isinstance(path, (list, tuple)):
            if len(path) == 2 and all(Path(p).is_file() for p in path):
                return lambda _: _read(Path(path[0]), Path(path[1]))
            if len(path) != 1:
                return None
            path = path[0]
        if Path(path).is_dir() and (Path(path) / ANALYSIS_FILES["record"]).is_file():
            return lambda _: _read_analysis(Path(path))
        if Path(path).is_dir() and (Path(path) / RECORD_FILE).is_file() and (Path(path) / "analysis").is_dir():
            return lambda _: _read_export(Path(path))
        if looks_like_pair(path):
            return lambda _: _read(Path(path))
    except Exception:  # a reader lookup must never break napari's open dialog
        return None
    return None


def _read(left: Path, right: Path | None = None) -> list[tuple[Any, dict, str]]:
    try:
        return pair_layer_data(load_pair(left, right))
    except DPPairError as exc:
        _notify(str(exc))
        return []


def _read_export(folder: Path) -> list[tuple[Any, dict, str]]:
    """An export: its analysis (views and maps), then its focus mask and refocused image as the
    pair's own layers; the focus dock takes up the recorded target, strength and tolerance."""
    from ..export import load_record
    from ..io import read_image

    try:
        record = load_record(folder / RECORD_FILE)
        mask = read_image(folder / "focus_mask.png")[0] if (folder / "focus_mask.png").is_file() else None
        refocused = read_image(folder / "refocused.png")[0] if (folder / "refocused.png").is_file() else None
    except DPPairError as exc:
        _notify(str(exc))
        return []
    layers, analysis = _analysis_layers(folder / "analysis")
    if analysis is None:
        return layers
    stem, pair_id = analysis.meta.get("pair_name") or folder.name, analysis.meta["pair_id"]
    controls = {k: float(record[k]) for k in ("d_trg", "strength", "tolerance") if isinstance(record.get(k), (int, float))}
    analysis.meta["restored_focus"] = controls  # the focus dock's session for this pair starts from it
    if refocused is not None and refocused.shape[:2] == analysis.shape:
        data, kwargs, kind = refocused_layer_data(refocused, stem, controls.get("d_trg"), controls.get("strength", 1.0))
        kwargs["metadata"]["dpfocus"].update(pair_id=pair_id, source=str(folder), tolerance=controls.get("tolerance", 0.0), quality="full")
        layers.append((data, kwargs, kind))
    if mask is not None:
        mask = mask.max(axis=2) if mask.ndim == 3 else mask
        if mask.shape == analysis.shape:
            data, kwargs, kind = focus_mask_layer_data(mask > 0.5, stem, pair_id)
            kwargs["metadata"]["dpfocus"]["source"] = str(folder)
            layers.append((data, kwargs, kind))
        else:
            _notify(f"{folder / 'focus_mask.png'}: is {mask.shape[1]}x{mask.shape[0]} but the analysis is "
                    f"{analysis.shape[1]}x{analysis.shape[0]}; the mask was left out", error=False)
    return layers


def _read_analysis(folder: Path) -> list[tuple[Any, dict, str]]:
    return _analysis_layers(folder)[0]


def _analysis_layers(folder: Path):
    """The pair's views (when its files are still where the analysis found them) and the maps; the
    analysis joins the session's analyses, so refocusing and the inspector work at once."""
    from ..analysis import load_analysis

    try:
        analysis = load_analysis(folder)
    except DPPairError as exc:
        _notify(str(exc))
        return [], None
    meta = analysis.meta
    stem = meta.get("pair_name") or folder.name
    pair_id = meta.setdefault("pair_id", str(folder.resolve()))
    layers = []
    left, right = meta.get("left_path"), meta.get("right_path")
    if left and right and Path(left).is_file() and Path(right).is_file():
        try:
            pair = load_pair(left, right)
            if pair.shape[:2] == analysis.shape:
                layers = pair_layer_data(pair)
                for _, kwargs, _ in layers:  # the same pair, named as the analysis names it
                    info = kwargs["metadata"]["dpfocus"]
                    kwargs["name"] = layer_name(stem, info["kind"])
                    info.update(pair_id=pair_id, name=stem)
        except DPPairError:
            layers = []
    if not layers:
        _notify(f"{folder}: the pair's views ({left or 'not recorded'}) are not there; the maps open and refocusing works, "
                "but the analysis dock needs the views to run again", error=False)
    for data, kwargs, kind in analysis_layer_data(analysis, stem):
        kwargs["metadata"]["dpfocus"]["pair_id"] = pair_id
        kwargs["metadata"]["dpfocus"]["source"] = str(folder)
        layers.append((data, kwargs, kind))
    from ._widgets import register_analysis

    register_analysis(analysis)
    return layers, analysis


def _notify(message: str, error: bool = True) -> None:
    try:
        from napari.utils.notifications import show_error, show_info

        (show_error if error else show_info)(f"DP Focus: {message}")
    except Exception:
        pass
