"""Focus masks from prompts (clicks, boxes, text): weight-free by default, SAM and CLIP when configured.

The default segmentation works on superpixels of the all-in-focus image and the disparity map
(SLIC over colour plus a disparity channel, computed once per analysis). A click grows a region of
adjacent superpixels whose disparity stays within a tolerance of the clicked one and whose colour
is not too far; clicks marked negative cut superpixels out. A box keeps the superpixels mostly
inside it that lie at the depth of the box's centre. Text uses a small documented vocabulary over
depth and position (:data:`TEXT_VOCABULARY`).

Optional models, from checkpoints the user supplies (never downloaded):

* Segment Anything (:func:`load_sam`, :class:`SamSegmenter`, env var ``DPFOCUS_SAM_CHECKPOINT``):
  clicks and boxes segment with SAM, and SAM's automatic masks become the text-prompt candidates.
  The architecture is read from the weights, so vit_b/l/h and custom sizes all load.
* OpenCLIP (:func:`load_clip`, :class:`ClipRanker`, env vars ``DPFOCUS_CLIP_CHECKPOINT`` and
  ``DPFOCUS_CLIP_MODEL``; ``pip install open_clip_torch``): free-text prompts rank candidate regions
  by the similarity between each region's crop and the text.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from .analysis import Analysis
from .refocus import FocusError

__all__ = [
    "superpixels",
    "mask_from_points",
    "mask_from_box",
    "mask_from_text",
    "TEXT_VOCABULARY",
    "PromptModelError",
    "Configured",
    "SamConfig",
    "SamSegmenter",
    "sam_config_from_state_dict",
    "load_sam",
    "configured_sam",
    "ClipRanker",
    "load_clip",
    "configured_clip",
    "SAM_ENV",
    "CLIP_ENV",
    "CLIP_MODEL_ENV",
]

SAM_ENV = "DPFOCUS_SAM_CHECKPOINT"
CLIP_ENV = "DPFOCUS_CLIP_CHECKPOINT"
CLIP_MODEL_ENV = "DPFOCUS_CLIP_MODEL"

#: click growing: a superpixel joins when its mean colour (RGB distance) is this close to the region's
#: mean and to the neighbour it is reached from (bundled samples, one click per object: mean IoU
#: 0.53 -> 0.73 against growing by neighbour colour alone)
GROW_COLOUR_TO_REGION = 0.25
GROW_COLOUR_STEP = 0.2

TEXT_VOCABULARY = {
    "depth": {
        "nearest / closest / foreground / front": "the nearest object (lowest disparity region)",
        "farthest / furthest / background / back": "the farthest region",
        "middle / midground": "the region whose depth is nearest the median",
    },
    "position": {
        "left / right / top / bottom / centre (center)": "restricts to that part of the image",
    },
    "examples": ["nearest object", "background", "left object", "the object on the right", "center"],
}


def superpixels(analysis: Analysis, n_segments: int | None = None) -> np.ndarray:
    """SLIC superpixels over colour and disparity (cached on the analysis)."""
    cached = analysis.meta.get("_superpixels")
    if cached is not None:
        return cached
    from skimage.segmentation import slic

    aif = analysis.aif if analysis.aif.ndim == 3 else np.repeat(analysis.aif[..., None], 3, axis=2)
    d = analysis.disparity
    spread = float(np.percentile(d, 98) - np.percentile(d, 2)) or 1.0
    features = np.concatenate([aif, ((d - d.min()) / spread)[..., None] * 1.5], axis=2).astype(np.float32)
    h, w = d.shape
    n = n_segments or int(np.clip(h * w / 500, 100, 4000))
    labels = slic(features, n_segments=n, compactness=0.08, channel_axis=2, start_label=0, enforce_connectivity=True)
    analysis.meta["_superpixels"] = labels
    return labels


def _region_stats(analysis: Analysis, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(labels.max()) + 1
    count = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    disp = np.bincount(labels.ravel(), analysis.disparity.ravel(), minlength=n) / np.maximum(count, 1)
    aif = analysis.aif if analysis.aif.ndim == 3 else analysis.aif[..., None]
    colour = np.stack([np.bincount(labels.ravel(), aif[..., c].ravel(), minlength=n) for c in range(aif.shape[2])], 1)
    return disp, colour / np.maximum(count, 1)[:, None], count


def _adjacency(labels: np.ndarray) -> list[set[int]]:
    n = int(labels.max()) + 1
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
            np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in pairs:
        adj[a].add(int(b))
        adj[b].add(int(a))
    return adj


def _depth_tolerance(analysis: Analysis) -> float:
    d = analysis.disparity
    return max(0.35, 0.08 * float(np.percentile(d, 98) - np.percentile(d, 2)))


def _check_point(shape: tuple[int, int], y: float, x: float) -> tuple[int, int]:
    h, w = shape
    if not (0 <= y < h and 0 <= x < w):
        raise FocusError(f"point (x={x:g}, y={y:g}) lies outside the {w}x{h} image")
    return int(y), int(x)


def _grow(seed: int, disp: np.ndarray, colour: np.ndarray, count: np.ndarray, adj: list[set[int]], tol: float, excluded: set[int]) -> set[int]:
    """Superpixels grown from ``seed`` against the region's running mean colour and depth, most
    similar neighbours first: a chain of small steps cannot drift from an object into a touching
    surface at its depth."""
    colour_sum, disp_sum, size = colour[seed] * count[seed], disp[seed] * count[seed], count[seed]
    chosen = {seed}
    frontier = [seed]
    while frontier:
        current = frontier.pop(0)
        for nb in sorted(adj[current], key=lambda j: float(np.linalg.norm(colour[j] - colour_sum / size))):
            if nb in chosen or nb in excluded:
                continue
            if (abs(disp[nb] - disp_sum / size) <= tol
                    and np.linalg.norm(colour[nb] - colour_sum / size) < GROW_COLOUR_TO_REGION
                    and np.linalg.norm(colour[nb] - colour[current]) < GROW_COLOUR_STEP):
                chosen.add(nb)
                frontier.append(nb)
                colour_sum, disp_sum, size = colour_sum + colour[nb] * count[nb], disp_sum + disp[nb] * count[nb], size + count[nb]
    return chosen


def mask_from_points(
    analysis: Analysis,
    positive: Sequence[tuple[float, float]],
    negative: Sequence[tuple[float, float]] = (),
    depth_tolerance: float | None = None,
    sam: SamSegmenter | None = None,
) -> np.ndarray:
    """Mask from positive clicks ``(y, x)`` and negative clicks.

    Parameters
    ----------
    analysis : Analysis
    positive, negative : sequence of (y, x)
        Clicks on the object, and clicks on what to leave out.
    depth_tolerance : float, optional
        Disparity (px) a grown region may differ from the click (default segmentation only).
    sam : SamSegmenter, optional
        Segment with SAM instead of growing superpixels.

    Returns
    -------
    ndarray of bool, H x W
    """
    if not positive:
        raise FocusError("add at least one positive point")
    if sam is not None:
        pos = [_check_point(analysis.shape, y, x) for y, x in positive]
        neg = [_check_point(analysis.shape, y, x) for y, x in negative]
        return sam.points(pos, neg, image=analysis)
    labels = superpixels(analysis)
    disp, colour, count = _region_stats(analysis, labels)
    adj = _adjacency(labels)
    tol = depth_tolerance if depth_tolerance is not None else _depth_tolerance(analysis)
    blocked = {int(labels[_check_point(analysis.shape, y, x)]) for y, x in negative}
    chosen: set[int] = set()
    for y, x in positive:
        seed = int(labels[_check_point(analysis.shape, y, x)])
        if seed in blocked:
            continue
        chosen |= _grow(seed, disp, colour, count, adj, tol, blocked | chosen)
    mask = np.isin(labels, list(chosen))
    if not mask.any():
        raise FocusError("the points select nothing (every positive point sits on an excluded region)")
    return mask


def mask_from_box(
    analysis: Analysis,
    box: tuple[float, float, float, float],
    depth_tolerance: float | None = None,
    sam: SamSegmenter | None = None,
) -> np.ndarray:
    """Mask of the object in ``box = (x0, y0, x1, y1)``.

    By default the superpixels mostly inside the box at the depth of its centre; with ``sam``,
    SAM's mask for the box prompt.

    Returns
    -------
    ndarray of bool, H x W
    """
    from .refocus import box_mask

    inside = box_mask(analysis.shape, *box)
    if sam is not None:
        return sam.box(*box, image=analysis)
    labels = superpixels(analysis)
    disp, _, count = _region_stats(analysis, labels)
    frac = np.bincount(labels.ravel(), inside.ravel(), minlength=len(count)) / np.maximum(count, 1)
    x0, y0, x1, y1 = box
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ry, rx = max(abs(y1 - y0) / 6, 1), max(abs(x1 - x0) / 6, 1)
    centre = box_mask(analysis.shape, cx - rx, cy - ry, cx + rx, cy + ry)
    target = float(np.median(analysis.disparity[centre]))
    tol = depth_tolerance if depth_tolerance is not None else _depth_tolerance(analysis)
    keep = (frac > 0.5) & (np.abs(disp - target) <= tol)
    mask = np.isin(labels, np.flatnonzero(keep)) & inside
    if not mask.any():
        mask = inside & (np.abs(analysis.disparity - target) <= tol)
    if not mask.any():
        raise FocusError("the box selects nothing at the depth of its centre; draw it around the object")
    return mask


def _depth_groups(analysis: Analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected regions of similar depth (superpixels merged by depth only), with mean disparity."""
    labels = superpixels(analysis)
    disp, _, count = _region_stats(analysis, labels)
    adj = _adjacency(labels)
    tol = _depth_tolerance(analysis)
    group = -np.ones(len(disp), int)
    g = 0
    for start in np.argsort(disp):
        if group[start] >= 0:
            continue
        group[start] = g
        stack = [start]
        while stack:
            cur = stack.pop()
            for nb in adj[cur]:
                if group[nb] < 0 and abs(disp[nb] - disp[start]) <= tol:
                    group[nb] = g
                    stack.append(nb)
        g += 1
    sizes = np.bincount(group, count)
    means = np.bincount(group, disp * count) / np.maximum(sizes, 1)
    return group[labels], means, sizes


_DEPTH_NEAR = {"nearest", "closest", "foreground", "front", "near"}
_DEPTH_FAR = {"farthest", "furthest", "background", "back", "far", "behind"}
_POSITION = {"left", "right", "top", "upper", "bottom", "lower", "centre", "center", "middle"}
# words that carry no meaning of their own in a focus phrase
_FILLER = {
    "a", "an", "the", "on", "in", "at", "of", "to", "side", "part", "one", "focus", "region", "area", "depth",
    "image", "picture", "photo", "please", "most", "is", "that", "what", "s", "and", "object", "thing",
}


def _position_area(words: set[str], shape: tuple[int, int]) -> np.ndarray | None:
    """The part of the image the position words ask for (None when there are none)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    centre = (np.abs(xx - w / 2) < w * 0.25) & (np.abs(yy - h / 2) < h * 0.25)
    position_words = {
        "left": xx < w * 0.45,
        "right": xx > w * 0.55,
        "top": yy < h * 0.45,
        "upper": yy < h * 0.45,
        "bottom": yy > h * 0.55,
        "lower": yy > h * 0.55,
        "centre": centre,
        "center": centre,
        "middle": centre,
    }
    area = None
    for word, region in position_words.items():
        if word in words and not (word == "middle" and "depth" in words):
            area = region if area is None else area & region
    return area


def mask_from_text(
    analysis: Analysis,
    text: str,
    sam: SamSegmenter | None = None,
    clip: ClipRanker | None = None,
) -> np.ndarray:
    """Mask of what a phrase describes.

    Without ``clip`` (or when the phrase uses only vocabulary words such as "nearest object",
    "background", "left"), the depth- and position-aware vocabulary of :data:`TEXT_VOCABULARY`
    resolves it. With ``clip``, other phrases rank candidate regions (SAM's automatic masks when
    ``sam`` is given, else the depth regions of the default segmentation, restricted to the part
    of the image any position word names) by CLIP similarity between the region's crop and the text.

    Parameters
    ----------
    analysis : Analysis
    text : str
    sam : SamSegmenter, optional
        Source of candidate regions for CLIP ranking.
    clip : ClipRanker, optional
        Anything with ``similarity(crops, text) -> scores`` (one score per crop).

    Returns
    -------
    ndarray of bool, H x W
    """
    words = set(re.findall(r"[a-z]+", text.lower()))
    if not words:
        raise FocusError("the text prompt is empty; try 'nearest object', 'background' or 'left object'")
    vocabulary = _DEPTH_NEAR | _DEPTH_FAR | _POSITION | _FILLER
    meaningful = words & (_DEPTH_NEAR | _DEPTH_FAR | _POSITION | {"object", "thing"})
    if clip is None or (words <= vocabulary and meaningful):
        return _mask_from_vocabulary(analysis, text, words)
    return _mask_from_clip(analysis, text, words, sam, clip)


def _mask_from_vocabulary(analysis: Analysis, text: str, words: set[str]) -> np.ndarray:
    h, w = analysis.shape
    regions, means, sizes = _depth_groups(analysis)
    position = _position_area(words, (h, w))
    used_position = position is not None
    area = position if used_position else np.ones((h, w), bool)
    min_size = 0.005 * h * w  # ignore specks: a phrase names something a person can see
    present = [g for g in range(len(means)) if sizes[g] >= min_size and (regions[area] == g).any()]
    if not present:
        raise FocusError(f"nothing matches {text!r} in this image")
    # how much of each region lies in the asked-for area
    in_area = {g: float(((regions == g) & area).sum()) for g in present}
    depth_near, depth_far = _DEPTH_NEAR, _DEPTH_FAR
    if words & depth_far:
        large = [g for g in present if sizes[g] >= 0.05 * h * w] or present
        chosen = max(large, key=lambda g: means[g])
    elif words & depth_near or "object" in words or "thing" in words:
        # objects: regions that are not the largest (the backdrop), nearest first
        biggest = max(present, key=lambda g: sizes[g])
        objects = [g for g in present if g != biggest] or present
        if used_position:
            objects = sorted(objects, key=lambda g: -in_area[g])[: max(1, len(objects) // 2)]
        chosen = min(objects, key=lambda g: means[g])
    elif used_position:
        chosen = max(present, key=lambda g: in_area[g])
    else:
        vocabulary = "; ".join(k for part in ("depth", "position") for k in TEXT_VOCABULARY[part])
        raise FocusError(
            f"cannot resolve {text!r}: without a CLIP model text prompts know only these words: {vocabulary} "
            f"(or set {CLIP_ENV} to an OpenCLIP checkpoint)"
        )
    mask = regions == chosen
    if used_position and not (words & depth_far) and (mask & ~area).sum() > 0.5 * mask.sum():
        mask = mask & area  # a region mostly outside the asked-for part: keep the part inside
    return mask


def _object_regions(analysis: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """A partition into regions coherent in colour and depth (the click grower from every
    superpixel not yet taken, nearest first), with their sizes."""
    labels = superpixels(analysis)
    disp, colour, count = _region_stats(analysis, labels)
    adj = _adjacency(labels)
    tol = _depth_tolerance(analysis)
    group = -np.ones(len(disp), int)
    taken: set[int] = set()
    for g, start in enumerate(np.argsort(disp)):
        if start in taken:
            continue
        members = _grow(int(start), disp, colour, count, adj, tol, taken)
        group[list(members)] = g
        taken |= members
    _, group = np.unique(group, return_inverse=True)
    return group[labels], np.bincount(group, count)


def _default_regions(analysis: Analysis, max_regions: int) -> list[np.ndarray]:
    """Candidate regions of the default segmentation, largest first: regions coherent in colour and
    depth (objects, even where one touches a surface at its depth), then whole depth regions."""
    h, w = analysis.shape
    candidates = []
    for regions, sizes in (_object_regions(analysis), _depth_groups(analysis)[::2]):
        candidates += [(float(sizes[g]), regions == g) for g in range(len(sizes)) if sizes[g] >= 0.005 * h * w]
    unique: list[np.ndarray] = []
    for _, mask in sorted(candidates, key=lambda c: -c[0]):
        if not any(np.array_equal(mask, u) for u in unique):
            unique.append(mask)
    return unique[:max_regions]


def _rgb_float(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.clip(img[..., :3], 0, 1)


def _region_crop(image: np.ndarray, mask: np.ndarray, pad: float = 0.15, fill: float = 0.5) -> np.ndarray:
    """Square crop around ``mask`` (box padded by ``pad``), pixels outside the mask set to grey."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    margin = int(max(4, pad * max(y1 - y0, x1 - x0)))
    y0, y1, x0, x1 = max(y0 - margin, 0), min(y1 + margin, h), max(x0 - margin, 0), min(x1 + margin, w)
    crop = np.where(mask[y0:y1, x0:x1, None], image[y0:y1, x0:x1], np.float32(fill))
    side = max(crop.shape[:2])
    out = np.full((side, side, 3), fill, np.float32)
    oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    out[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return out


def _mask_from_clip(analysis: Analysis, text: str, words: set[str], sam: SamSegmenter | None, clip: Any) -> np.ndarray:
    max_regions = 32
    regions = sam.proposals(max_regions, image=analysis) if sam is not None else _default_regions(analysis, max_regions)
    regions = [m for m in regions if m.any()]
    area = _position_area(words, analysis.shape)
    if area is not None:  # position words restrict the candidates
        inside = [m for m in regions if (m & area).sum() >= 0.5 * m.sum()]
        regions = inside or regions
    if not regions:
        raise FocusError(f"no candidate regions found for {text!r}; click on the object or draw a box instead")
    aif = _rgb_float(analysis.aif)
    scores = np.asarray(clip.similarity([_region_crop(aif, m) for m in regions], text), np.float64).ravel()
    if scores.shape != (len(regions),) or not np.isfinite(scores).all():
        raise PromptModelError("the CLIP model returned no usable similarity scores; check the CLIP checkpoint")
    return regions[int(np.argmax(scores))]


# -- optional models: shared helpers ----------------------------------------------------------------


class PromptModelError(FocusError):
    """A SAM or CLIP checkpoint (or library) that cannot be used; the message says what to do."""


class Configured(NamedTuple):
    """What :func:`configured_sam` / :func:`configured_clip` found.

    Attributes
    ----------
    model : SamSegmenter, ClipRanker or None
        None when the env var is unset or its checkpoint could not be used.
    message : str or None
        For the UI: which model is in use, or why it fell back (None when the env var is unset).
    """

    model: Any
    message: str | None


def _first_line(exc: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_state_dict(path: str | os.PathLike, kind: str, hint: str) -> tuple[Path, dict]:
    """A checkpoint's state dict, read with ``weights_only=True`` (unwrapped, ``module.`` stripped)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PromptModelError(f"{kind} checkpoint {p} not found; {hint}")
    if not p.is_file():
        raise PromptModelError(f"{kind} checkpoint {p} is not a file; {hint}")
    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PromptModelError(f"{p} is not a readable PyTorch checkpoint ({_first_line(exc)}); {hint}") from exc
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise PromptModelError(f"{p} holds no model weights (not a state dict); {hint}")
    sd = {str(k): v for k, v in obj.items() if torch.is_tensor(v)}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return p, sd


_CONFIGURED: dict[tuple, Configured] = {}
_CONFIGURED_LOCK = threading.Lock()


def _configured(kind: str, env: str, fallback: str, load) -> Configured:
    value = os.environ.get(env, "").strip()
    if not value:
        return Configured(None, None)
    path = Path(value).expanduser()
    try:
        st = path.stat()
        model_name = os.environ.get(CLIP_MODEL_ENV, "") if kind == "CLIP" else ""
        key = (kind, str(path.resolve()), st.st_mtime_ns, st.st_size, model_name)
    except OSError:
        key = (kind, str(path), None, None, "")
    with _CONFIGURED_LOCK:
        if key in _CONFIGURED:
            return _CONFIGURED[key]
        try:
            model = load(path)
            found = Configured(model, f"{kind}: {model.describe()} ({env})")
        except Exception as exc:  # never crash the caller: report and fall back
            reason = str(exc) if isinstance(exc, FocusError) else f"{path}: {_first_line(exc)}"
            found = Configured(None, f"{env}: {reason}; fell back to {fallback}")
        _CONFIGURED[key] = found
        return found


# -- Segment Anything -------------------------------------------------------------------------------

_SAM_HINT = "choose an original Segment Anything checkpoint such as sam_vit_b_01ec64.pth"


def _torchvision_shim() -> dict[str, Any]:
    """The four torchvision functions segment-anything imports (image resize, box NMS), in PIL/torch."""
    import types

    import torch
    from PIL import Image

    def to_pil_image(pic):
        return Image.fromarray(np.asarray(pic))

    def resize(img, size):
        h, w = size
        return img.resize((int(w), int(h)), Image.BILINEAR)

    def box_area(boxes):
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def batched_nms(boxes, scores, idxs, iou_threshold):
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=boxes.device)
        order = torch.argsort(scores, descending=True)
        b = (boxes + idxs.to(boxes)[:, None] * (boxes.max() + 1))[order]  # categories never overlap
        area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
        wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2])).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
        keep = torch.ones(len(b), dtype=torch.bool, device=b.device)
        for i in range(len(b)):
            if keep[i]:
                keep[i + 1 :] &= iou[i, i + 1 :] <= iou_threshold
        return order[keep]

    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops"]
    names.append("torchvision.ops.boxes")
    mods = {n: types.ModuleType(n) for n in names}
    mods["torchvision.transforms.functional"].__dict__.update(resize=resize, to_pil_image=to_pil_image)
    mods["torchvision.ops.boxes"].__dict__.update(batched_nms=batched_nms, box_area=box_area)
    mods["torchvision"].__dict__.update(transforms=mods["torchvision.transforms"], ops=mods["torchvision.ops"])
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]
    mods["torchvision.ops"].boxes = mods["torchvision.ops.boxes"]
    return mods


@functools.lru_cache(maxsize=None)
def _segment_anything():
    """The ``segment_anything`` package; without torchvision it is imported against a small shim.

    segment-anything uses torchvision only for a PIL resize and box NMS; installing torchvision
    would pull a second torch build, so those functions are provided for its import only (the
    shim leaves ``sys.modules`` as it was).
    """
    try:
        import torchvision  # noqa: F401
    except Exception:
        shim = _torchvision_shim()
        saved = {n: sys.modules.get(n) for n in shim}
        sys.modules.update(shim)
        try:
            import segment_anything
        except ImportError as exc:
            raise PromptModelError(f"Segment Anything is not installed ({exc}); pip install segment-anything") from exc
        finally:
            for n, m in saved.items():
                if m is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = m
        return segment_anything
    try:
        import segment_anything
    except ImportError as exc:
        raise PromptModelError(f"Segment Anything is not installed ({exc}); pip install segment-anything") from exc
    return segment_anything


@dataclass(frozen=True)
class SamConfig:
    """A SAM architecture, as read from its weights by :func:`sam_config_from_state_dict`."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    window_size: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int
    prompt_embed_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_num_heads: int
    decoder_downsample_rate: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int

    @property
    def name(self) -> str:
        """``vit_b``, ``vit_l`` or ``vit_h`` for the published models, else ``custom``."""
        official = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
        name = official.get((self.embed_dim, self.depth))
        return name if name and self.img_size == 1024 and self.prompt_embed_dim == 256 else "custom"

    def build(self):
        """An untrained :class:`segment_anything.modeling.Sam` of this architecture."""
        import torch

        m = _segment_anything().modeling
        grid = self.img_size // self.patch_size
        return m.Sam(
            image_encoder=m.ImageEncoderViT(
                img_size=self.img_size,
                patch_size=self.patch_size,
                embed_dim=self.embed_dim,
                depth=self.depth,
                num_heads=self.num_heads,
                mlp_ratio=self.mlp_ratio,
                out_chans=self.out_chans,
                qkv_bias=self.qkv_bias,
                norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=self.window_size,
                global_attn_indexes=self.global_attn_indexes,
            ),
            prompt_encoder=m.PromptEncoder(
                embed_dim=self.prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(self.img_size, self.img_size),
                mask_in_chans=self.mask_in_chans,
            ),
            mask_decoder=m.MaskDecoder(
                num_multimask_outputs=self.num_multimask_outputs,
                transformer=m.TwoWayTransformer(
                    depth=self.decoder_depth,
                    embedding_dim=self.prompt_embed_dim,
                    mlp_dim=self.decoder_mlp_dim,
                    num_heads=self.decoder_num_heads,
                    attention_downsample_rate=self.decoder_downsample_rate,
                ),
                transformer_dim=self.prompt_embed_dim,
                iou_head_depth=self.iou_head_depth,
                iou_head_hidden_dim=self.iou_head_hidden_dim,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )


def _indexes(sd: dict, prefix: str) -> list[int]:
    heads = (k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix))
    return sorted({int(h) for h in heads if h.isdigit()})


def sam_config_from_state_dict(sd: dict) -> SamConfig:
    """Read a SAM architecture from its state dict (shapes and key counts, not the file name).

    Raises
    ------
    KeyError
        A key every SAM state dict has is missing (not SAM weights).
    ValueError
        The shapes are inconsistent or describe a variant this loader does not build.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise KeyError(key)
        return tuple(sd[key].shape)

    enc, dec = "image_encoder.", "mask_decoder."
    _, gh, gw, embed = shape(enc + "pos_embed")  # (1, grid, grid, embed_dim)
    _, _, ph, pw = shape(enc + "patch_embed.proj.weight")  # (embed_dim, 3, patch, patch)
    if gh != gw or ph != pw:
        raise ValueError(f"non-square image encoder (grid {gh}x{gw}, patch {ph}x{pw})")
    blocks = _indexes(sd, enc + "blocks.")
    if not blocks or blocks != list(range(len(blocks))):
        raise KeyError(enc + "blocks.0")
    spans = []
    for i in blocks:
        key = f"{enc}blocks.{i}.attn.rel_pos_h"
        if key not in sd:
            raise ValueError("image encoder without relative position embeddings (heads and windows are not stored)")
        spans.append((shape(key)[0] + 1) // 2)  # rel_pos covers 2 * tokens - 1 offsets
    head_dim = shape(f"{enc}blocks.0.attn.rel_pos_h")[1]
    if head_dim <= 0 or embed % head_dim:
        raise ValueError(f"relative position width {head_dim} does not divide the embedding {embed}")
    global_idx = tuple(i for i, s in zip(blocks, spans) if s >= gh)  # spans the full token grid
    windows = {s for s in spans if s < gh}
    if len(windows) > 1:
        raise ValueError(f"mixed attention window sizes {sorted(windows)}")
    prompt_dim = 2 * shape("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")[1]
    dim = shape(dec + "iou_token.weight")[1]
    out_chans = shape(enc + "neck.0.weight")[0]
    if not out_chans == prompt_dim == dim:
        raise ValueError(f"encoder output {out_chans}, prompt embedding {prompt_dim} and decoder width {dim} differ")
    layers = _indexes(sd, dec + "transformer.layers.")
    if not layers:
        raise KeyError(dec + "transformer.layers.0")
    internal = shape(dec + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0]
    # decoder heads are not stored in any weight: SAM's 8, or the largest divisor <= 8 of the widths
    heads = max(h for h in range(1, 9) if internal % h == 0 and dim % h == 0)
    iou_layers = _indexes(sd, dec + "iou_prediction_head.layers.")
    return SamConfig(
        img_size=gh * ph,
        patch_size=ph,
        embed_dim=embed,
        depth=len(blocks),
        num_heads=embed // head_dim,
        mlp_ratio=shape(f"{enc}blocks.0.mlp.lin1.weight")[0] / embed,
        qkv_bias=f"{enc}blocks.0.attn.qkv.bias" in sd,
        window_size=windows.pop() if windows else 0,
        global_attn_indexes=global_idx,
        out_chans=out_chans,
        prompt_embed_dim=prompt_dim,
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=len(layers),
        decoder_mlp_dim=shape(dec + "transformer.layers.0.mlp.lin1.weight")[0],
        decoder_num_heads=heads,
        decoder_downsample_rate=max(1, dim // internal),
        num_multimask_outputs=shape(dec + "mask_tokens.weight")[0] - 1,
        iou_head_depth=len(iou_layers),
        iou_head_hidden_dim=shape(dec + "iou_prediction_head.layers.0.weight")[0],
    )


def _to_uint8_rgb(image: Any) -> np.ndarray:
    """An Analysis (its all-in-focus image) or an array as the uint8 H x W x 3 RGB SAM expects."""
    if isinstance(image, Analysis):
        image = image.aif
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise FocusError(f"SAM needs an H x W grey or RGB image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == np.uint16:
        return np.ascontiguousarray((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(np.round(np.clip(np.nan_to_num(img.astype(np.float32)), 0, 1) * 255).astype(np.uint8))


def _image_key(image: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, image.dtype.str)).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _caching_predictor_class():
    sa = _segment_anything()

    class CachingPredictor(sa.SamPredictor):
        """SamPredictor whose image embeddings are kept in a small LRU keyed by image hash."""

        def __init__(self, model, cache_size: int = 4) -> None:
            self.cache: OrderedDict[str, tuple] = OrderedDict()
            self.cache_size = max(1, int(cache_size))
            self.encoder_calls = 0
            super().__init__(model)

        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            key = _image_key(image) + image_format
            hit = self.cache.get(key)
            if hit is None:
                super().set_image(image, image_format)
                self.encoder_calls += 1
                self.cache[key] = (self.features, self.original_size, self.input_size)
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end(key)
                self.reset_image()
                self.features, self.original_size, self.input_size = hit
                self.is_image_set = True
            self.key = key

        def reset_image(self) -> None:
            super().reset_image()
            self.key = None

    return CachingPredictor


class SamSegmenter:
    """Segment Anything on an image (usually an analysis's all-in-focus image).

    The image embedding is computed once per image and kept in a small LRU keyed by a hash of the
    image, so going back to an image does not run the encoder again. Points are ``(y, x)`` like
    the rest of :mod:`dpfocus.prompts`; boxes ``(x0, y0, x1, y1)``.

    Parameters
    ----------
    model : segment_anything.modeling.Sam
    config : SamConfig, optional
    source : path, optional
        The checkpoint it came from (for messages).
    cache_size : int
        How many image embeddings to keep.
    """

    def __init__(
        self, model, config: SamConfig | None = None, source: str | os.PathLike | None = None, cache_size: int = 4
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.source = Path(source) if source is not None else None
        self._predictor = _caching_predictor_class()(self.model, cache_size)
        self._image: np.ndarray | None = None
        self._key: str | None = None
        self._lock = threading.RLock()

    def describe(self) -> str:
        """One line: architecture and checkpoint."""
        name = self.config.name if self.config else "SAM"
        return f"Segment Anything {name}" + (f" from {self.source}" if self.source else "")

    @property
    def encoder_calls(self) -> int:
        """How many times the image encoder ran (cache misses)."""
        return self._predictor.encoder_calls

    @property
    def cache_size(self) -> int:
        return self._predictor.cache_size

    def set_image(self, image: Any) -> None:
        """Make ``image`` (Analysis, float [0, 1] or uint8 array, grey or RGB) the current image."""
        rgb = _to_uint8_rgb(image)
        with self._lock:
            self._predictor.set_image(rgb)
            self._image, self._key = rgb, self._predictor.key

    def _ready(self, image: Any) -> tuple[int, int]:
        if image is not None:
            self.set_image(image)
        if self._image is None:
            raise FocusError("SAM has no image yet; call set_image(image) first")
        if not (self._predictor.is_image_set and self._predictor.key == self._key):
            self._predictor.set_image(self._image)  # cached: no encoder run
        return self._image.shape[:2]

    @staticmethod
    def _best(masks: np.ndarray, scores: np.ndarray, inside: Sequence[tuple[int, int]] = ()) -> np.ndarray | None:
        """The highest-scoring non-empty mask, preferring masks that contain the positive points."""
        order = sorted(range(len(masks)), key=lambda i: (not any(masks[i][p] for p in inside), -float(scores[i])))
        for i in order:
            if masks[i].any():
                return masks[i].astype(bool)
        return None

    def points(
        self, positive: Sequence[tuple[float, float]], negative: Sequence[tuple[float, float]] = (), image: Any = None
    ) -> np.ndarray:
        """Mask (bool, H x W) for clicks ``(y, x)`` on the object and ``negative`` clicks off it."""
        if not positive:
            raise FocusError("add at least one positive point")
        with self._lock:
            h, w = self._ready(image)
            pts = [(float(y), float(x)) for y, x in positive] + [(float(y), float(x)) for y, x in negative]
            for y, x in pts:
                if not (0 <= y < h and 0 <= x < w):
                    raise FocusError(f"point (x={x:g}, y={y:g}) lies outside the {w}x{h} image")
            coords = np.array([[x, y] for y, x in pts], np.float32)
            labels = np.array([1] * len(positive) + [0] * len(negative), np.int32)
            inside = [(min(int(y), h - 1), min(int(x), w - 1)) for y, x in pts[: len(positive)]]
            mask = None
            # one click is ambiguous: several masks, best by predicted IoU; more clicks: one mask
            for multi in dict.fromkeys((len(pts) == 1, True)):
                masks, scores, _ = self._predictor.predict(point_coords=coords, point_labels=labels, multimask_output=multi)
                mask = self._best(masks, scores, inside)
                if mask is not None:
                    break
        if mask is None:
            raise FocusError("SAM found no region at the clicked points; click inside the object or add points")
        return mask

    def box(self, x0: float, y0: float, x1: float, y1: float, image: Any = None) -> np.ndarray:
        """Mask (bool, H x W) of the object in the box ``(x0, y0, x1, y1)``."""
        with self._lock:
            h, w = self._ready(image)
            xa, xb = sorted((float(x0), float(x1)))
            ya, yb = sorted((float(y0), float(y1)))
            xa, xb, ya, yb = max(xa, 0), min(xb, w), max(ya, 0), min(yb, h)
            if xb - xa < 1 or yb - ya < 1:
                raise FocusError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) covers no pixel of the {w}x{h} image")
            mask = None
            for multi in (False, True):  # a box is unambiguous; several masks only if that one is empty
                box = np.array([xa, ya, xb, yb], np.float32)
                masks, scores, _ = self._predictor.predict(box=box, multimask_output=multi)
                mask = self._best(masks, scores)
                if mask is not None:
                    break
        if mask is None:
            raise FocusError("SAM found no object in the box; draw the box around the object")
        return mask

    def proposals(
        self,
        max_regions: int = 24,
        image: Any = None,
        points_per_side: int = 12,
        min_area: float = 0.002,
        iou_threshold: float = 0.8,
        stability_threshold: float = 0.85,
    ) -> list[np.ndarray]:
        """Candidate region masks over the whole image, from a grid of single-point prompts.

        Like SAM's automatic mask generator, but filtered and de-duplicated on the decoder's
        low-resolution logits, and only the kept masks are upsampled.

        Parameters
        ----------
        max_regions : int
            At most this many masks, best first (predicted IoU x stability).
        points_per_side : int
            Grid of ``points_per_side**2`` prompts, three masks each.
        min_area : float
            Masks smaller than this fraction of the image are dropped (as are near-full ones).
        iou_threshold, stability_threshold : float
            SAM's quality filters; when no mask passes them (a weak model), all are ranked.

        Returns
        -------
        list of ndarray of bool, H x W
        """
        import torch

        with self._lock, torch.no_grad():
            h, w = self._ready(image)
            pred, model = self._predictor, self.model
            grid = (np.arange(points_per_side) + 0.5) / points_per_side
            xy = np.stack(np.meshgrid(grid * w, grid * h), -1).reshape(-1, 2)
            coords = torch.as_tensor(pred.transform.apply_coords(xy, (h, w)), dtype=torch.float, device=pred.device)
            pe = model.prompt_encoder.get_dense_pe()
            logits, scores = [], []
            for i in range(0, len(coords), 64):
                c = coords[i : i + 64, None, :]
                labels = torch.ones(c.shape[:2], dtype=torch.int, device=pred.device)
                sparse, dense = model.prompt_encoder(points=(c, labels), boxes=None, masks=None)
                low, iou = model.mask_decoder(
                    image_embeddings=pred.features,
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=True,
                )
                logits.append(low.flatten(0, 1))
                scores.append(iou.flatten())
            logits, scores = torch.cat(logits), torch.cat(scores)
            # the valid (unpadded) part of the low-resolution masks
            scale = logits.shape[-1] / model.image_encoder.img_size
            vh, vw = (int(np.ceil(s * scale)) for s in pred.input_size)
            valid = logits[:, :vh, :vw]
            thr = model.mask_threshold
            binary = valid > thr
            stability = (valid > thr + 1).sum((1, 2)) / (valid > thr - 1).sum((1, 2)).clamp(min=1)
            frac = binary.float().mean((1, 2))
            usable = (frac >= min_area) & (frac <= 0.98)
            good = usable & (scores >= iou_threshold) & (stability >= stability_threshold)
            idx = torch.nonzero(good if good.any() else usable)[:, 0]
            idx = idx[torch.argsort((scores * stability)[idx], descending=True)]
            # greedy de-duplication by mask IoU
            flat = binary[idx].flatten(1).float()
            inter = flat @ flat.T
            area = flat.sum(1)
            overlap = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
            chosen: list[int] = []
            for j in range(len(idx)):
                if len(chosen) >= max_regions:
                    break
                if not chosen or bool((overlap[j, chosen] <= 0.7).all()):
                    chosen.append(j)
            if not chosen:
                return []
            full = model.postprocess_masks(logits[idx[chosen]][:, None], pred.input_size, pred.original_size)[:, 0] > thr
        return [m for m in full.cpu().numpy() if m.any()]


def load_sam(path: str | os.PathLike, device: str | None = None, cache_size: int = 4) -> SamSegmenter:
    """Load a Segment Anything checkpoint (any size; the architecture is read from the weights).

    Parameters
    ----------
    path : path
        A SAM ``.pth`` state dict (e.g. ``sam_vit_b_01ec64.pth``), read with ``weights_only=True``.
    device : str, optional
        Torch device; default CUDA when available, else CPU.
    cache_size : int
        Image embeddings kept by the segmenter.

    Returns
    -------
    SamSegmenter

    Raises
    ------
    PromptModelError
        Missing, unreadable or non-SAM file (the message names the file and what to do).
    """
    import torch

    p, sd = _read_state_dict(path, "SAM", _SAM_HINT)
    try:
        config = sam_config_from_state_dict(sd)
    except KeyError as exc:
        raise PromptModelError(f"{p} does not hold Segment Anything weights (no {exc.args[0]}); {_SAM_HINT}") from exc
    except (ValueError, IndexError) as exc:
        raise PromptModelError(f"{p}: unsupported SAM variant ({_first_line(exc)}); {_SAM_HINT}") from exc
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    _segment_anything()  # imported outside the meta-device context
    try:
        with torch.device("meta"):  # no random init of weights about to be replaced
            model = config.build()
        model.load_state_dict(sd, strict=True, assign=True)
        for name in ("pixel_mean", "pixel_std"):  # non-persistent buffers: not in the state dict
            values = [123.675, 116.28, 103.53] if name == "pixel_mean" else [58.395, 57.12, 57.375]
            model.register_buffer(name, torch.tensor(values).view(-1, 1, 1), False)
    except Exception as exc:
        raise PromptModelError(f"{p}: the weights do not fit a SAM model ({_first_line(exc)}); {_SAM_HINT}") from exc
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        raise PromptModelError(f"{p}: incomplete SAM weights; {_SAM_HINT}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SamSegmenter(model.to(device).eval(), config, p, cache_size)


def configured_sam() -> Configured:
    """SAM from ``DPFOCUS_SAM_CHECKPOINT`` (loaded once per file), never raising.

    Returns
    -------
    Configured
        ``(segmenter, message)``; ``(None, None)`` when the variable is unset, ``(None, why)``
        when its checkpoint cannot be used (the default segmentation is then used).
    """
    return _configured("SAM", SAM_ENV, "the default segmentation", load_sam)


# -- OpenCLIP ---------------------------------------------------------------------------------------

_CLIP_INSTALL = "install the clip extra: pip install open_clip_torch (or pip install 'napari-dpfocus[clip]')"
_CLIP_HINT = f"choose an OpenCLIP state dict (.pt/.bin) and set its architecture with {CLIP_MODEL_ENV} if needed"


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise PromptModelError(f"text prompts with CLIP need OpenCLIP, which is not installed; {_CLIP_INSTALL}") from exc
    return open_clip


def _clip_signature(sd: dict) -> dict:
    """Architecture numbers of an OpenCLIP ViT state dict (for matching against open_clip's configs)."""
    t = "text." if "text.token_embedding.weight" in sd else ""
    tokens = sd["visual.positional_embedding"].shape[0] - 1
    patch = sd["visual.conv1.weight"].shape[-1]
    return {
        "embed_dim": sd["visual.proj"].shape[1],
        "vision": (
            sd["visual.conv1.weight"].shape[0],
            len(_indexes(sd, "visual.transformer.resblocks.")),
            patch,
            int(round(tokens**0.5)) * patch,
        ),
        "text": (
            sd[t + "token_embedding.weight"].shape[1],
            len(_indexes(sd, t + "transformer.resblocks.")),
            sd[t + "positional_embedding"].shape[0],
            sd[t + "token_embedding.weight"].shape[0],
        ),
    }


def _clip_name_from_weights(open_clip, sd: dict, path: Path) -> str:
    try:
        sig = _clip_signature(sd)
    except (KeyError, IndexError, AttributeError) as exc:
        raise PromptModelError(
            f"{path}: cannot tell the OpenCLIP architecture from the weights (no {exc}); "
            f"set {CLIP_MODEL_ENV} (e.g. ViT-B-32)"
        ) from exc
    matches = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if "timm_model_name" in v or "hf_model_name" in t or not isinstance(v.get("layers"), int):
            continue
        size = v.get("image_size", 224)
        vision = (v.get("width", 768), v["layers"], v.get("patch_size", 16), size if isinstance(size, int) else size[0])
        text = (t.get("width", 512), t.get("layers", 12), t.get("context_length", 77), t.get("vocab_size", 49408))
        if cfg.get("embed_dim") == sig["embed_dim"] and vision == sig["vision"] and text == sig["text"]:
            matches.append(name)
    if not matches:
        raise PromptModelError(
            f"{path}: no OpenCLIP architecture matches these weights; set {CLIP_MODEL_ENV} to the model name (e.g. ViT-B-32)"
        )
    # QuickGELU variants have identical weights: prefer the plain name (set the env var for OpenAI weights)
    return sorted(matches, key=lambda n: ("quickgelu" in n.lower(), len(n)))[0]


class ClipRanker:
    """Scores image crops against a phrase with an OpenCLIP model (cosine similarity).

    Parameters
    ----------
    model : open_clip model
        With ``encode_image`` and ``encode_text``.
    tokenizer : callable
        ``tokenizer(list_of_str) -> LongTensor``.
    image_size : int
    mean, std : sequence of 3 floats
        Input normalisation.
    name : str
    source : path, optional
    """

    def __init__(
        self, model, tokenizer, image_size: int, mean: Sequence[float], std: Sequence[float], name: str = "", source=None
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)
        self.name = name
        self.source = Path(source) if source is not None else None
        self._lock = threading.Lock()

    def describe(self) -> str:
        """One line: architecture and checkpoint."""
        return f"OpenCLIP {self.name}" + (f" from {self.source}" if self.source else "")

    def _input(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        img = _rgb_float(crop)
        s = self.image_size
        interp = cv2.INTER_AREA if max(img.shape[:2]) > s else cv2.INTER_CUBIC
        img = np.clip(cv2.resize(img, (s, s), interpolation=interp), 0, 1)
        return ((img - self.mean) / self.std).transpose(2, 0, 1)

    def similarity(self, crops: Sequence[np.ndarray], text: str) -> np.ndarray:
        """Cosine similarity of each crop (H x W x 3, [0, 1]) with ``"a photo of <text>"``."""
        import torch

        if not len(crops):
            return np.zeros(0)
        device = next(self.model.parameters()).device
        with self._lock, torch.no_grad():
            tokens = self.tokenizer([f"a photo of {text.strip()}"]).to(device)
            t = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
            out = []
            for i in range(0, len(crops), 16):
                batch = torch.from_numpy(np.stack([self._input(c) for c in crops[i : i + 16]])).to(device)
                f = torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)
                out.append((f @ t.T)[:, 0].cpu().numpy())
        return np.concatenate(out)


def load_clip(path: str | os.PathLike, model_name: str | None = None, device: str | None = None) -> ClipRanker:
    """Load an OpenCLIP checkpoint for text prompts (needs ``open_clip_torch``).

    Parameters
    ----------
    path : path
        An OpenCLIP state dict, read with ``weights_only=True``.
    model_name : str, optional
        open_clip architecture name (e.g. ``ViT-B-32``); default: matched from the weights' shapes.
    device : str, optional

    Returns
    -------
    ClipRanker

    Raises
    ------
    PromptModelError
        open_clip missing, file missing/unreadable, or weights that fit no architecture.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise PromptModelError(f"CLIP checkpoint {p} not found; {_CLIP_HINT}")
    open_clip = _import_open_clip()
    p, sd = _read_state_dict(p, "CLIP", _CLIP_HINT)
    name = model_name or _clip_name_from_weights(open_clip, sd, p)
    try:
        model = open_clip.create_model(name, pretrained=None)
    except Exception as exc:
        raise PromptModelError(
            f"unknown OpenCLIP model {name!r} ({_first_line(exc)}); use a name from open_clip.list_models()"
        ) from exc
    try:
        if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
            sd = open_clip.model.convert_to_custom_text_state_dict(sd)
        if "logit_scale" in sd and hasattr(model, "logit_scale"):
            sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
        model.load_state_dict(sd, strict=True)
    except Exception as exc:
        raise PromptModelError(f"{p}: the weights do not fit OpenCLIP {name} ({_first_line(exc)}); {_CLIP_HINT}") from exc
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception:
        tokenizer = open_clip.tokenize
    visual = model.visual
    size = getattr(visual, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean = cfg.get("mean") or getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = cfg.get("std") or getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return ClipRanker(model.to(device), tokenizer, int(size), mean, std, name, p)


def configured_clip() -> Configured:
    """CLIP from ``DPFOCUS_CLIP_CHECKPOINT`` (+ ``DPFOCUS_CLIP_MODEL``), never raising.

    Returns
    -------
    Configured
        ``(ranker, message)``; ``(None, None)`` when unset, ``(None, why)`` when unusable (text
        prompts then use the vocabulary).
    """
    def load(path: Path) -> ClipRanker:
        return load_clip(path, os.environ.get(CLIP_MODEL_ENV) or None)

    return _configured("CLIP", CLIP_ENV, "the text vocabulary (depth and position words)", load)
