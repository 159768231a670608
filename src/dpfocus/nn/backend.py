"""The ``network`` backend: shipped weights, tiled inference, and the network's own refocus path.

Registered with :func:`dpfocus.analysis.register_backend` when the package's weights file exists.
Images of any size run in overlapping tiles blended with smooth ramps, so memory is bounded by
the tile size and the result matches whole-image inference. The all-in-focus image is the
network's, blended away from the blur map's jumps with the classical deconvolution of the views
by the physical DP PSF on the network's own blur map (:func:`deconvolution_share`).
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis import Analysis, BackendError, register_backend, render_psf_spec
from ..classical import deconvolve_aif, kernel_bank
from ..io import DPPair, views_photo
from ..optics import DPPSF, flatten_backdrop, foreground_spill, nearest_bin, pad_dp_pair, smooth_surfaces
from . import WEIGHTS_PATH
from .model import DPKernelNet, NetConfig, upsample_disparity
from .train import WEIGHTS_FORMAT

__all__ = ["WEIGHTS_PATH", "NetworkWeightsError", "load_network", "run_network", "network_backend", "network_refocus", "check_network_refocus", "DEFAULT_TILE"]

DEFAULT_TILE = 768  # px: 6 tiles at 1120x1680; 512 px tiles cost 15 tiles and 0.7 s more
OVERLAP = 96  # px each side: the network's receptive field is about this wide
#: images are padded, and tiles placed, on this grid (px): the context module runs at 1/16 of the
#: 1/4-resolution features, so its stride-2 samples only line up across tiles on a 64 px grid
GRID = 64
TOP_K = 5
#: px: the analysis and the reblur path run on the whole image up to this size (1120x1680: analysis
#: 3.1 s and 1.1 GB peak against 3.5-3.9 s and 0.8 GB in tiles; the reblur path 1.1 GB whole, 4.2 GB
#: at 2592x3888); beyond it, in DEFAULT_TILE tiles, so memory stays bounded by the tile size
WHOLE_MAX_PIXELS = 2_500_000
#: px of extra CoC over which the reblur path fades from the captured photo itself (none) to the
#: photo reblurred by its kernels: that reblur alone gives the photo back to 39 dB, softened.
#: Tuning scenes 500000-500011 / 700000-700011: 32.15 / 33.81 -> 32.35 / 33.89 dB (2 px 32.40 /
#: 33.84, 4 px 32.39 / 33.78; a step at 1 px 32.37 / 33.78)
PHOTO_EXACT_RAMP = 1.0
#: px: blur sizes at which the reblur path is calibrated against the physical DP PSF, and the CoCs
#: it may ask the learned set for (reblur_calibration)
CALIBRATION_COCS = np.arange(0.0, 14.01, 1.0)
CALIBRATION_REQUESTS = np.arange(0.0, 16.01, 0.5)


def default_tile(h: int, w: int) -> int | None:
    """The tile size used when none is given: None (the whole image) up to ``WHOLE_MAX_PIXELS``."""
    return None if h * w <= WHOLE_MAX_PIXELS else DEFAULT_TILE


#: px of CoC: the network's disparity is averaged over each surface (optics.smooth_surfaces) with
#: this range scale. Tuning Spearman (24 scenes, seeds 500000+) 0.745 -> 0.797; 1.0 px gave 0.793
#: and 1.5 px 0.780 (0.5 px: 0.840 against 0.848 on the first 12). A second pass, as the classical
#: backend makes, gave 0.834 -> 0.839 with the stage-4 weights but lost up to 0.12 on single scenes
SURFACE_SMOOTH_RANGE = 0.75
#: the backdrop plane (optics.flatten_backdrop), fitted to the network's own map by its confidence,
#: keeps this much of the map's difference from it: the network's walls carry real structure a
#: plane would erase. Tuning Spearman (24 scenes, seeds 500000+) 0.883 -> 0.905; with none kept
#: 0.900. Its map has no halo around objects to give back to the wall by colour: that band gained
#: 0.002 and made a ragged horizon on the garden sample, so it goes without. The refocus on 12 of
#: the scenes is unchanged (31.73 dB): the renderer follows the map before the plane
BACKDROP_KEEP = 0.3
#: the all-in-focus image: the deconvolution's share of each pixel (deconvolution_share), by the
#: pixel's |blur| (below each px bound), and none within DECONV_JUMP_REACH px of a jump in the blur
#: map (a change of more than DECONV_JUMP_SLOPE px per px), where the network's image is the better.
#: The network restores outlines better and surfaces' texture worse than the per-bin deconvolution
#: (benchmark, every pixel within 8 px of an outline made perfect: network 28.60 dB, classical
#: 28.96 dB). All-in-focus gain over the input, tuning seeds 500000-500023 / 700000-700011: network
#: alone +2.061 / +1.391 dB; the mean of both +2.277 / -; these shares +2.384 / +1.677 dB (0.6 or
#: 0.8 for small blur, 0.4 for large: within 0.01 dB; 0.7 below 4 px and none above: +1.510 dB on
#: 700000+). A share per bin of |blur| and jump distance fitted on 12 scenes gained no more on the
#: other 12
DECONV_SHARE = ((4.0, 0.7), (np.inf, 0.3))
DECONV_JUMP_SLOPE = 0.5
DECONV_JUMP_REACH = 4
#: the blend's deconvolution is cheaper than the classical backend's own (3 half-quadratic steps,
#: bins 1 px apart, each pixel a blend of its two nearest bins): at 1120x1680 the analysis is held
#: to 6 s. All-in-focus gain on seeds 500000-500023 and deconvolution time at 384x576: 3 steps, 1 px
#: +2.384 dB 0.42 s; 2 steps, 1 px +2.356 dB 0.35 s; 3 steps, 1.5 px +2.352 dB 0.35 s; 2 steps,
#: 1.5 px +2.330 dB 0.30 s; 1 step, 1 px +2.312 dB 0.29 s; none, 1 px +2.248 dB 0.21 s; by the
#: nearest bin alone, 3 steps, 1 px +2.369 dB 0.34 s, 2 steps, 1.5 px (these) +2.313 dB 0.24 s;
#: blur of 4 px or more deconvolved at half resolution, 2 steps, 1.5 px +2.259 dB 0.24 s
DECONV_HQS_STEPS = 2
DECONV_BANK_STEP = 1.5
#: px of |blur|: the deconvolution's share fades out between these, which bounds its kernels' size
#: (and so the FFT margins around each region) for DSLR-sized blur, where a third of a deconvolution
#: adds little. Gain on seeds 500000-500023 with no share above 8 / 12 / 16 px: +2.262 / +2.310 /
#: +2.313 dB (the fade: +2.314 dB). At 2592x3888 (the garden sample upscaled 6x) the deconvolution
#: takes 22 s beside the network's 20 s either way: its blur map, 12-16 px over most of the image,
#: splits into 631 regions whose boxes cover the image four times
DECONV_MAX_BLUR = (12.0, 16.0)


class NetworkWeightsError(BackendError):
    """A weights file that cannot be used; the message names the file and what to do."""


def load_network(path: str | Path | None = None) -> DPKernelNet:
    """Load weights written by :func:`dpfocus.nn.train.export_weights` (``weights_only=True``)."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise NetworkWeightsError(f"{path}: no such weights file; reinstall napari-dpfocus or train one with `dpfocus train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or unsafe pickled objects
        raise NetworkWeightsError(f"{path}: not a readable weights file ({type(exc).__name__}); re-export it with `dpfocus train`") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise NetworkWeightsError(f"{path}: not a dpfocus network weights file; use one written by `dpfocus train`")
    try:
        net = DPKernelNet(NetConfig(**payload["config"]))
        net.load_state_dict(payload["state_dict"])
    except (TypeError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise NetworkWeightsError(f"{path}: weights do not match the network ({first}); use weights trained by this version") from None
    net.eval()
    net.info = json.loads(payload.get("info") or "{}")
    return net


@lru_cache(maxsize=2)
def _shipped(path: str) -> DPKernelNet:
    return load_network(path)


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """Blend weights along one tile axis: neighbours share ``2 * overlap`` px; each tile drops its
    outer ``overlap / 2`` (where padding shows) and ramps linearly over the next ``overlap``."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        drop = overlap // 2
        r = np.concatenate([np.zeros(drop, np.float32), (np.arange(overlap, dtype=np.float32) + 0.5) / overlap])
        if not at_start:
            w[: r.size] = np.minimum(w[: r.size], r)
        if not at_end:
            w[-r.size :] = np.minimum(w[-r.size :], r[::-1])
    return w


def _tiles(n: int, tile: int, overlap: int) -> list[int]:
    """Tile starts: multiples of ``GRID`` (``n`` and ``tile`` are), so every tile samples the
    network's strided grids where the whole image does."""
    if n <= tile:
        return [0]
    step = max(GRID, (tile - 2 * overlap) // GRID * GRID)
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def _tile_plan(h: int, w: int, tile: int | None) -> tuple[list[tuple[slice, slice]], list[np.ndarray]]:
    """Tiles over an ``h x w`` image padded to the grid, and each one's blend weights (the weights
    of overlapping tiles sum to one everywhere). ``tile`` None: one tile, the whole image."""
    tile = int(tile) if tile else max(h, w)
    tile = max(-(-tile // GRID) * GRID, -(-(2 * OVERLAP + GRID) // GRID) * GRID)
    overlap = OVERLAP if tile < max(h, w) else 0
    boxes, weights = [], []
    for y in _tiles(h, tile, overlap):
        for x in _tiles(w, tile, overlap):
            th, tw = min(tile, h - y), min(tile, w - x)
            boxes.append((slice(y, y + th), slice(x, x + tw)))
            weights.append(_ramp(th, overlap, y == 0, y + th == h)[:, None] * _ramp(tw, overlap, x == 0, x + tw == w)[None, :])
    return boxes, weights


def _padded_views(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The views padded to the network's grid; padding mirrors the other view at the right border
    (plain reflection had smeared the negative disparity into the last 10 columns: garden sample
    1.99 px error there, now 0.29)."""
    h, w = left.shape[:2]
    return pad_dp_pair(left, right, (0, (-h) % GRID), (0, (-w) % GRID))


def _tile_tensors(lt: np.ndarray, rt: np.ndarray, box: tuple[slice, slice]) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(np.ascontiguousarray(v[box].transpose(2, 0, 1)))[None] for v in (lt, rt))


def run_network(net: DPKernelNet, left: np.ndarray, right: np.ndarray, tile: int | None = DEFAULT_TILE, progress=None,
                disparity_only: bool = False, stages: list | None = None) -> dict[str, np.ndarray]:
    """Whole-image or tiled inference on H x W x 3 float32 views; maps at full resolution.

    Returns aif (H x W x 3), disparity, confidence (H x W), weights (K x H/4 x W/4 as computed,
    resampled to full res on demand) blended across tiles with smooth ramps. ``disparity_only``:
    the matching half of the network alone, and only disparity and confidence; ``stages``, a list,
    then receives each tile's ``disparity_stage`` outputs in tile order.
    """
    lt, rt = _padded_views(left, right)
    boxes, blends = _tile_plan(*lt.shape[:2], tile)
    return _run_tiles(net, lt, rt, boxes, blends, left.shape[:2], progress, disparity_only, stages)


def _run_tiles(net: DPKernelNet, lt: np.ndarray, rt: np.ndarray, boxes: list, blends: list, size: tuple[int, int], progress=None,
               disparity_only: bool = False, stages: list | None = None) -> dict[str, np.ndarray]:
    """:func:`run_network` on views already padded to the grid and a tile plan for them; maps
    cropped to ``size``."""
    h, w = size
    H, W = lt.shape[:2]
    k = net.config.n_kernels
    acc = {"disparity": np.zeros((H, W), np.float32), "confidence": np.zeros((H, W), np.float32)}
    if not disparity_only:
        acc.update(aif=np.zeros((H, W, 3), np.float32), weights=np.zeros((k, H // 4, W // 4), np.float32))
    norm = np.zeros((H, W), np.float32)
    norm4 = np.zeros((H // 4, W // 4), np.float32)
    with torch.no_grad():
        for done, (sl, wt) in enumerate(zip(boxes, blends), 1):
            views = _tile_tensors(lt, rt, sl)
            if disparity_only:
                stage = net.disparity_stage(*views)
                if stages is not None:
                    stages.append(stage)
                disp4, confidence, _ = stage
                disparity = upsample_disparity(disp4)
            else:
                out = net(*views)
                disparity, confidence = out.disparity, out.confidence
                acc["aif"][sl] += out.aif[0].numpy().transpose(1, 2, 0) * wt[..., None]
                wt4 = wt[1::4, 1::4]
                sl4 = _quarter_box(sl)
                acc["weights"][:, sl4[0], sl4[1]] += out.weights[0].numpy() * wt4
                norm4[sl4] += wt4
            acc["disparity"][sl] += disparity[0, 0].numpy() * wt
            conf = F.interpolate(confidence, scale_factor=4, mode="bilinear", align_corners=False)
            acc["confidence"][sl] += conf[0, 0].numpy() * wt
            norm[sl] += wt
            if progress is not None:
                progress(0.05 + 0.85 * done / len(boxes), f"network tile {done}/{len(boxes)}")
    result = {"disparity": (acc["disparity"] / norm)[:h, :w], "confidence": (acc["confidence"] / norm)[:h, :w]}
    if not disparity_only:
        result["aif"] = (acc["aif"] / norm[..., None])[:h, :w]
        result["weights"] = acc["weights"] / np.maximum(norm4, 1e-6)  # padded grid: H/4 x W/4
    return result


def image_space_bank(net: DPKernelNet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The learned set as image-space kernels, sorted by signed CoC: (order, cocs, left, right).

    Each entry is learned at 1/4 resolution; the image-space PSF it stands for is that kernel
    resampled x4 about its centre (odd size), normalised to sum to one.
    """
    from scipy.ndimage import map_coordinates

    with torch.no_grad():
        kl, kr, _ = net.kernels()
        cocs = net.kernel_cocs().numpy()
    s = kl.shape[-1]
    size = 4 * (s - 1) + 1  # odd, centre on centre: full-res offset u is 1/4-res offset u / 4
    v = (s - 1) / 2 + (np.arange(size) - (size - 1) / 2) / 4
    grid = np.meshgrid(v, v, indexing="ij")
    up = lambda k: np.stack([map_coordinates(x, grid, order=1) for x in k.numpy()])  # noqa: E731
    left, right = up(kl), up(kr)
    left /= left.sum((1, 2), keepdims=True)
    right /= right.sum((1, 2), keepdims=True)
    order = np.argsort(cocs, kind="stable")
    return order, cocs[order].astype(np.float32), left[order].astype(np.float32), right[order].astype(np.float32)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def network_cocs(disparity: np.ndarray, confidence: np.ndarray, J: float) -> tuple[np.ndarray, np.ndarray]:
    """The CoC map of the network's disparity (surfaces smoothed where the confidence is low), and
    the blur map: the CoC the photo shows, a blurred foreground's spill over its surroundings
    included (the map has the true depth edges; refocus PSNR with the spill on tuning scenes
    500000-500011 / 500012-500023 / 700000-700011: 31.73 / 35.03 / 33.42 -> 32.29 / 35.66 / 33.90 dB)."""
    coc = smooth_surfaces(J * disparity, confidence, SURFACE_SMOOTH_RANGE)
    return coc, foreground_spill(coc)


def deconvolution_share(blur: np.ndarray) -> np.ndarray:
    """Each pixel's share of the classical deconvolution in the all-in-focus image, by its |blur|
    (``DECONV_SHARE``, fading out over ``DECONV_MAX_BLUR``), none within ``DECONV_JUMP_REACH`` px of
    a jump in the blur map."""
    from scipy import ndimage

    gy, gx = np.gradient(blur.astype(np.float32))
    far = ndimage.distance_transform_edt(np.hypot(gx, gy) <= DECONV_JUMP_SLOPE) >= DECONV_JUMP_REACH
    size = np.abs(blur)
    share = np.zeros(blur.shape, np.float32)
    below = 0.0
    for bound, value in DECONV_SHARE:
        share[(size >= below) & (size < bound)] = value
        below = bound
    lo, hi = DECONV_MAX_BLUR
    return share * far * np.clip((hi - size) / (hi - lo), 0, 1)


def deconvolved_views(pair: DPPair, blur: np.ndarray, where: np.ndarray) -> np.ndarray | None:
    """The classical deconvolution of the views by the physical DP PSF at the network's blur map,
    H x W x 3 (grey repeated), computed only ``where`` (0 elsewhere); None if ``where`` is empty."""
    if not where.any():
        return None
    blur = blur.astype(np.float32)
    cocs, bank_l, bank_r = kernel_bank(DPPSF(), float(np.abs(blur[where]).max()) + 2, step=DECONV_BANK_STEP)
    # each pixel by its nearest bin's kernel alone, not a blend of two deconvolutions (half the work)
    binned = cocs[nearest_bin(blur, cocs)]
    return _rgb(deconvolve_aif(pair.left, pair.right, binned, cocs, bank_l, bank_r, where=where, hqs_steps=DECONV_HQS_STEPS))


def _mixed(aif: np.ndarray, deconvolved: np.ndarray | None, share: np.ndarray) -> np.ndarray:
    """H x W x 3 images blended by an H x W share of the second."""
    return aif if deconvolved is None else (aif + share[..., None] * (deconvolved - aif)).astype(np.float32)


def network_backend(pair: DPPair, progress=None, tile: int | None = None, weights: str | Path | None = None, **_ignored) -> Analysis:
    """Analyse a pair with the shipped network (see the module docstring)."""
    if tile is not None and not (isinstance(tile, (int, np.integer)) and tile > 0):
        raise BackendError(f"tile must be a positive number of px (got {tile}); leave it out for the default "
                           f"(the whole image up to {WHOLE_MAX_PIXELS / 1e6:g} MP, {DEFAULT_TILE} px tiles beyond)")
    t0 = time.perf_counter()
    net = _shipped(str(weights or WEIGHTS_PATH))
    if progress is not None:
        progress(0.02, "network: loading")
    tile = tile or default_tile(*pair.shape[:2])
    out = run_network(net, _rgb(pair.left).astype(np.float32), _rgb(pair.right).astype(np.float32), tile, progress)
    t1 = time.perf_counter()
    order, cocs, bank_l, bank_r = image_space_bank(net)
    h, w = pair.shape[:2]
    blend = torch.from_numpy(np.ascontiguousarray(out["weights"][order])[None])  # entries in CoC order
    blend = F.interpolate(blend, scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    top_w, top = torch.topk(blend, TOP_K, dim=0)  # sorted, largest first
    top, top_w = top.numpy(), top_w.numpy()
    top_w /= top_w.sum(0, keepdims=True)
    J = float(net.J.detach())
    confidence = np.clip(out["confidence"], 0, 1).astype(np.float32)
    t2 = time.perf_counter()
    coc, blur = network_cocs(out["disparity"], confidence, J)
    photo = (pair.left.astype(np.float32) + pair.right.astype(np.float32)) / 2
    coc, plane = flatten_backdrop(coc, coc, confidence, photo, keep=BACKDROP_KEEP, colour_reach=0)
    t3 = time.perf_counter()
    if progress is not None:
        progress(0.9, "network: deconvolving away from depth edges")
    share = deconvolution_share(blur)
    aif = _mixed(np.clip(out["aif"], 0, 1), deconvolved_views(pair, blur, share > 0), share)
    aif = aif.mean(axis=2) if pair.left.ndim == 2 else aif
    t4 = time.perf_counter()
    analysis = Analysis(
        disparity=(coc / J).astype(np.float32),
        confidence=confidence,
        coc=coc,
        kernel_index=top[0].astype(np.uint16),
        kernel_cocs=cocs,
        kernels_left=bank_l,
        kernels_right=bank_r,
        aif=aif.astype(np.float32),
        coc_per_disparity=J,
        backend="network",
        # refocusing blurs pixels with the physical DP PSF, not the learned (feature-space) entries
        meta={"render_psf": render_psf_spec(DPPSF()),
              "timings": {"network_s": t1 - t0, "bank_s": t2 - t1, "surfaces_s": t3 - t2, "deconvolution_s": t4 - t3}, "tile": tile,
              "backdrop_plane": None if plane is None else plane.summary(),
              "weights": str(weights or WEIGHTS_PATH), "training": getattr(net, "info", {})},
        kernel_weights_topk=(top.transpose(1, 2, 0).astype(np.int16), top_w.transpose(1, 2, 0).astype(np.float32)),
        blur_coc=None if np.array_equal(blur, coc) else blur,
    )
    if progress is not None:
        progress(1.0, "network: done")
    return analysis


def check_network_refocus(pair: DPPair, mask: np.ndarray | None, strength: float, tolerance: float) -> None:
    """FocusError unless the reblur path can render this target (checked before any work starts)."""
    from ..refocus import FocusError, check_controls

    check_controls(strength, tolerance)
    if tolerance > 0:
        raise FocusError("the network's reblur path keeps no sharp band: set the tolerance to 0, or render with the layered renderer")
    if mask is None:
        raise FocusError("the network's reblur path refocuses on a region: give a mask, point, box or text, not a disparity")
    mask = np.asarray(mask)
    if mask.shape[:2] != pair.shape[:2] or not mask.any():
        raise FocusError("the focus mask must be a non-empty mask of the pair's size")


def network_refocus(pair: DPPair, mask: np.ndarray | None, strength: float = 1.0, weights: str | Path | None = None,
                    tolerance: float = 0.0, tile: int | None = None) -> tuple[float, np.ndarray]:
    """The network's own full-quality refocus (its reblur path): ``(d_trg, image)``.

    The network's matching half gives the blur map the photo shows (:func:`network_cocs`, as in
    its analysis); ``d_trg`` is its mean over the mask's interior, so the layered renderer on the
    network's analysis focuses at the same depth. The target CoC ``C' = strength (C - J d_trg)``
    picks target kernels from the learned set by its size, calibrated against the physical PSF
    (:func:`reblur_calibration`). Where the target
    needs at least the captured blur ``C`` (within ``PHOTO_SLACK``), the same kernels reblur the
    captured photo by the difference ``sqrt(C'^2 - C^2)`` (defocus magnification: no deblurring
    error there; the photo itself where that difference is nil, fading in over
    ``PHOTO_EXACT_RAMP``); elsewhere they reblur the network's all-in-focus image by ``C'``.
    It needs a region and keeps no sharp band: ``tolerance`` must be 0. Images up to
    ``WHOLE_MAX_PIXELS`` run whole; larger ones (or any, given ``tile``) in blended tiles. Either
    way in two passes: the matching half first (its maps set ``d_trg``; each tile's 1/4-res
    outputs, 165 MB at 2592x3888, are kept), then the restoration and the reblur.
    """
    from ..refocus import PHOTO_SLACK, focus_region

    check_network_refocus(pair, mask, strength, tolerance)
    net = _shipped(str(weights or WEIGHTS_PATH))
    region = focus_region(np.asarray(mask) > 0)
    left, right = _rgb(pair.left).astype(np.float32), _rgb(pair.right).astype(np.float32)
    # from the views alone, not pair.combined, which only some ways of loading a pair carry: an
    # export's record must re-render the same image (on the benchmark 33.30 dB with the encoded
    # values' mean, 33.72 dB with this or with the rendered photo)
    photo = _rgb(views_photo(pair.left, pair.right))
    h, w = left.shape[:2]
    if tile is None:
        tile = default_tile(h, w)
    lt, rt = _padded_views(left, right)
    H, W = lt.shape[:2]
    boxes, blends = _tile_plan(H, W, tile)
    J = float(net.J.detach())
    with torch.no_grad():
        stages: list = []
        first = _run_tiles(net, lt, rt, boxes, blends, (h, w), disparity_only=True, stages=stages)
        _, captured = network_cocs(first["disparity"], np.clip(first["confidence"], 0, 1), J)
        d_trg = float(captured[region].mean()) / J
        share = deconvolution_share(captured)  # the all-in-focus image as the analysis makes it
        # the maps on the padded grid (edge-padded, as the views are), at full and 1/4 resolution
        captured = np.pad(captured, ((0, H - h), (0, W - w)), mode="edge")
        photo = np.pad(photo, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
        wanted = (strength * (captured - np.float32(J * d_trg))).astype(np.float32)
        from_photo = np.abs(wanted) >= np.abs(captured) - PHOTO_SLACK
        extra = np.sqrt(np.maximum(wanted * wanted - captured * captured, 0)).astype(np.float32)
        # the photo itself where the extra blur is nil, fading to its reblur by PHOTO_EXACT_RAMP px
        exact = np.clip(1 - extra / PHOTO_EXACT_RAMP, 0, 1)[..., None]
        share = np.pad(share, ((0, H - h), (0, W - w))) * ~from_photo  # none where the photo is reblurred
        deconvolved = deconvolved_views(pair, captured[:h, :w], share[:h, :w] > 0)
        if deconvolved is not None:
            deconvolved = np.pad(deconvolved, ((0, H - h), (0, W - w), (0, 0)))
        wanted4, extra4 = _quarter(wanted), _quarter(extra)
        img = np.zeros((H, W, 3), np.float32)
        norm = np.zeros((H, W), np.float32)
        for sl, wt, stage in zip(boxes, blends, stages, strict=True):
            sl4 = _quarter_box(sl)
            use_photo = from_photo[sl]
            tile_img = np.zeros(use_photo.shape + (3,), np.float32)
            if not use_photo.all():
                out = net.restoration_stage(*_tile_tensors(lt, rt, sl), *stage)
                sharp = _mixed(out.aif.clamp(0, 1)[0].numpy().transpose(1, 2, 0), None if deconvolved is None else deconvolved[sl], share[sl])
                sharp = torch.from_numpy(np.ascontiguousarray(sharp.transpose(2, 0, 1)))[None]
                tile_img = net.reblur(sharp, _target_weights(net, wanted4[None, None, sl4[0], sl4[1]]))[0].numpy().transpose(1, 2, 0)
            if use_photo.any():
                fade = exact[sl]
                magnified = photo[sl]
                if (fade[use_photo] < 1).any():  # some pixel needs more blur than the photo has
                    sharp = torch.from_numpy(np.ascontiguousarray(photo[sl].transpose(2, 0, 1)))[None]
                    blurred = net.reblur(sharp, _target_weights(net, extra4[None, None, sl4[0], sl4[1]]))[0].numpy().transpose(1, 2, 0)
                    magnified = fade * photo[sl] + (1 - fade) * blurred
                tile_img = np.where(use_photo[..., None], magnified, tile_img)
            img[sl] += tile_img * wt[..., None]
            norm[sl] += wt
        img /= norm[..., None]
    img = np.clip(img[:h, :w], 0, 1)
    return d_trg, (img.mean(axis=2) if pair.left.ndim == 2 else img)


def reblur_calibration(net: DPKernelNet) -> tuple[np.ndarray, np.ndarray]:
    """``(cocs, requests)``: for each blur size of ``CALIBRATION_COCS``, the CoC to ask the learned
    set for (``DPKernelNet.target_weights``) so that the reblur path blurs a sharp image as the
    physical DP PSF of that size does (least squares on a 192x256 crop of the garden sample's
    all-in-focus image, 0.7 s; cached on the network).

    The entries' own CoCs (centroid separation times J) do not say how much the reblur path blurs:
    on three training scenes, asked for 3 px it came 36.1 dB from the physical 3 px blur, asked for
    2 px 38.7 dB, asked for -3 px 29.4 dB. Its output is the photo, whose blur is the same for either sign, so only the
    size is calibrated, on the side of the set that draws it best.
    """
    cached = getattr(net, "_reblur_calibration", None)
    if cached is not None:
        return cached
    from ..optics import linear_to_srgb, srgb_to_linear
    from ..refocus import blur_by_radius
    from ..samples import load_ground_truth

    aif = load_ground_truth("garden")["aif"].astype(np.float32)
    h, w = 192, 256
    y0, x0 = (aif.shape[0] - h) // 2, (aif.shape[1] - w) // 2
    sharp = _rgb(aif[y0 : y0 + h, x0 : x0 + w])
    inner = (slice(24, -24), slice(24, -24))  # the blur's reach from the crop's edges
    with torch.no_grad():
        tensor = torch.from_numpy(np.ascontiguousarray(sharp.transpose(2, 0, 1)))[None]
        drawn = np.clip(np.stack([net.reblur(tensor, net.target_weights(torch.full((1, 1, h // 4, w // 4), float(c))))[0].numpy().transpose(1, 2, 0)[inner]
                                  for c in CALIBRATION_REQUESTS]), 0, 1)
    linear, psf, everywhere = srgb_to_linear(sharp), DPPSF(), np.ones((h, w), bool)
    requests = []
    for coc in CALIBRATION_COCS:
        physical = linear_to_srgb(blur_by_radius(linear, np.full((h, w), coc, np.float32), everywhere, psf))[inner]
        requests.append(CALIBRATION_REQUESTS[int(np.argmin(((drawn - physical) ** 2).mean(axis=(1, 2, 3))))])
    net._reblur_calibration = (CALIBRATION_COCS.astype(np.float32), np.maximum.accumulate(requests).astype(np.float32))
    return net._reblur_calibration


def _target_weights(net: DPKernelNet, coc4: torch.Tensor) -> torch.Tensor:
    """The learned set's weights that reblur by ``|coc4|`` (px, 1/4-res map) as the physical PSF would."""
    cocs, requests = reblur_calibration(net)
    size = np.abs(coc4.numpy())
    # beyond the grid, the last offset
    asked = np.where(size <= cocs[-1], np.interp(size, cocs, requests), size + (requests[-1] - cocs[-1]))
    return net.target_weights(torch.from_numpy(asked.astype(np.float32)))


def _quarter(full: np.ndarray) -> torch.Tensor:
    """A map on the padded grid, area-averaged to its 1/4-res grid."""
    import cv2

    H, W = full.shape
    return torch.from_numpy(cv2.resize(full, (W // 4, H // 4), interpolation=cv2.INTER_AREA))


def _quarter_box(box: tuple[slice, slice]) -> tuple[slice, slice]:
    """A tile's box on the 1/4-res grid (tiles lie on the 64 px grid)."""
    return tuple(slice(s.start // 4, s.stop // 4) for s in box)


if WEIGHTS_PATH.is_file():
    register_backend("network", tiles=True)(network_backend)
