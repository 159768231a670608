"""Layer naming and layer-data tuples for the project's layers (one place for the conventions)."""

from __future__ import annotations

from typing import Any

from ..io import DPPair

LAYER_SUFFIXES = {
    "left": "[L]",
    "right": "[R]",
    "disparity": "disparity",
    "coc": "CoC",
    "blur_coc": "blur CoC",
    "kernel_index": "kernel index",
    "aif": "all-in-focus",
    "confidence": "confidence",
    "focus_mask": "focus mask",
    "refocused": "refocused",
    "focus_sweep": "focus sweep",
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


def analysis_layer_data(analysis, stem: str) -> list[tuple[Any, dict, str]]:
    """Disparity, CoC, blur CoC, confidence, kernel index (labels) and all-in-focus as layer-data
    tuples. The blur CoC (``Analysis.blur``: the blur each pixel shows, which the kernel index and
    the renderer follow) shares the CoC layer's colours; it equals the CoC where a backend keeps no
    separate blur map."""
    import numpy as np

    base = {"pair_id": analysis.meta.get("pair_id"), "backend": analysis.backend, "J": analysis.coc_per_disparity}
    limit_d = float(max(np.abs(analysis.disparity).max(), 1e-3))
    limit_c = float(max(np.abs(analysis.coc).max(), np.abs(analysis.blur).max(), 1e-3))
    features = {  # napari maps label values through "index"; label = kernel index + 1 (0 = none)
        "index": np.arange(len(analysis.kernel_cocs)) + 1,
        "kernel_index": np.arange(len(analysis.kernel_cocs)),
        "coc_px": analysis.kernel_cocs,
        "radius_px": np.abs(analysis.kernel_cocs),
        "side": np.where(analysis.kernel_cocs > 0, "behind focus", np.where(analysis.kernel_cocs < 0, "in front", "in focus")),
    }
    return [
        (analysis.aif, {"name": layer_name(stem, "aif"), "rgb": analysis.aif.ndim == 3, "contrast_limits": (0.0, 1.0),
                        "metadata": {"dpfocus": dict(base, kind="aif")}}, "image"),
        (analysis.confidence, {"name": layer_name(stem, "confidence"), "colormap": "gray", "contrast_limits": (0.0, 1.0),
                               "visible": False, "metadata": {"dpfocus": dict(base, kind="confidence", units="[0, 1]")}}, "image"),
        (analysis.kernel_index.astype(np.int32) + 1, {"name": layer_name(stem, "kernel_index"), "visible": False, "features": features,
                                                      "metadata": {"dpfocus": dict(base, kind="kernel_index", units="bank index + 1 (0 = none)")}}, "labels"),
        (analysis.blur, {"name": layer_name(stem, "blur_coc"), "colormap": "PiYG", "contrast_limits": (-limit_c, limit_c), "visible": False,
                         "metadata": {"dpfocus": dict(base, kind="blur_coc", units="px (signed radius of the blur each pixel shows)")}}, "image"),
        (analysis.coc, {"name": layer_name(stem, "coc"), "colormap": "PiYG", "contrast_limits": (-limit_c, limit_c), "visible": False,
                        "metadata": {"dpfocus": dict(base, kind="coc", units="px (signed radius)")}}, "image"),
        (analysis.disparity, {"name": layer_name(stem, "disparity"), "colormap": "coolwarm", "contrast_limits": (-limit_d, limit_d),
                              "opacity": 0.85, "metadata": {"dpfocus": dict(base, kind="disparity", units="px")}}, "image"),
    ]


def refocused_layer_data(image, stem: str, d_trg: float, strength: float, scale: float = 1.0) -> tuple[Any, dict, str]:
    return (image, {"name": layer_name(stem, "refocused"), "rgb": image.ndim == 3, "contrast_limits": (0.0, 1.0), "scale": (scale, scale),
                    "metadata": {"dpfocus": {"kind": "refocused", "d_trg": d_trg, "strength": strength}}}, "image")


def focus_mask_layer_data(mask, stem: str, pair_id: str | None) -> tuple[Any, dict, str]:
    """The pair's focus mask (non-zero = target) as a uint8 labels layer to paint on."""
    import numpy as np

    return ((np.asarray(mask) > 0).astype(np.uint8), {"name": layer_name(stem, "focus_mask"), "opacity": 0.45,
                                                      "metadata": {"dpfocus": {"kind": "focus_mask", "pair_id": pair_id}}}, "labels")


def sweep_layer_data(stack, stem: str, disparities, strength: float, tolerance: float, scale: float = 1.0) -> tuple[Any, dict, str]:
    """A focus sweep (``N x H x W [x 3]``, float in [0, 1] or uint8, one refocused image per focus
    plane) as an image layer whose first axis is the plane; ``metadata["dpfocus"]["d_trg"]`` lists
    each plane's disparity."""
    import numpy as np

    top = 255.0 if stack.dtype == np.uint8 else 1.0
    return (stack, {"name": layer_name(stem, "focus_sweep"), "rgb": stack.ndim == 4, "contrast_limits": (0.0, top),
                    "scale": (1.0, scale, scale),
                    "metadata": {"dpfocus": {"kind": "focus_sweep", "d_trg": [float(d) for d in disparities], "units": "px",
                                             "strength": strength, "tolerance": tolerance}}}, "image")
