"""Kernel-bank inspection: what each kernel index stands for, and where each is used.

Qt-free, for the napari kernel inspector, the CLI (`dpfocus kernels`) and scripts. The per-pixel
blend itself lives on :class:`~dpfocus.analysis.Analysis` (``kernel_weights``, ``effective_kernels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analysis import Analysis
from .refocus import FocusError

__all__ = ["KernelAtlas", "crop_to_support", "kernel_atlas", "kernel_usage", "pixel_kernels", "PixelKernels"]


@dataclass
class KernelAtlas:
    """The bank as one picture: a tile per kernel index (the combined kernel; L/R are mirror halves).

    Attributes
    ----------
    image : ndarray, float32 in [0, 1]
        Each kernel scaled to its own maximum (shape, not height, is what a tile shows).
    boxes : list of (index, y0, x0, height, width)
        Where each index's tile lies in ``image``.
    labels : list of str
        One caption per index, e.g. ``"#3  CoC -4.0 px (in front)"``.
    """

    image: np.ndarray
    boxes: list[tuple[int, int, int, int, int]]
    labels: list[str]


def _side(coc: float) -> str:
    return "behind focus" if coc > 0 else "in front" if coc < 0 else "in focus"


def crop_to_support(kernels: np.ndarray, margin: int = 1) -> np.ndarray:
    """Crop a stack of centred kernels (N x S x S) to the centred square that holds all their mass."""
    support = np.flatnonzero(kernels.max(axis=(0, 1)) > 1e-6 * kernels.max())
    s = kernels.shape[-1]
    if support.size == 0:
        return kernels
    half = max(abs(int(support.min()) - s // 2), abs(int(support.max()) - s // 2)) + margin
    c = s // 2
    lo, hi = max(c - half, 0), min(c + half + 1, s)
    return kernels[:, lo:hi, lo:hi]


def kernel_atlas(analysis: Analysis, columns: int | None = None, gap: int = 3, which: str = "combined") -> KernelAtlas:
    """Lay out every bank entry as a labelled tile (``which``: "combined", "left" or "right")."""
    n = len(analysis.kernel_cocs)
    if n == 0:
        raise FocusError("this analysis has an empty kernel bank")
    if which not in ("combined", "left", "right"):
        raise ValueError(f"which must be 'combined', 'left' or 'right', not {which!r}")
    stack = {"left": analysis.kernels_left, "right": analysis.kernels_right}.get(which)
    if stack is None:
        stack = (analysis.kernels_left + analysis.kernels_right) / 2
    stack = crop_to_support(stack)
    size = stack.shape[-1]
    columns = columns or int(np.ceil(np.sqrt(n * 1.6)))
    rows = int(np.ceil(n / columns))
    image = np.zeros((rows * (size + gap) + gap, columns * (size + gap) + gap), np.float32)
    boxes, labels = [], []
    for i in range(n):
        r, c = divmod(i, columns)
        y0, x0 = gap + r * (size + gap), gap + c * (size + gap)
        image[y0 : y0 + size, x0 : x0 + size] = stack[i] / max(float(stack[i].max()), 1e-12)
        boxes.append((i, y0, x0, size, size))
        coc = float(analysis.kernel_cocs[i])
        labels.append(f"#{i}  CoC {coc:+.1f} px ({_side(coc)})")
    return KernelAtlas(image, boxes, labels)


def kernel_usage(analysis: Analysis, mask: np.ndarray | None = None) -> np.ndarray:
    """How many pixels pick each kernel index (inside ``mask`` when given), length = bank size."""
    idx = analysis.kernel_index
    if mask is not None:
        mask = np.asarray(mask) > 0
        if mask.shape != idx.shape:
            raise FocusError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the analysis is {idx.shape[1]}x{idx.shape[0]}")
        idx = idx[mask]
    return np.bincount(np.asarray(idx, np.int64).ravel(), minlength=len(analysis.kernel_cocs))


@dataclass
class PixelKernels:
    """One pixel's kernel: the blend of bank entries the backend chose there."""

    y: int
    x: int
    left: np.ndarray
    right: np.ndarray
    combined: np.ndarray
    top: list[tuple[int, float, float]]  # (index, weight, signed CoC of that entry)
    coc: float
    disparity: float


def pixel_kernels(analysis: Analysis, y: float, x: float, top_k: int = 5) -> PixelKernels:
    """The effective left/right/combined kernel at pixel ``(y, x)`` and its top-k bank entries."""
    h, w = analysis.shape
    if not (0 <= y < h and 0 <= x < w):
        raise FocusError(f"pixel (x={x:g}, y={y:g}) lies outside the {w}x{h} image")
    yi, xi = int(y), int(x)
    left, right, combined = analysis.effective_kernels(yi, xi)
    top = [(i, wgt, float(analysis.kernel_cocs[i])) for i, wgt in analysis.kernel_weights(yi, xi, top_k=top_k)]
    return PixelKernels(yi, xi, left, right, combined, top, float(analysis.blur[yi, xi]), float(analysis.disparity[yi, xi]))
