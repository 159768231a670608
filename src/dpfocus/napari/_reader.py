"""Reader contribution: either view of a DP pair, a folder with one pair, or both files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..io import DPPairError, load_pair, looks_like_pair
from ._layers import pair_layer_data

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


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_error

        show_error(f"DP Focus: {message}")
    except Exception:
        pass
