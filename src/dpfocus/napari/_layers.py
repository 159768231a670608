"""Layer naming and layer-data tuples for the project's layers (one place for the conventions)."""

from __future__ import annotations

from typing import Any

from ..io import DPPair

LAYER_SUFFIXES = {
    "left": "[L]",
    "right": "[R]",
    "disparity": "disparity",
    "coc": "CoC",
    "kernel_index": "kernel index",
    "aif": "all-in-focus",
    "confidence": "confidence",
    "focus_mask": "focus mask",
    "refocused": "refocused",
}


def layer_name(stem: str, kind: str) -> str:
    """``"<stem> <suffix>"`` per DESIGN.md, e.g. ``layer_name("garden", "left") == "garden [L]"``."""
    return f"{stem} {LAYER_SUFFIXES[kind]}"


def pair_layer_data(pair: DPPair) -> list[tuple[Any, dict, str]]:
    """Both views of a pair as napari image layer-data tuples, with ``"dpfocus"`` metadata."""
    out = []
    for kind, img in (("left", pair.left), ("right", pair.right)):
        meta = dict(pair.metadata(), view=kind, kind=kind, units="display-encoded [0, 1]")
        out.append(
            (
                img,
                {
                    "name": layer_name(pair.name, kind),
                    "metadata": {"dpfocus": meta},
                    "contrast_limits": (0.0, 1.0),
                    "rgb": img.ndim == 3,
                    "visible": kind == "left",
                },
                "image",
            )
        )
    return out
