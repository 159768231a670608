"""Training-free DP analysis: disparity from the DP blur model, a kernel bank, and deconvolution.

Disparity. The two views are ``B_L = I * K_L(c) + n`` and ``B_R = I * K_R(c) + n`` for the true signed
CoC ``c``. Marginalising the unknown sharp image ``I`` under a Gaussian gradient prior gives, per
frequency, the negative log-likelihood of a candidate (Zhou, Lin & Nayar, "Coded aperture pairs for
depth from defocus"):

    [ |K_R B_L - K_L B_R|^2 + lam |grad|^2 (|B_L|^2 + |B_R|^2) ] / (sigma^2 D) + log(D / (lam |grad|^2))
    with D = |K_L|^2 + |K_R|^2 + lam |grad|^2,  lam = sigma^2 / (prior gradient variance)

The first term is the DP consistency ``B_L * K_R = B_R * K_L``; the second charges a candidate for
image detail its kernels would have erased, and the log-determinant balances the noise that large
kernels would call detail. So neither "blur everything away" nor "nothing is blurred" wins by
default. The data terms are linear filters per candidate, localised with a box window; costs are
aggregated semi-globally (8 directions, edge-aware penalties), refined to sub-bin precision, and
low-confidence (textureless) areas are filled by confidence-weighted pull-push and an image-guided
filter, and the map is averaged over each surface by its own values (a bilateral grid). Each
pixel's residual is weighted by its own noise level (Poisson-Gaussian, fitted to the views), so a
dark surface's evidence is not drowned by a bright neighbour's shot noise. Left/right gain
(vignetting) is equalised first, and the filters pad each view with the mirrored other view (a
mirrored DP pair has its views swapped). Work happens at a reduced scale for large images; the
result is upsampled to the input resolution.

All-in-focus. Non-blind, spatially varying deconvolution: the two views in linear light are
deconvolved together with every bank kernel pair in use, over the clusters of pixels that use it
(the joint Wiener / MAP estimate under a Gaussian gradient prior whose weight follows the estimated
noise level, refined by a few half-quadratic steps under a sparse gradient prior), clamped to the
local range of the photo against ringing, and blended per pixel with the kernel weights.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.fft

from .analysis import Analysis, register_backend
from .io import DPPair
from .optics import BANK_RELATIVE_STEP, BANK_STEP, DPPSF, PSFModel, bin_weights, coc_bin_centres, flatten_backdrop, grow_box, linear_to_srgb, nearest_bin, pad_dp_pair, pull_push_fill, smooth_surfaces, srgb_to_linear, trim_kernel

__all__ = ["classical_backend", "estimate_disparity", "deconvolve_aif", "kernel_bank", "guided_filter"]

Progress = Callable[[float, str], None]

#: semi-global matching penalties (cost units: negative log-likelihood per pixel). With P2 no
#: larger than P1 any change of value costs the same (less across image edges): the surface
#: smoothing and the backdrop plane after it average surfaces, and a steep jump penalty only drew
#: SGM's straight streaks across weak walls. Tuning Spearman (seeds 700000-700031 / 700032-700063)
#: P2 40: 0.860 / 0.765; 20: 0.866; 10: 0.873 / 0.781; 7: 0.882 / 0.787; 5: 0.883 / 0.788;
#: 3: - / 0.783; 2.5: 0.876; P1 2.5 with P2 5: 0.884 / 0.788
SGM_P1 = 5.0
SGM_P2 = 5.0
#: high-pass scale (work px) applied to both views: lower frequencies carry shading, not disparity
BAND_SIGMA = 12.0
#: the prior's gradient variance is this percentile of the local gradient energy (the sharpest parts)
PRIOR_PERCENTILE = 90
#: spacing of the CoC candidates searched (work px). 0.25 px lessens the sub-bin fit's pull towards
#: the candidates (Spearman 0.714 -> 0.736 on tuning scenes, 0.805 -> 0.817 on the benchmark) but
#: took a 1120x1680 analysis from 4.6-5.6 s to 7.7-10.4 s, past the 10 s target on a busy machine
CANDIDATE_STEP = 0.5
#: radius (work px) of the cost window
COST_WINDOW = 9
#: per-pixel noise weights (Poisson-Gaussian noise, relative to the median pixel) are clipped to
#: [1 / this, this]. Tuning Spearman 0.744 -> 0.783 on 32 scenes (seeds 700000+), most where dark
#: and bright surfaces meet (a nearly black ground plane 0.18 -> 0.79, only 0.54 with a range of
#: 30); benchmark 0.805 -> 0.801
NOISE_WEIGHT_RANGE = 300.0
#: the map is finally averaged over each surface (optics.smooth_surfaces): pixels whose CoC lies
#: within about this many px (work scale) of each other's. It removes the SGM streaks and texture
#: noise but keeps depth jumps and ramps. Tuning Spearman 0.783 -> 0.810 on 32 scenes (no scene
#: lost more than 0.01; 0.5 px gave 0.806, 1.0 px 0.783), benchmark 0.801 -> 0.847. A second
#: pass: tuning 0.810 -> 0.819 (no scene lost more than 0.02), benchmark 0.846 -> 0.859
SURFACE_SMOOTH_RANGE = 0.25
SURFACE_SMOOTH_PASSES = 2
#: log-likelihood margin (per pixel) at which a minimum counts as 63% certain
CONFIDENCE_SCALE = 2.0

#: Wiener regularisation (gradient prior weight): AIF_PRIOR * noise variance, clipped to this range
AIF_PRIOR = 90.0
LAMBDA_MIN = 3e-2
LAMBDA_MAX = 0.15
#: weight of the sparse (L1) gradient prior of the half-quadratic refinement, its first penalty
#: weight (doubled each step) and its steps; tuning scenes (noise 0.003-0.01)
SPARSE_PRIOR = 0.002
HQS_BETA0 = 0.06
HQS_STEPS = 3
#: px beyond a kernel's support that each deconvolution box reaches (the inverse filter's tail)
DECONV_MARGIN = 16
#: px: the deconvolution works on clusters of pixels on a grid this fine
DECONV_BLOCK = 32


def _grey(img: np.ndarray) -> np.ndarray:
    return img.mean(axis=2).astype(np.float32) if img.ndim == 3 else img.astype(np.float32)


def _box(img: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(img, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def _gauss(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide (edge-preserving smoothing of ``src``)."""
    mean_i = _box(guide, r)
    mean_p = _box(src, r)
    cov_ip = _box(guide * src, r) - mean_i * mean_p
    var_i = _box(guide * guide, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, r) * guide + _box(b, r)


def equalise_gain(left: np.ndarray, right: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Remove the smooth left/right gain difference (opposite vignetting of the two photodiodes)."""
    h, w = left.shape
    f = max(1, int(sigma // 8))  # the gain is smooth: estimate it at reduced resolution
    small = [_resize(v, max(w // f, 1), max(h // f, 1), True) for v in (left, right)]
    ratio = (_gauss(small[0], sigma / f) + 1e-3) / (_gauss(small[1], sigma / f) + 1e-3)
    root = _resize(np.sqrt(np.clip(ratio, 0.25, 4.0)).astype(np.float32), w, h, False)
    return left / root, right * root


def _resize(img: np.ndarray, w: int, h: int, area: bool) -> np.ndarray:
    import cv2

    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def semi_global(costs: np.ndarray, guide: np.ndarray, p1: float, p2: float, diagonals: bool = True) -> np.ndarray:
    """Semi-global aggregation (Hirschmueller) of a ``K x H x W`` cost volume along 8 directions
    (4 without ``diagonals``).

    Each path adds ``p1`` for a one-candidate step and ``p2`` (lowered across image edges, where
    depth may jump) for larger steps, so textureless and periodic areas take the value their
    surroundings support instead of a noisy minimum.
    """
    k, h, w = costs.shape
    gy = np.abs(np.diff(guide, axis=0, prepend=guide[:1]))
    gx = np.abs(np.diff(guide, axis=1, prepend=guide[:, :1]))
    edge_scale = 1.0 / (0.02 + float(np.median(gx + gy)) + 1e-6)
    p2x = (p2 / (1.0 + edge_scale * gx)).astype(np.float32)
    p2y = (p2 / (1.0 + edge_scale * gy)).astype(np.float32)
    total = np.zeros_like(costs)
    big = np.float32(1e9)

    def sweep(c: np.ndarray, pen2: np.ndarray) -> np.ndarray:
        # c: K x T x N, paths of length T along axis 1 (each step reads one contiguous K x N slice
        # of a C-ordered volume), pen2: T x N
        out = np.empty_like(c)
        prev = c[:, 0].copy()
        out[:, 0] = prev
        pad = np.full((1, c.shape[2]), big, np.float32)
        for t in range(1, c.shape[1]):
            m = prev.min(axis=0)
            up = np.concatenate([prev[1:], pad], 0)
            down = np.concatenate([pad, prev[:-1]], 0)
            best = np.minimum(np.minimum(prev, np.minimum(up, down) + p1), (m + pen2[t])[None])
            prev = c[:, t] + best - m[None]
            out[:, t] = prev
        return out

    total += sweep(costs, p2y)  # down the columns
    total += sweep(costs[:, ::-1], p2y[::-1])[:, ::-1]
    across = np.ascontiguousarray(costs.transpose(0, 2, 1))  # K x W x H: rows become contiguous paths
    p2x_t = np.ascontiguousarray(p2x.T)
    along_rows = sweep(across, p2x_t)
    along_rows += sweep(across[:, ::-1], p2x_t[::-1])[:, ::-1]
    total += along_rows.transpose(0, 2, 1)
    del across, along_rows
    if not diagonals:
        return total / 4
    p2d = (p2 / (1.0 + edge_scale * np.maximum(gx, gy))).astype(np.float32)  # one penalty per pixel, any diagonal

    def diagonal(c: np.ndarray, pen2: np.ndarray, dx: int) -> np.ndarray:
        # rows top to bottom; pixel x continues the path from (y - 1, x - dx)
        out = np.empty_like(c)
        prev = c[:, 0].copy()
        out[:, 0] = prev
        pad = np.full((1, c.shape[2]), big, np.float32)
        for y in range(1, c.shape[1]):
            shifted = np.empty_like(prev)
            if dx > 0:
                shifted[:, 1:], shifted[:, 0] = prev[:, :-1], prev[:, 0]
            else:
                shifted[:, :-1], shifted[:, -1] = prev[:, 1:], prev[:, -1]
            m = shifted.min(axis=0)
            up = np.concatenate([shifted[1:], pad], 0)
            down = np.concatenate([pad, shifted[:-1]], 0)
            best = np.minimum(np.minimum(shifted, np.minimum(up, down) + p1), (m + pen2[y])[None])
            prev = c[:, y] + best - m[None]
            out[:, y] = prev
        return out

    for dx in (1, -1):
        total += diagonal(costs, p2d, dx)
        total += diagonal(costs[:, ::-1], p2d[::-1], dx)[:, ::-1]  # paths running upwards
    return total / 8


def _kernel_spectrum(kernel: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """rfft2 of an odd square kernel on an ``fh x fw`` grid, centred on the origin (no shift)."""
    size = kernel.shape[0]
    padded = np.zeros((fh, fw), np.float32)
    padded[:size, :size] = kernel
    return scipy.fft.rfft2(np.roll(padded, (-(size // 2), -(size // 2)), axis=(0, 1)), workers=-1)


def likelihood_costs(
    gl: np.ndarray,
    gr: np.ndarray,
    psf: PSFModel,
    candidates: np.ndarray,
    *,
    window: int = 9,
    progress: Progress | None = None,
) -> np.ndarray:
    """``K x H x W`` negative log-likelihood (per pixel, window mean) of each candidate CoC.

    ``gl``, ``gr`` are linear grey views with equal gain. See the module docstring for the model.
    """
    hs, ws = gl.shape
    bl = gl - _gauss(gl, BAND_SIGMA)
    br = gr - _gauss(gr, BAND_SIGMA)
    half = max(psf.kernels(float(candidates[0]))[0].shape[0], psf.kernels(float(candidates[-1]))[0].shape[0]) // 2
    pad = half + 2
    fh = scipy.fft.next_fast_len(hs + 2 * pad + 2 * half, real=True)
    fw = scipy.fft.next_fast_len(ws + 2 * pad + 2 * half, real=True)
    fl, fr = (scipy.fft.rfft2(v, s=(fh, fw), workers=-1) for v in pad_dp_pair(bl, br, (pad, pad), (pad, pad)))
    wy = 2 * np.pi * np.fft.fftfreq(fh).astype(np.float32)[:, None]
    wx = 2 * np.pi * np.fft.rfftfreq(fw).astype(np.float32)[None, :]
    grad2 = (2 - 2 * np.cos(wy)) + (2 - 2 * np.cos(wx))
    # the log-determinant counts only the frequencies the band-pass keeps (rfft: inner columns twice)
    band = (1 - np.exp(-0.5 * (wy * wy + wx * wx) * BAND_SIGMA**2)) ** 2
    band[:, 1:-1] *= 2
    band /= fh * fw
    sigma2 = max((_noise_sigma(gl) ** 2 + _noise_sigma(gr) ** 2) / 2, 1e-10)
    gy, gx = np.gradient(gl)
    prior = max(float(np.percentile(_box(gx * gx + gy * gy, 7), PRIOR_PERCENTILE)), 1e-12)
    lam = np.float32(sigma2 / prior)
    # shot noise: a bright pixel's residual is worth less than a dark one's (weights relative to
    # the median pixel, so the balance with the log-determinant stays that of a typical pixel)
    variance = noise_variance_map(gl, gr)
    noise_weight = np.clip(np.float32(np.median(variance)) / variance, 1 / NOISE_WEIGHT_RANGE, NOISE_WEIGHT_RANGE).astype(np.float32)
    lam_grad2 = lam * grad2
    costs = np.empty((len(candidates), hs, ws), np.float32)
    for k, c in enumerate(candidates):
        kl, kr = psf.kernels(float(c))
        fkl, fkr = _kernel_spectrum(kl, fh, fw), _kernel_spectrum(kr, fh, fw)
        d = (fkl.real**2 + fkl.imag**2 + fkr.real**2 + fkr.imag**2 + lam_grad2).astype(np.float32)
        inv = 1 / np.sqrt(d)
        erased = np.sqrt(lam_grad2) * inv  # what the candidate's kernels would have removed
        terms = scipy.fft.irfft2(np.stack([(fkr * fl - fkl * fr) * inv, erased * fl, erased * fr]), s=(fh, fw), workers=-1)
        terms = terms[:, pad : pad + hs, pad : pad + ws]
        energy = terms[0] ** 2 + terms[1] ** 2 + terms[2] ** 2
        log_det = float((band * np.log(d / np.maximum(lam_grad2, 1e-12))).sum())
        costs[k] = _box(energy * noise_weight, window) * np.float32(1 / sigma2) + np.float32(log_det)
        if progress is not None and k % 8 == 0:
            progress(0.6 * (k + 1) / len(candidates), "matching DP kernels")
    return costs


def _cost_minimum(costs: np.ndarray, candidates: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: the sub-bin minimum of a cost volume (a parabola through the best candidate and
    its neighbours), the parabola's curvature (how sharply the costs single it out, per px^2), the
    best candidate's index and its cost."""
    n = len(candidates)
    best = costs.argmin(axis=0)
    rows, cols = np.indices(best.shape)
    c0 = costs[best, rows, cols]
    cm = costs[np.clip(best - 1, 0, n - 1), rows, cols]
    cp = costs[np.clip(best + 1, 0, n - 1), rows, cols]
    denom = cm - 2 * c0 + cp
    offset = np.where(denom > 1e-9, 0.5 * (cm - cp) / np.maximum(denom, 1e-9), 0.0)
    value = (candidates[best] + step * np.clip(offset, -0.5, 0.5)).astype(np.float32)
    return value, (np.maximum(denom, 0) / step**2).astype(np.float32), best, c0


def estimate_disparity(
    left: np.ndarray,
    right: np.ndarray,
    psf: PSFModel,
    *,
    max_coc: float = 24.0,
    work_size: int = 720,
    progress: Progress | None = None,
    details: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed CoC (px) and confidence at the input resolution, from the DP blur model.

    Parameters
    ----------
    left, right : ndarray
        Display-encoded views (grey or RGB), same shape.
    psf : PSFModel
        The DP PSF family the candidates are drawn from.
    max_coc : float
        Largest |CoC| searched, in input pixels.
    work_size : int
        The longer side is reduced to about this many pixels for the search.
    details : dict, optional
        Filled with ``backdrop_plane``, the plane ``optics.flatten_backdrop`` put in (input px of
        CoC) or None, and where there is one ``blur_coc``, the map before it: the blur each pixel
        shows, a nearer object's spill onto the wall around it included (what the deconvolution
        must undo).
    """
    h, w = left.shape[:2]
    scale = max(1, int(round(max(h, w) / work_size)))
    gl, gr = _grey(srgb_to_linear(left)), _grey(srgb_to_linear(right))
    gl, gr = equalise_gain(gl, gr, sigma=max(h, w) / 12)
    hs, ws = h // scale, w // scale
    if scale > 1:
        gl, gr = _resize(gl, ws, hs, True), _resize(gr, ws, hs, True)
    c_max = max_coc / scale
    step = CANDIDATE_STEP
    reach = np.ceil(c_max / step) * step
    candidates = np.arange(-reach, reach + step / 2, step, dtype=np.float32)
    window = COST_WINDOW
    costs = likelihood_costs(gl, gr, psf, candidates, window=window, progress=progress)
    # each pixel's own evidence, before aggregation spreads its neighbours' into it: the backdrop
    # plane is fitted to this (aggregation streaks across a weakly textured wall)
    own_coc, own_certainty, _, _ = _cost_minimum(costs, candidates, step)
    guide = np.sqrt(gl / (gl.max() + 1e-6))
    costs = semi_global(costs, guide, p1=SGM_P1, p2=SGM_P2)
    coc, _, best, c0 = _cost_minimum(costs, candidates, step)
    rows, cols = np.indices(best.shape)
    # confidence: the minimum is clearly below the typical candidate and below the best one elsewhere
    # (periodic textures have several), in log-likelihood units per pixel
    # (the best cost 2 px or more away: running minima from either end, no K x H x W mask)
    n = len(candidates)
    far = int(round(2.0 / step))
    below = np.minimum.accumulate(costs, axis=0)
    above = np.minimum.accumulate(costs[::-1], axis=0)[::-1]
    inf = np.float32(np.inf)
    second = np.minimum(
        np.where(best - far >= 0, below[np.clip(best - far, 0, n - 1), rows, cols], inf),
        np.where(best + far <= n - 1, above[np.clip(best + far, 0, n - 1), rows, cols], inf),
    )
    second = np.where(np.isfinite(second), second, c0)
    typical = np.median(costs, axis=0)
    conf = ((1 - np.exp(-(typical - c0) / CONFIDENCE_SCALE)) * (1 - np.exp(-(second - c0) / CONFIDENCE_SCALE))).astype(np.float32)
    filled = pull_push_fill(coc.astype(np.float32), conf)
    smooth = guided_filter(guide, filled, r=max(2, window // 2), eps=1e-4)
    coc_small = np.where(conf > 0.5, 0.5 * (coc + smooth), smooth).astype(np.float32)
    coc_small = guided_filter(guide, coc_small, r=2, eps=1e-4)
    coc_small = smooth_surfaces(coc_small, conf, SURFACE_SMOOTH_RANGE, SURFACE_SMOOTH_PASSES)
    photo = (left.astype(np.float32) + right.astype(np.float32)) / 2
    photo = _resize(photo, ws, hs, True) if scale > 1 else photo
    blur_small = coc_small
    coc_small, plane = flatten_backdrop(coc_small, own_coc, own_certainty, photo)
    if details is not None:
        details["backdrop_plane"] = None if plane is None else plane.summary(scale)
        if plane is not None:
            details["blur_coc"] = (_resize(blur_small * scale, w, h, False) if scale > 1 else blur_small).astype(np.float32)
    if progress is not None:
        progress(0.65, "propagating disparity")
    coc_full = _resize(coc_small * scale, w, h, False) if scale > 1 else coc_small
    conf_full = _resize(conf, w, h, False) if scale > 1 else conf
    return coc_full.astype(np.float32), np.clip(conf_full, 0, 1).astype(np.float32)


def kernel_bank(psf: PSFModel, max_abs_coc: float, step: float = BANK_STEP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bank of DP kernels at quantised signed CoC: ``(cocs, left kernels, right kernels)``, ``step``
    px apart near focus (see :func:`coc_bin_centres`)."""
    cocs = coc_bin_centres(max(max_abs_coc, 0.5), step=step, relative_step=BANK_RELATIVE_STEP)
    pairs = [psf.kernels(float(c)) for c in cocs]
    size = max(k[0].shape[0] for k in pairs)

    def pad(k: np.ndarray) -> np.ndarray:
        p = (size - k.shape[0]) // 2
        return np.pad(k, p)

    return cocs, np.stack([pad(k[0]) for k in pairs]), np.stack([pad(k[1]) for k in pairs])


def _fine_laplacian(g: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of the interior pixels (variance ``20 sigma^2`` for white noise)."""
    return g[1:-1, 1:-1] * 4 - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]


def _noise_sigma(img: np.ndarray) -> float:
    """Robust noise estimate (median absolute deviation of a fine Laplacian)."""
    lap = _fine_laplacian(_grey(img))
    return float(np.median(np.abs(lap - np.median(lap))) * 1.4826 / np.sqrt(20))


def noise_variance_map(gl: np.ndarray, gr: np.ndarray, bins: int = 16) -> np.ndarray:
    """Per-pixel noise variance of two linear views under the Poisson-Gaussian model
    ``var = a x + b``: ``a`` and ``b`` are fitted to robust noise estimates (the lower quartile of
    the fine Laplacian, which texture inflates least) in brightness bins."""
    g = 0.5 * (gl + gr)
    brightness = np.tile(_box(g, 2)[1:-1, 1:-1].ravel(), 2)
    lap = np.abs(np.concatenate([_fine_laplacian(v).ravel() for v in (gl, gr)]))
    edges = np.quantile(brightness, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, brightness, side="right") - 1, 0, bins - 1)
    xs, ys = [], []
    for i in range(bins):
        sel = which == i
        if sel.sum() < 100:
            continue
        xs.append(float(np.median(brightness[sel])))
        # lower quartile of |N(0, s^2)| is 0.3186 s; the Laplacian's variance is 20 sigma^2
        ys.append((float(np.percentile(lap[sel], 25)) / 0.3186) ** 2 / 20)
    if len(xs) < 2:
        return np.full(g.shape, max(_noise_sigma(g) ** 2, 1e-12), np.float32)
    (a, b), *_ = np.linalg.lstsq(np.stack([xs, np.ones(len(xs))], 1), np.array(ys), rcond=None)
    a, b = max(float(a), 0.0), max(float(b), 1e-12)
    return (a * np.maximum(_gauss(g, 2.0), 0) + b).astype(np.float32)


def _local_extreme(img: np.ndarray, r: int, op) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)  # square: constant cost per pixel in OpenCV
    f = cv2.erode if op is np.minimum else cv2.dilate
    out = f(np.ascontiguousarray(img), kernel, borderType=cv2.BORDER_REFLECT)
    return out.reshape(img.shape)


def periodic_pad(img: np.ndarray, pad: int, fh: int, fw: int) -> np.ndarray:
    """Mirror-pad by ``pad``, then fill up to ``fh x fw`` with a linear blend between opposite edges.

    The result wraps around without a jump, so FFT-based (circular) filtering does not ring at the
    frame border.
    """
    out = np.pad(img, ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2), mode="reflect")

    def blend(a: np.ndarray, axis: int, total: int) -> np.ndarray:
        extra = total - a.shape[axis]
        if extra <= 0:
            return a
        first = np.take(a, [0], axis=axis)
        last = np.take(a, [-1], axis=axis)
        t = (np.arange(1, extra + 1, dtype=np.float32) / (extra + 1)).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        return np.concatenate([a, last + (first - last) * t], axis=axis)

    return blend(blend(out, 0, fh), 1, fw).astype(np.float32)


def _regions(mask: np.ndarray, block: int | None = None) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The boxes of a mask's clusters (8-connected on a ``block`` px grid, default ``DECONV_BLOCK``)
    and each cluster's pixels within its box: scattered pixels cost their clusters' boxes, not one
    box around them all."""
    from scipy import ndimage

    block = block or DECONV_BLOCK
    h, w = mask.shape
    hb, wb = -(-h // block), -(-w // block)
    coarse = np.pad(mask, ((0, hb * block - h), (0, wb * block - w))).reshape(hb, block, wb, block).any(axis=(1, 3))
    labels, _ = ndimage.label(coarse, structure=np.ones((3, 3)))
    regions = []
    for j, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        box = (slice(found[0].start * block, min(found[0].stop * block, h)), slice(found[1].start * block, min(found[1].stop * block, w)))
        mine = np.repeat(np.repeat(labels[found] == j, block, 0), block, 1)[: box[0].stop - box[0].start, : box[1].stop - box[1].start]
        regions.append((box, mine & mask[box]))
    return regions


def _deconvolve_box(padded: list[np.ndarray], pad: int, box: tuple[slice, slice], reach: int, kl: np.ndarray, kr: np.ndarray, lam: float, steps: int) -> np.ndarray:
    """Joint deconvolution of the two (padded, linear) views over ``box`` grown by ``reach``: the
    Gaussian-prior MAP image, then ``steps`` half-quadratic steps under the sparse gradient prior."""
    crop = (slice(box[0].start + pad - reach, box[0].stop + pad + reach), slice(box[1].start + pad - reach, box[1].stop + pad + reach))
    # FFTs wrap through a blend between opposite edges (no jump to ring at)
    fh = scipy.fft.next_fast_len(crop[0].stop - crop[0].start + DECONV_MARGIN, real=True)
    fw = scipy.fft.next_fast_len(crop[1].stop - crop[1].start + DECONV_MARGIN, real=True)
    spec_l, spec_r = (scipy.fft.rfft2(periodic_pad(p[crop], 0, fh, fw).transpose(2, 0, 1), workers=-1) for p in padded)
    fkl, fkr = _kernel_spectrum(kl, fh, fw), _kernel_spectrum(kr, fh, fw)
    # |spectrum|^2 of the forward differences x[n + 1] - x[n] along both axes
    grad2 = (4 * np.sin(np.pi * np.fft.fftfreq(fh)) ** 2)[:, None] + (4 * np.sin(np.pi * np.fft.rfftfreq(fw)) ** 2)[None, :]
    grad2 = grad2.astype(np.float32)
    data = (np.abs(fkl) ** 2 + np.abs(fkr) ** 2).astype(np.float32)
    numer = np.conj(fkl) * spec_l + np.conj(fkr) * spec_r
    spectrum = numer / (data + np.float32(2 * lam) * grad2)
    beta = HQS_BETA0
    grads = np.empty((2, spectrum.shape[0], fh, fw), np.float32)
    div = np.empty((spectrum.shape[0], fh, fw), np.float32)
    for _ in range(steps):
        x = scipy.fft.irfft2(spectrum, s=(fh, fw), workers=-1)
        # circular forward differences, then the L1 prior's proximal step g - clip(g, -threshold, threshold)
        np.subtract(x[:, 1:], x[:, :-1], out=grads[0, :, :-1])
        np.subtract(x[:, :1], x[:, -1:], out=grads[0, :, -1:])
        np.subtract(x[:, :, 1:], x[:, :, :-1], out=grads[1, :, :, :-1])
        np.subtract(x[:, :, :1], x[:, :, -1:], out=grads[1, :, :, -1:])
        threshold = np.float32(SPARSE_PRIOR / beta)
        grads -= np.clip(grads, -threshold, threshold)
        # their adjoint (w[n - 1] - w[n] along each axis) in space: one FFT instead of one per axis
        gy, gx = grads
        np.subtract(gy[:, :-1], gy[:, 1:], out=div[:, 1:])
        np.subtract(gy[:, -1:], gy[:, :1], out=div[:, :1])
        div[:, :, 1:] += gx[:, :, :-1]
        div[:, :, :1] += gx[:, :, -1:]
        div -= gx
        spectrum = scipy.fft.rfft2(div, workers=-1)
        spectrum *= np.float32(beta)
        spectrum += numer
        spectrum *= 1 / (data + np.float32(beta) * grad2)
        beta *= 2
    est = scipy.fft.irfft2(spectrum, s=(fh, fw), workers=-1)
    return est[:, reach : reach + box[0].stop - box[0].start, reach : reach + box[1].stop - box[1].start].transpose(1, 2, 0)


def deconvolve_aif(
    left: np.ndarray,
    right: np.ndarray,
    coc: np.ndarray,
    cocs: np.ndarray,
    kernels_left: np.ndarray,
    kernels_right: np.ndarray,
    *,
    where: np.ndarray | None = None,
    hqs_steps: int = HQS_STEPS,
    progress: Progress | None = None,
) -> np.ndarray:
    """Spatially varying deconvolution of the two views together, blended by the per-pixel bank weights
    (``where``: only these pixels; the others are left 0).

    Per bank kernel, over the clusters of pixels that use it (each box grown by the kernel's reach):
    first the MAP image under a Gaussian gradient prior,
    ``(conj(K_L) B_L + conj(K_R) B_R) / (|K_L|^2 + |K_R|^2 + 2 lam |grad|^2)`` (the half-aperture
    kernels have fewer spectral zeros than their average, so the pair recovers detail the ordinary
    photo has lost: +1 dB on the tuning scenes against deconvolving ``(B_L + B_R) / 2``); then a few
    half-quadratic steps (``hqs_steps``) under a sparse (L1) gradient prior, which keeps edges and flat areas where
    the Gaussian prior leaves ringing and smear (+0.21 dB AIF on the tuning scenes). Clamped to the
    local range of the photo against ringing at depth edges.
    """
    views = []
    for v in (left, right):
        lin = srgb_to_linear(v)
        views.append((lin if lin.ndim == 3 else lin[..., None]).astype(np.float32))
    combined = (views[0] + views[1]) / 2
    h, w, ch = combined.shape
    sigma = max(_noise_sigma(linear_to_srgb(combined)), 1e-3)
    lam = float(np.clip(AIF_PRIOR * sigma**2, LAMBDA_MIN, LAMBDA_MAX))
    lo, hi, t = bin_weights(coc, cocs)
    takes_lo, takes_hi = t < 1, t > 0  # a pixel's weight on its lower / upper bin is not nil
    if where is not None:
        takes_lo, takes_hi = takes_lo & where, takes_hi & where
    used = np.unique(np.concatenate([lo[takes_lo].ravel(), hi[takes_hi].ravel()]))
    if not len(used):
        return np.zeros(left.shape, np.float32)
    support = {int(k): max(trim_kernel(kernels_left[k], 1e-4).shape[0], trim_kernel(kernels_right[k], 1e-4).shape[0]) // 2 for k in used}
    pad = max(support.values()) + DECONV_MARGIN
    padded = list(pad_dp_pair(views[0], views[1], (pad, pad), (pad, pad)))
    centre = kernels_left.shape[1] // 2
    out = np.zeros((h, w, ch), np.float32)
    for n, k in enumerate(used):
        s = support[int(k)]
        taps = (int(k), slice(centre - s, centre + s + 1), slice(centre - s, centre + s + 1))
        for box, pixels in _regions((lo == k) & takes_lo | (hi == k) & takes_hi):
            weight = np.where(pixels & (lo[box] == k), 1 - t[box], 0) + np.where(pixels & (hi[box] == k), t[box], 0)
            est = _deconvolve_box(padded, pad, box, s + DECONV_MARGIN, kernels_left[taps], kernels_right[taps], lam, hqs_steps)
            # de-ringing: a sharp pixel cannot leave the range of the blurred values its kernel covers
            r = max(1, int(np.ceil(abs(float(cocs[k])))))
            grown, inner = grow_box(box, r, (h, w))
            local = combined[grown]
            est = np.clip(est, _local_extreme(local, r, np.minimum)[inner], _local_extreme(local, r, np.maximum)[inner])
            out[box] += weight[..., None] * est
        if progress is not None:
            progress(0.7 + 0.3 * (n + 1) / len(used), "deconvolving")
    aif = linear_to_srgb(np.clip(out, 0, 1))
    return aif if left.ndim == 3 else aif[..., 0]


@register_backend("classical")
def classical_backend(
    pair: DPPair,
    *,
    psf: PSFModel | None = None,
    max_coc: float = 24.0,
    work_size: int = 720,
    progress: Progress | None = None,
    tile: int | None = None,
) -> Analysis:
    """Training-free analysis (see the module docstring). ``tile`` is accepted for CLI parity; the
    classical backend works on the whole image at a reduced scale and needs no tiling."""
    psf = psf or DPPSF()
    timings = {}
    t = time.perf_counter()
    details: dict = {}
    coc, confidence = estimate_disparity(pair.left, pair.right, psf, max_coc=max_coc, work_size=work_size, progress=progress, details=details)
    timings["disparity_s"] = time.perf_counter() - t
    J = psf.coc_per_disparity
    t = time.perf_counter()
    # each pixel is deblurred by the blur it shows (a nearer object's spill onto the wall around
    # it included), which the backdrop plane leaves out (Analysis.blur_coc)
    blur = details.pop("blur_coc", None)
    blur_map = coc if blur is None else blur
    # twice the measured range: refocusing elsewhere can need up to twice the captured blur
    cocs, bank_l, bank_r = kernel_bank(psf, min(2 * max(float(np.abs(coc).max()), float(np.abs(blur_map).max())) + 2, 2 * max_coc))
    kernel_index = nearest_bin(blur_map, cocs).astype(np.uint16)
    aif = deconvolve_aif(pair.left, pair.right, blur_map, cocs, bank_l, bank_r, progress=progress)
    timings["aif_s"] = time.perf_counter() - t
    return Analysis(
        disparity=(coc / J).astype(np.float32),
        confidence=confidence,
        coc=coc,
        kernel_index=kernel_index,
        kernel_cocs=cocs,
        kernels_left=bank_l,
        kernels_right=bank_r,
        aif=aif.astype(np.float32),
        coc_per_disparity=J,
        backend="classical",
        meta={"timings": timings, "options": {"max_coc": max_coc, "work_size": work_size, "psf": repr(psf)}, **details},
        blur_coc=blur,
    )
