"""Writer contributions for the project's layers.

Images keep their pair's bit depth (PNG or TIFF); float maps (disparity, CoC, confidence) go to
float32 TIFF whatever the extension asked; labels (kernel index, focus mask) go to 8/16-bit PNG or
TIFF; a stack (the focus sweep) goes to one multi-page TIFF, or to one PNG per plane
(``NAME_00.png``, ...). Returns the written paths, as napari expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import save_image, save_map

FLOAT_MAP_KINDS = ("disparity", "coc", "blur_coc", "confidence")


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    info = (meta.get("metadata") or {}).get("dpfocus", {})
    arr = np.asarray(data)
    target = Path(path)
    if info.get("kind") in FLOAT_MAP_KINDS or (arr.dtype.kind == "f" and (arr.min() < 0 or arr.max() > 1)):
        if target.suffix.lower() not in (".tif", ".tiff"):
            target = target.with_suffix(".tif")
        return [str(save_map(target, arr.astype(np.float32)))]
    bits = int(info.get("bit_depth", 16))
    bits = bits if bits in (8, 16) else 16
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535
    image_ndim = 3 if meta.get("rgb", arr.ndim == 3 and arr.shape[-1] in (3, 4)) else 2
    if arr.ndim > image_ndim and target.suffix.lower() not in (".tif", ".tiff"):  # a stack: one image per plane
        planes = arr.reshape(-1, *arr.shape[arr.ndim - image_ndim:])
        digits = len(str(len(planes) - 1))
        return [str(save_image(target.with_name(f"{target.stem}_{i:0{digits}d}{target.suffix}"), plane, bits))
                for i, plane in enumerate(planes)]
    return [str(save_image(target, arr, bits))]


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    arr = np.asarray(data)
    if arr.min() < 0 or arr.max() > 65535:
        raise ValueError(f"{path}: label values must lie in [0, 65535] to be saved as an image")
    target = Path(path)
    dtype = np.uint8 if arr.max() <= 255 and target.suffix.lower() == ".png" else np.uint16
    if target.suffix.lower() in (".tif", ".tiff"):
        return [str(save_map(target, arr.astype(np.uint16)))]
    return [str(save_image(target, arr.astype(np.float32) / np.iinfo(dtype).max, 8 if dtype == np.uint8 else 16))]
