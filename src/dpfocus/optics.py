"""Dual-pixel image formation: PSFs, disparity <-> CoC, and a layered DP renderer.

Conventions (see DESIGN.md):

* A signed CoC radius ``r`` (pixels) is positive behind the focal plane (farther than focus) and
  negative in front of it. Larger signed CoC therefore means farther away.
* For ``r > 0`` the right-view kernel ``K_R`` holds the right half of the aperture disk, so the right
  view is displaced by ``+d`` with ``d = centroid_x(K_R) - centroid_x(K_L) > 0``:
  ``B_R(x) ~= B_L(x - d)``. A negative radius swaps the halves.
* ``K_L = flip_x(K_R)`` and each kernel sums to one, so the ordinary photo is ``(B_L + B_R) / 2``.
* Blur happens in linear light; images are stored display-encoded (sRGB transfer curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.fft

__all__ = [
    "foreground_spill",
    "srgb_to_linear",
    "linear_to_srgb",
    "PSFModel",
    "DPPSF",
    "CalibratedPSF",
    "kernel_centroid_x",
    "coc_bin_centres",
    "bin_position",
    "bin_weights",
    "Layer",
    "render_layers",
    "fft_convolve",
    "convolve_stack",
    "trim_kernel",
    "nearest_bin",
    "bounding_box",
    "flatten_backdrop",
    "BackdropPlane",
    "grow_box",
    "pull_push_fill",
    "pad_dp_pair",
    "range_smooth",
    "smooth_surfaces",
    "BANK_STEP",
    "BANK_RELATIVE_STEP",
]


# --------------------------------------------------------------------------- colour


def _pow(x: np.ndarray, p: float) -> np.ndarray:
    import cv2  # SIMD power: about twice numpy's speed on float32 frames

    return cv2.pow(np.ascontiguousarray(x), p).reshape(x.shape)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Display-encoded sRGB values in [0, 1] to linear light (float32)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x * np.float32(1 / 12.92), _pow((x + np.float32(0.055)) * np.float32(1 / 1.055), 2.4)).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] to display-encoded sRGB values (float32)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * np.float32(12.92), np.float32(1.055) * _pow(x, 1 / 2.4) - np.float32(0.055)).astype(np.float32)


# --------------------------------------------------------------------------- PSFs


def kernel_centroid_x(kernel: np.ndarray) -> float:
    """Horizontal centroid of a kernel, in pixels relative to its centre column."""
    k = np.asarray(kernel, dtype=np.float64)
    xs = np.arange(k.shape[1]) - (k.shape[1] - 1) / 2
    return float((k.sum(axis=0) * xs).sum() / k.sum())


class PSFModel:
    """Interface shared by parametric and calibrated DP PSFs.

    Subclasses implement :meth:`kernels`; the disparity a kernel pair produces and the
    disparity-to-CoC factor ``J`` are derived from the kernels themselves.
    """

    #: Radii used to fit ``J`` (pixels); small radii are dominated by pixel sampling.
    fit_radii: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0)

    def kernels(self, coc: float) -> tuple[np.ndarray, np.ndarray]:
        """Left and right kernels (odd square, float32, each summing to 1) for a signed CoC."""
        raise NotImplementedError

    def combined_kernel(self, coc: float) -> np.ndarray:
        """Kernel of the ordinary photo ``(B_L + B_R) / 2``."""
        kl, kr = self.kernels(coc)
        return ((kl + kr) / 2).astype(np.float32)

    def disparity(self, coc: float) -> float:
        """Disparity (centroid separation, px) the kernel pair of this CoC produces."""
        kl, kr = self.kernels(coc)
        return kernel_centroid_x(kr) - kernel_centroid_x(kl)

    @property
    def coc_per_disparity(self) -> float:
        """``J`` in ``C = J * D``: least-squares slope of CoC against the model's disparity."""
        cached = getattr(self, "_J", None)
        if cached is None:
            radii = np.array([r for r in self.fit_radii if r <= self.max_coc], dtype=np.float64)
            disp = np.array([self.disparity(r) for r in radii])
            cached = float((radii * disp).sum() / (disp * disp).sum())
            object.__setattr__(self, "_J", cached)
        return cached

    @property
    def max_coc(self) -> float:
        return math.inf


def _tent_splat(y: np.ndarray, x: np.ndarray, mass: np.ndarray, size: int) -> np.ndarray:
    """Accumulate point masses at (y, x) (pixel-centre coordinates, within [-1, size]) into a grid.

    The grid is ``size`` x ``size``; masses are shared between the four nearest pixel centres with
    bilinear weights, which keeps the centroid of every sample exact.
    """
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = y - y0
    fx = x - x0
    grid = np.zeros(size * size)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = y0 + dy, x0 + dx
            keep = (yi >= 0) & (yi < size) & (xi >= 0) & (xi < size)
            grid += np.bincount((yi * size + xi)[keep], (mass * wy * wx)[keep], grid.size)
    return grid.reshape(size, size)


@lru_cache(maxsize=2048)
def _parametric_kernels(
    coc_q: float,
    split_softness: float,
    butterworth_order: float,
    rim: float,
    falloff: float,
    oversample: int,
    blades: int = 0,
    split_offset: float = 0.0,
    cat_eye: float = 0.0,
    cat_eye_angle: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    r = abs(coc_q)
    reach = r * (1.0 + (0.25 if math.isfinite(butterworth_order) else 0.0)) + 1.0
    half = int(math.ceil(reach))
    size = 2 * half + 1  # sub-samples cover this square; the splat grid is one pixel wider per side
    oversample = min(oversample, max(2, int(math.ceil(32 / max(r, 1e-6)))))  # >= 64 samples per diameter
    n = size * oversample
    # sub-sample coordinates relative to the kernel centre (pixel units)
    s = (np.arange(n) + 0.5) / oversample - size / 2
    yy, xx = np.meshgrid(s, s, indexing="ij")
    if r < 1e-6:
        k = np.zeros((1, 1), np.float32)
        k[0, 0] = 1.0
        return k, k.copy()
    rho = np.sqrt(xx * xx + yy * yy) / r
    if blades >= 3:  # a polygonal stop: the radius of a regular n-gon with a flat side at the top
        sector = 2 * math.pi / blades
        theta = np.mod(np.arctan2(yy, xx) + math.pi / 2 + sector / 2, sector) - sector / 2
        rho = rho * np.cos(theta) / math.cos(math.pi / blades)
    if math.isfinite(butterworth_order):
        aperture = 1.0 / (1.0 + rho ** (2 * butterworth_order))
    else:
        aperture = (rho <= 1.0).astype(np.float64)
    if rim:
        aperture = aperture * (1.0 + rim * np.clip(rho, 0, 1) ** 4)
    if falloff:
        aperture = aperture * np.clip(1.0 - falloff * rho**2, 0.0, None)
    if cat_eye:  # off-axis vignetting: the lens barrel's rim cuts the disk into a lemon
        ex, ey = math.cos(cat_eye_angle), math.sin(cat_eye_angle)
        aperture = aperture * (np.hypot(xx / r - cat_eye * ex, yy / r - cat_eye * ey) <= 1.0)
    width = max(split_softness * r, 1e-3)
    right_weight = 0.5 * (1.0 + np.tanh((xx - split_offset * r) / width))  # right half of the aperture
    mass = aperture * right_weight
    # Splat every sub-sample onto the pixel grid with bilinear (tent) weights: unlike box-binning,
    # this keeps the kernel's centroid exact, so sub-pixel radii still produce sub-pixel disparity.
    kr = _tent_splat(yy + half + 1, xx + half + 1, mass, size + 2)
    if kr.sum() <= 0:  # radius below the sub-sample spacing
        k = np.zeros((1, 1), np.float32)
        k[0, 0] = 1.0
        return k, k.copy()
    kr = (kr / kr.sum()).astype(np.float32)
    if blades or split_offset or cat_eye:  # the halves are no mirror images: each from its own mass
        kl = _tent_splat(yy + half + 1, xx + half + 1, aperture * (1.0 - right_weight), size + 2)
        kl = (kl / max(kl.sum(), 1e-12)).astype(np.float32)
        if coc_q < 0:  # in front of focus the aperture's image is turned by 180 degrees
            kl, kr = np.ascontiguousarray(kl[::-1, ::-1]), np.ascontiguousarray(kr[::-1, ::-1])
    else:
        kl = kr[:, ::-1].copy()
        if coc_q < 0:  # the same as turning each half by 180 degrees, for this symmetric shape
            kl, kr = kr, kl
    kl.setflags(write=False)
    kr.setflags(write=False)
    return kl, kr


@dataclass(frozen=True)
class DPPSF(PSFModel):
    """Parametric DP PSF: a round aperture split softly into a left and a right half.

    The aperture profile is Butterworth-like, ``1 / (1 + (rho / r) ** (2 n))`` (``n = inf`` gives a
    hard disk), optionally with a brighter rim and a radial fall-off; the split between the two
    photodiodes is a ``tanh`` ramp of width ``split_softness * r`` (as in the RDPD simulator and
    Punnappurath's translating-disk model). Kernels are anti-aliased by ``oversample`` x
    ``oversample`` supersampling and cached per radius (quantised to 1/64 px).
    """

    split_softness: float = 0.15
    butterworth_order: float = 6.0
    rim: float = 0.0
    falloff: float = 0.0
    oversample: int = 8
    #: what real lenses add (the training data's variety; 0 keeps the symmetric round model): a
    #: polygonal stop of this many blades (>= 3), the photodiodes' split off the centre by this
    #: fraction of the radius (unequal halves: K_L is no mirror of K_R), and off-axis vignetting
    #: (the disk cut by a second one whose centre lies ``cat_eye`` radii away at ``cat_eye_angle``)
    blades: int = 0
    split_offset: float = 0.0
    cat_eye: float = 0.0
    cat_eye_angle: float = 0.0
    _J: float | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.split_softness < 0:
            raise ValueError("split_softness must be >= 0")
        if self.butterworth_order <= 0:
            raise ValueError("butterworth_order must be > 0 (use math.inf for a hard disk)")
        if not 0 <= self.falloff <= 1:
            raise ValueError("falloff must lie in [0, 1]")
        if self.oversample < 1:
            raise ValueError("oversample must be >= 1")
        if self.blades != 0 and not 3 <= self.blades <= 16:
            raise ValueError("blades must be 0 (round) or 3..16")
        if not -0.5 <= self.split_offset <= 0.5:
            raise ValueError("split_offset must lie in [-0.5, 0.5] (a fraction of the radius)")
        if not 0 <= self.cat_eye <= 1:
            raise ValueError("cat_eye must lie in [0, 1] (0 = no vignetting)")

    def kernels(self, coc: float) -> tuple[np.ndarray, np.ndarray]:
        coc_q = round(float(coc) * 64) / 64
        return _parametric_kernels(
            coc_q,
            float(self.split_softness),
            float(self.butterworth_order),
            float(self.rim),
            float(self.falloff),
            int(self.oversample),
            int(self.blades),
            float(self.split_offset),
            float(self.cat_eye),
            float(self.cat_eye_angle),
        )


#: a calibrated bank with no entry this close to CoC 0 (px) gets a point kernel there; for the
#: network's learned bank (nothing between -2.6 and +5.7 px) +1.6 dB refocus PSNR on held-out scenes
IN_FOCUS_COC = 0.25


def _pad_to(k: np.ndarray, size: int) -> np.ndarray:
    p = (size - k.shape[0]) // 2
    return np.pad(k, p) if p > 0 else k


class CalibratedPSF(PSFModel):
    """A user-supplied bank of measured left/right kernels at known signed CoC radii.

    Kernels between calibrated radii are linearly interpolated (after zero-padding to a common
    size); radii outside the bank are clamped to its ends. A bank with only non-negative radii is
    mirrored to negative radii by swapping the halves, as the DP model prescribes. A bank with no
    entry within ``IN_FOCUS_COC`` of 0 gets a point kernel there: every lens images its focal plane
    as a point, and without one the focal plane would be blurred by its neighbours' mix.

    Parameters
    ----------
    cocs : sequence of float
        Signed CoC radius of each calibrated pair (pixels), strictly increasing once sorted.
    left, right : sequence of 2-D arrays
        Odd, square, non-negative kernels; each is normalised to sum to one.
    """

    def __init__(
        self,
        cocs: Sequence[float],
        left: Sequence[np.ndarray],
        right: Sequence[np.ndarray],
    ) -> None:
        if not (len(cocs) == len(left) == len(right)) or len(cocs) == 0:
            raise ValueError("CalibratedPSF needs the same, non-zero number of radii, left and right kernels")
        entries = []
        for c, kl, kr in zip(cocs, left, right):
            kl = np.asarray(kl, np.float64)
            kr = np.asarray(kr, np.float64)
            for name, k in (("left", kl), ("right", kr)):
                if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
                    raise ValueError(f"calibrated {name} kernel for CoC {c} must be odd and square, got {k.shape}")
                if not np.all(np.isfinite(k)) or k.min() < 0 or k.sum() <= 0:
                    raise ValueError(f"calibrated {name} kernel for CoC {c} must be finite, non-negative, non-zero")
            entries.append((float(c), kl / kl.sum(), kr / kr.sum()))
        if all(c >= 0 for c, _, _ in entries):
            entries += [(-c, kr, kl) for c, kl, kr in entries if c > 0]
        if not any(abs(c) < IN_FOCUS_COC for c, _, _ in entries):
            point = np.ones((1, 1))
            entries.append((0.0, point, point))
        entries.sort(key=lambda e: e[0])
        radii = [e[0] for e in entries]
        if len(set(radii)) != len(radii):
            raise ValueError("calibrated CoC radii must be distinct")
        size = max(max(e[1].shape[0], e[2].shape[0]) for e in entries)
        self._cocs = np.array(radii)
        self._left = np.stack([_pad_to(e[1], size) for e in entries]).astype(np.float32)
        self._right = np.stack([_pad_to(e[2], size) for e in entries]).astype(np.float32)
        # half-size of each entry's support: returned kernels are cropped to it (a bank stored
        # padded to its largest kernel would otherwise make every convolution as large)
        mass = self._left + self._right
        centre = size // 2
        self._half = np.array(
            [max((np.abs(np.argwhere(m > 1e-7 * m.max()) - centre).max() if m.max() > 0 else 0), 0) for m in mass]
        )
        self._J = None

    @property
    def max_coc(self) -> float:
        return float(np.abs(self._cocs).max())

    @property
    def fit_radii(self) -> tuple[float, ...]:  # type: ignore[override]
        pos = self._cocs[self._cocs > 0.5]
        return tuple(pos.tolist()) if len(pos) else (float(np.abs(self._cocs).max()),)

    def kernels(self, coc: float) -> tuple[np.ndarray, np.ndarray]:
        c = float(np.clip(coc, self._cocs[0], self._cocs[-1]))
        i = int(np.searchsorted(self._cocs, c))
        centre = self._left.shape[1] // 2
        if i == 0 or self._cocs[i] == c:
            crop = slice(centre - self._half[i], centre + self._half[i] + 1)
            return self._left[i][crop, crop], self._right[i][crop, crop]
        half = max(self._half[i - 1], self._half[i])
        crop = slice(centre - half, centre + half + 1)
        t = (c - self._cocs[i - 1]) / (self._cocs[i] - self._cocs[i - 1])
        kl = (1 - t) * self._left[i - 1][crop, crop] + t * self._left[i][crop, crop]
        kr = (1 - t) * self._right[i - 1][crop, crop] + t * self._right[i][crop, crop]
        return kl.astype(np.float32), kr.astype(np.float32)


# --------------------------------------------------------------------------- rendering


#: default kernel-bank spacing: BANK_STEP px near focus, BANK_RELATIVE_STEP of the radius further out
BANK_STEP = 1.0
BANK_RELATIVE_STEP = 0.12


def coc_bin_centres(max_abs_coc: float, step: float = 0.5, relative_step: float = 0.07) -> np.ndarray:
    """Symmetric grid of signed CoC values, fine near focus and geometric further out.

    The spacing is ``max(step, relative_step * |r|)``: blur differences below that are invisible,
    and the number of bins (each costing one blur) stays small for large defocus.
    """
    pos = [0.0]
    while pos[-1] < max_abs_coc:
        pos.append(pos[-1] + max(step, relative_step * pos[-1]))
    pos_arr = np.array(pos[1:])
    return np.concatenate([-pos_arr[::-1], [0.0], pos_arr]).astype(np.float32)


#: kernels up to this width are applied directly (OpenCV); wider ones through the FFT, which is
#: faster from about 15 px on this machine's two cores
DIRECT_MAX_WIDTH = 13


def trim_kernel(kernel: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """A centred odd kernel cropped to the centred square holding every tap above ``tolerance`` times
    its peak (a bank pads all its kernels to the largest one's size)."""
    c = kernel.shape[0] // 2
    ys, xs = np.nonzero(kernel > kernel.max() * tolerance)
    r = int(max(np.abs(ys - c).max(), np.abs(xs - c).max())) if ys.size else 0
    return kernel[c - r : c + r + 1, c - r : c + r + 1]


def convolve_stack(images: np.ndarray, kernels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """:func:`fft_convolve` (zero borders, ``C x H x W`` in, one result per kernel), with kernels
    trimmed to their support and small ones applied directly."""
    import cv2

    kernels = [trim_kernel(np.asarray(k, np.float32)) for k in kernels]
    if max(k.shape[0] for k in kernels) > DIRECT_MAX_WIDTH or not 1 <= images.shape[0] <= 4:
        return fft_convolve(images, kernels)
    hwc = np.ascontiguousarray(np.moveaxis(np.asarray(images, np.float32), 0, -1))
    # filter2D correlates: flip the kernel to convolve
    return [np.moveaxis(cv2.filter2D(hwc, -1, np.ascontiguousarray(k[::-1, ::-1]), borderType=cv2.BORDER_CONSTANT).reshape(hwc.shape), -1, 0) for k in kernels]


def fft_convolve(images: np.ndarray, kernels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """'Same'-size convolution of a stack ``C x H x W`` with several kernels, sharing one forward FFT.

    Borders are treated as zero (callers pass premultiplied colour and alpha, so this is a
    coverage-correct border). Returns one ``C x H x W`` float32 array per kernel.
    """
    images = np.asarray(images, np.float32)
    h, w = images.shape[-2:]
    kmax = max(k.shape[0] for k in kernels)
    if kmax == 1:
        return [images * float(k[0, 0]) for k in kernels]
    fh = scipy.fft.next_fast_len(h + kmax - 1, real=True)
    fw = scipy.fft.next_fast_len(w + kmax - 1, real=True)
    spec = scipy.fft.rfft2(images, s=(fh, fw), workers=-1)
    out = []
    for k in kernels:
        kf = scipy.fft.rfft2(k.astype(np.float32), s=(fh, fw), workers=-1)
        full = scipy.fft.irfft2(spec * kf, s=(fh, fw), workers=-1)
        o = k.shape[0] // 2
        out.append(np.ascontiguousarray(full[..., o : o + h, o : o + w], dtype=np.float32))
    return out


@dataclass
class Layer:
    """One scene layer in linear light.

    ``colour`` is ``H x W x C`` and valid wherever the layer might be seen, including where it is
    hidden behind nearer layers (a generator knows the full texture). ``alpha`` is coverage in
    [0, 1]. ``coc`` is the signed CoC, a scalar (fronto-parallel layer) or ``H x W`` (a slanted or
    curved surface).
    """

    colour: np.ndarray
    alpha: np.ndarray
    coc: float | np.ndarray


def nearest_bin(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of the sorted array ``bins`` for every value."""
    values = np.asarray(values, np.float32)
    hi = np.clip(np.searchsorted(bins, values), 1, len(bins) - 1)
    lo = hi - 1
    return np.where(values - bins[lo] <= bins[hi] - values, lo, hi) if len(bins) > 1 else np.zeros_like(values, np.int64)


def bin_position(values: np.ndarray | float, bins: np.ndarray) -> np.ndarray:
    """Fractional index of every value in the sorted array ``bins`` (clipped to its ends): the
    value lies ``t = pos - floor(pos)`` of the way from bin ``floor(pos)`` to the next."""
    values = np.asarray(values, np.float32)
    if len(bins) == 1:
        return np.zeros(values.shape, np.float32)
    c = np.clip(values, bins[0], bins[-1])
    hi = np.clip(np.searchsorted(bins, c), 1, len(bins) - 1)
    lo = hi - 1
    return (lo + (c - bins[lo]) / (bins[hi] - bins[lo])).astype(np.float32)


def bin_weights(values: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per value: lower bin index, upper index (always a bin of at least two), and the weight of
    the upper one, linear in between (clipped to the ends)."""
    pos = bin_position(values, bins)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(bins) - 2)
    return lo, lo + 1, (pos - lo).astype(np.float32)


def bounding_box(mask: np.ndarray, pad: int = 0, shape: tuple[int, int] | None = None) -> tuple[slice, slice] | None:
    """Slices of the rows/columns where ``mask`` is true, grown by ``pad`` within ``shape``; None if empty."""
    shape = shape or mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return grow_box((slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)), pad, shape)[0]


def grow_box(box: tuple[slice, slice], pad: int, shape: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """``box`` grown by ``pad`` within ``shape``, and where ``box`` lies inside the grown one (for
    filtering a region with the context its filter reaches, then keeping the region)."""
    ys, xs = box
    grown = (slice(max(ys.start - pad, 0), min(ys.stop + pad, shape[0])), slice(max(xs.start - pad, 0), min(xs.stop + pad, shape[1])))
    inner = (slice(ys.start - grown[0].start, ys.stop - grown[0].start), slice(xs.start - grown[1].start, xs.stop - grown[1].start))
    return grown, inner


def pull_push_fill(values: np.ndarray, weights: np.ndarray, levels: int | None = None) -> np.ndarray:
    """Confidence-weighted pull-push: where ``weights`` is 0, values come from the nearest weighted
    ones, coarse to fine; where it is 1 (or above 0.25), they stay. ``values`` is ``H x W`` or
    ``H x W x C``, ``weights`` ``H x W`` in [0, 1]. ``levels`` limits how coarse the pull goes (how
    far values travel); by default down to one pixel, so every hole is filled."""
    import cv2

    wgt = weights.astype(np.float32)
    vals = np.asarray(values, np.float32)
    w3 = wgt[..., None] if vals.ndim == 3 else wgt
    num, den = [vals * w3], [wgt]
    while levels is None or len(den) <= levels:
        h, w = den[-1].shape
        if max(h, w) <= 1:
            break
        size = (max(w // 2, 1), max(h // 2, 1))
        num.append(cv2.resize(num[-1], size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], *vals.shape[2:]))
        den.append(cv2.resize(den[-1], size, interpolation=cv2.INTER_AREA))

    def ratio(n: np.ndarray, d: np.ndarray) -> np.ndarray:
        d = np.maximum(d, 1e-12)
        return n / (d[..., None] if n.ndim == 3 else d)

    est = ratio(num[-1], den[-1])
    empty = den[-1] <= 1e-12
    if empty.any():  # cells nothing reached even at the coarsest level: the weighted mean of all
        total = float(wgt.sum())
        mean = (num[0].reshape(-1, *vals.shape[2:]).sum(0) / total) if total > 0 else np.zeros(vals.shape[2:], np.float32)
        est[empty] = mean
    binary = weights.dtype == bool
    for level, (n, c) in enumerate(zip(reversed(num[:-1]), reversed(den[:-1]))):
        up = cv2.resize(est, (n.shape[1], n.shape[0]), interpolation=cv2.INTER_LINEAR).reshape(n.shape)
        if binary and level == len(num) - 2:  # the full-resolution step: keep or fill, nothing between
            np.copyto(up, vals, where=(weights[..., None] if vals.ndim == 3 else weights))
            return up.astype(np.float32, copy=False)
        blend = np.clip(c * 4, 0, 1)
        blend = blend[..., None] if n.ndim == 3 else blend
        est = blend * ratio(n, c) + (1 - blend) * up
    return est.astype(np.float32)


def pad_dp_pair(left: np.ndarray, right: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad two DP views (``H x W`` or ``H x W x C``) by ``rows = (top, bottom)`` and
    ``cols = (left, right)``. Rows are mirrored (a vertical flip keeps the DP geometry); columns
    take the mirrored *other* view, because mirroring a DP pair swaps the roles of its views: a
    plain reflection shows the negative disparity beside the border."""
    extra = ((0, 0),) * (left.ndim - 2)
    if any(cols):
        mirrored = [np.pad(v, ((0, 0), cols) + extra, mode="reflect") for v in (left, right)]
        c0, c1 = cols[0], cols[0] + left.shape[1]
        swap = lambda own, other: np.concatenate([other[:, :c0], own[:, c0:c1], other[:, c1:]], 1)  # noqa: E731
        left, right = swap(mirrored[0], mirrored[1]), swap(mirrored[1], mirrored[0])
    if any(rows):
        left, right = (np.pad(v, (rows, (0, 0)) + extra, mode="reflect") for v in (left, right))
    return left, right


#: range_smooth splats and slices this many pixels at a time (bounds its temporaries)
RANGE_SMOOTH_BAND_PIXELS = 1 << 20


def range_smooth(values: np.ndarray, weights: np.ndarray, sigma_space: float, sigma_range: float) -> np.ndarray:
    """Weighted edge-preserving smoothing of a single-channel map by its own values: each pixel
    becomes the weighted mean of the pixels within about ``sigma_space`` px whose values lie within
    about ``sigma_range`` of its own (a bilateral grid: splat, blur, slice). Jumps larger than a few
    ``sigma_range`` survive, and so do linear ramps (the neighbourhood is symmetric). Rows are
    splatted and sliced in bands, so the temporaries stay bounded whatever the image size."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    vals = np.asarray(values, np.float32)
    wgt = np.asarray(weights, np.float32)
    h, w = vals.shape
    cell = max(1, int(sigma_space / 6))
    lo = float(vals.min()) - 2 * sigma_range
    gh, gw = h // cell + 2, w // cell + 2
    gz = int(np.ceil((float(vals.max()) + 2 * sigma_range - lo) / sigma_range)) + 2
    band_rows = max(1, RANGE_SMOOTH_BAND_PIXELS // w)
    bands = [slice(r, min(r + band_rows, h)) for r in range(0, h, band_rows)]
    col = np.arange(w, dtype=np.float32) / cell
    col_cell = np.rint(col).astype(np.int64)

    def band_coords(rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        row = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] / cell
        z = (vals[rows] - lo) / sigma_range
        return np.broadcast_to(row, z.shape), z, np.rint(row).astype(np.int64)

    num = np.zeros(gh * gw * gz)
    den = np.zeros(gh * gw * gz)
    for rows in bands:
        _, z, row_cell = band_coords(rows)
        z0 = np.floor(z).astype(np.int64)
        frac = z - z0
        base = ((row_cell * gw + col_cell) * gz + z0).ravel()
        for dz, share in ((0, 1 - frac), (1, frac)):
            cell_index = base + dz
            sw = (wgt[rows] * share).ravel()
            num += np.bincount(cell_index, sw * vals[rows].ravel(), minlength=num.size)
            den += np.bincount(cell_index, sw, minlength=den.size)
    sigmas = (sigma_space / cell, sigma_space / cell, 1.0)
    num = gaussian_filter(num.reshape(gh, gw, gz), sigmas, mode="constant")
    den = gaussian_filter(den.reshape(gh, gw, gz), sigmas, mode="constant")
    out = np.empty((h, w), np.float32)
    for rows in bands:
        row, z, _ = band_coords(rows)
        coords = np.stack([row.ravel(), np.broadcast_to(col, z.shape).ravel(), z.ravel()])
        n = map_coordinates(num, coords, order=1, mode="nearest")
        d = map_coordinates(den, coords, order=1, mode="nearest")
        out[rows] = np.where(d > 1e-12, n / np.maximum(d, 1e-12), vals[rows].ravel()).reshape(z.shape)
    return out


#: surfaces are smoothed over about this fraction of the image's longer side
SURFACE_SMOOTH_FRACTION = 1 / 6


def smooth_surfaces(coc: np.ndarray, confidence: np.ndarray, sigma_range: float, passes: int = 1) -> np.ndarray:
    """A CoC map averaged, confidence-weighted, over each surface: pixels within about a sixth of
    the image's longer side whose CoC lies within about ``sigma_range`` px of each other's. This
    removes matching noise across a surface (a disparity estimator's streaks and texture
    artefacts) but keeps depth jumps and ramps. Each further pass starts from the last one's
    values, so pixels the first pass brought together average again."""
    sigma_space = SURFACE_SMOOTH_FRACTION * max(coc.shape)
    weights = np.asarray(confidence, np.float32) + 1e-3
    for _ in range(passes):
        coc = range_smooth(coc, weights, sigma_space, sigma_range)
    return coc


#: px of CoC: the spill map's levels (foreground_spill)
SPILL_STEP = 0.5
#: px of CoC: a surface spills only over pixels at least this much farther (a depth edge, not the
#: next stretch of a ramp or a bulge, which a spill would cut into contour bands). Network refocus
#: PSNR on three sets of 12 tuning scenes (500000+, 500012+, 700000+), against 31.73 / 35.03 /
#: 33.42 dB without the spill: 0.25 px 32.27 / 35.67 / 33.94; 1 px 32.29 / 35.66 / 33.90; 2 px
#: 32.22 / 35.60 / 33.76; 3 px 32.05 / 35.41 / 33.59
SPILL_JUMP = 1.0
#: the spill map is worked out at most at this longer side
SPILL_WORK_SIZE = 720


def foreground_spill(coc: np.ndarray) -> np.ndarray:
    """The CoC map as the photo's blur shows it: every pixel within a nearer surface's blur radius
    of that surface takes its CoC (the nearest such surface, nearer = smaller signed CoC, and only
    across a depth step of ``SPILL_JUMP`` or more). A map with sharp depth edges says "background"
    where the photo holds the blurred foreground's spill; refocusing on the foreground must
    re-render those pixels with it, not blur the spill further. Levels are ``SPILL_STEP`` px apart;
    a surface keeps its own values."""
    import cv2

    coc = np.asarray(coc, np.float32)
    h, w = coc.shape
    factor = max(1, int(np.ceil(max(h, w) / SPILL_WORK_SIZE)))
    small = coc if factor == 1 else cv2.resize(coc, (max(w // factor, 1), max(h // factor, 1)), interpolation=cv2.INTER_AREA)
    level = np.full(small.shape, np.inf, np.float32)  # the nearest spilling surface's CoC, per pixel
    lo = np.floor(float(small.min()) / SPILL_STEP) * SPILL_STEP
    for l in np.arange(lo, float(small.max()) + SPILL_STEP, SPILL_STEP, dtype=np.float32):
        radius = abs(float(l)) / factor
        if radius < 1:
            continue
        near = np.abs(small - l) <= SPILL_STEP / 2  # the surfaces at this level, blurred by |l|
        if not near.any():
            continue
        dist = cv2.distanceTransform((~near).astype(np.uint8), cv2.DIST_L2, 5)
        level = np.where((dist <= radius) & (small > l + SPILL_JUMP) & (level > l), l, level)
    if factor > 1:
        level = cv2.resize(level, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.where(level < coc - SPILL_JUMP, level, coc).astype(np.float32)


#: the backdrop plane (flatten_backdrop), measured on 32 tuning scenes (seeds 700000+). A surface
#: is taken as the backdrop when pixels within BACKDROP_BAND px of the map's most common CoC cover
#: this fraction of the image or more
BACKDROP_MIN_FRACTION = 0.15
#: px of CoC (work scale): the band around the most common value that seeds the surface; pixels
#: within half of it of the fitted plane are replaced (tuning Spearman 0.848; 1.5 px 0.845, 2 px
#: 0.832: nearer objects start to join the wall)
BACKDROP_BAND = 1.0
#: px of CoC across the frame: a steeper surface (a ground plane) is a ramp the map already ranks
#: and is left alone
BACKDROP_MAX_TILT = 1.5
#: fractions of the longer side: the fit keeps this far inside the seeded surface (the halo a
#: nearer object's window costs cast), and the band around the surface whose pixels are given to
#: it or kept by the colour nearest theirs within a window of this half-width (no band: 0.830;
#: 8 px inside: 0.841)
BACKDROP_INSET = 15 / 576
BACKDROP_COLOUR_REACH = 20 / 576
#: px: a band pixel joins the surface by the majority of the decisions in this square around it
#: (5: the same tuning Spearman, 0.848, without the speckle along the objects' outlines)
BACKDROP_MAJORITY = 5
#: the fit's evidence weights are capped at this percentile of theirs over the fitted pixels
#: (tuning Spearman, classical: uncapped 0.848, 90th 0.858, 75th 0.860, 50th 0.861, 25th 0.838)
BACKDROP_WEIGHT_PERCENTILE = 75
#: the plane is fitted at most at this longer side (work scale)
BACKDROP_WORK_SIZE = 720


@dataclass
class BackdropPlane:
    """The plane ``flatten_backdrop`` put in: ``coc = centre + tilt_x * (x / W - 1/2) + tilt_y * (y / H - 1/2)``
    (px of CoC at the map's own scale) over ``mask``, which covers ``fraction`` of the image."""

    centre: float
    tilt_x: float
    tilt_y: float
    fraction: float
    mask: np.ndarray = field(repr=False)

    def values(self, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        x = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
        y = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
        return (self.centre + self.tilt_x * x[None, :] + self.tilt_y * y[:, None]).astype(np.float32)

    def summary(self, scale: float = 1.0) -> dict:
        """The plane as ``meta["backdrop_plane"]`` records it, its CoC multiplied by ``scale`` (a
        map fitted at a reduced scale reports input px)."""
        return {"centre_coc_px": self.centre * scale, "tilt_x_px": self.tilt_x * scale, "tilt_y_px": self.tilt_y * scale,
                "fraction": self.fraction}


def robust_plane(mask: np.ndarray, values: np.ndarray, weights: np.ndarray, start: Sequence[float], steps: int = 15) -> np.ndarray:
    """``(centre, tilt_x, tilt_y)`` of the plane (coordinates as in ``BackdropPlane``) through
    ``values`` at the ``mask`` pixels: weighted least squares, reweighted ``steps`` times by a
    Cauchy loss at twice the residuals' robust spread, starting from ``start``."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    design = np.stack([np.ones(len(xs)), (xs + 0.5) / w - 0.5, (ys + 0.5) / h - 0.5], 1)
    y = values[mask].astype(np.float64)
    base = weights[mask].astype(np.float64) + 1e-6
    coef = np.asarray(start, np.float64)
    for _ in range(steps):
        res = y - design @ coef
        spread = 1.4826 * float(np.median(np.abs(res))) + 1e-3
        root = np.sqrt(base / (1 + (res / (2 * spread)) ** 2))
        coef, *_ = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)
    return coef


def _backdrop_mask(coc: np.ndarray, evidence: np.ndarray, weights: np.ndarray, image: np.ndarray, colour_reach: float, weight_percentile: float) -> BackdropPlane | None:
    """``flatten_backdrop`` at one scale: the plane and the pixels it replaces, or None."""
    import cv2
    from scipy import ndimage

    h, w = coc.shape
    longer = max(h, w)
    # the map's most common value (0.1 px bins, smoothed) seeds the surface
    lo, hi = float(coc.min()), float(coc.max())
    hist, edges = np.histogram(coc, np.arange(lo - 0.5, hi + 0.6, 0.1))
    mode = float(edges[int(np.argmax(ndimage.gaussian_filter1d(hist.astype(np.float64), 3)))] + 0.05)
    seed = np.abs(coc - mode) < BACKDROP_BAND
    if seed.mean() < BACKDROP_MIN_FRACTION:
        return None
    inside = ndimage.binary_erosion(seed, iterations=max(1, round(BACKDROP_INSET * longer)))
    inside[1::2, :] = False  # every other row and column: the fit needs no more
    inside[:, 1::2] = False
    if inside.sum() < 200:
        return None
    # evidence weights capped at a percentile: a few sharply determined pixels (bright dots on a
    # dark wall, whose costs the dots themselves bias) must not outvote the wall
    capped = np.minimum(weights, np.float32(np.percentile(weights[inside], weight_percentile)))
    coef = robust_plane(inside, evidence, capped, (mode, 0.0, 0.0))
    own = robust_plane(inside, coc, np.ones_like(coc), (mode, 0.0, 0.0), steps=10)
    if abs(coef[1]) + abs(coef[2]) > BACKDROP_MAX_TILT or abs(own[1]) + abs(own[2]) > BACKDROP_MAX_TILT:
        return None
    plane = BackdropPlane(float(coef[0]), float(coef[1]), float(coef[2]), 0.0, np.zeros((h, w), bool))
    off_plane = np.abs(coc - plane.values((h, w)))
    mask = off_plane < BACKDROP_BAND / 2
    # the band around the surface (its halo): each pixel goes with the colour nearest its own
    reach = round(colour_reach * longer)
    near = ndimage.binary_dilation(mask, iterations=reach) if reach > 0 else mask
    others, band = ~near, near & ~mask
    if reach > 0 and others.any() and band.any():
        img = cv2.GaussianBlur(np.asarray(image, np.float32), (0, 0), 1.0)
        img = img[..., None] if img.ndim == 2 else img

        def local_mean(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            share = region.astype(np.float32)
            count = cv2.boxFilter(share, -1, (2 * reach + 1,) * 2, borderType=cv2.BORDER_REFLECT, normalize=True) + 1e-6
            mean = np.stack([cv2.boxFilter(img[..., c] * share, -1, (2 * reach + 1,) * 2, borderType=cv2.BORDER_REFLECT) for c in range(img.shape[2])], -1)
            return mean / count[..., None], count

        own_colour, own_count = local_mean(mask)
        other_colour, other_count = local_mean(others)
        nearer_own = ((img - own_colour) ** 2).sum(-1) < ((img - other_colour) ** 2).sum(-1)
        # with no other surface's colour in reach, a pixel within twice the band joins
        joins = band & (own_count > 1e-3) & np.where(other_count > 1e-3, nearer_own, off_plane < 2 * BACKDROP_BAND)
        if BACKDROP_MAJORITY > 1:  # single pixels of texture decide nothing: the majority around each (the surface's own count as joined) does
            joins = band & (ndimage.median_filter((joins | mask).astype(np.uint8), size=BACKDROP_MAJORITY) > 0)
        mask |= joins
    plane.mask, plane.fraction = mask, float(mask.mean())
    return plane


def flatten_backdrop(
    coc: np.ndarray, evidence: np.ndarray, weights: np.ndarray, image: np.ndarray, keep: float = 0.0,
    colour_reach: float = BACKDROP_COLOUR_REACH, weight_percentile: float = BACKDROP_WEIGHT_PERCENTILE,
) -> tuple[np.ndarray, BackdropPlane | None]:
    """The map with its backdrop (the largest surface at one depth) replaced by a plane.

    A wall that spans a fraction of a pixel of CoC is ranked by matching noise, not by its tilt;
    a plane fitted to the whole wall's evidence has the tilt right (its 100,000 pixels outweigh
    the noise). The surface is seeded by the map's most common value (``BACKDROP_BAND``); the
    plane is fitted robustly to ``evidence`` (per-pixel CoC estimates, weighted by ``weights``)
    away from the surface's border; pixels within half the band of the plane take it, plus ``keep``
    of their own difference from it, and so do the pixels around the surface whose colour is
    nearer the surface's than a nearer object's (the halo), or, with no other surface's colour
    within reach, that lie within twice the band of it (``colour_reach``, a fraction of the
    longer side; 0 = no band). The weights are capped at their ``weight_percentile`` percentile
    over the fitted pixels (100 = no cap). Left alone when the surface covers
    less than ``BACKDROP_MIN_FRACTION`` of the image or is steeper than ``BACKDROP_MAX_TILT`` (a
    ground plane: its ramp already ranks it). Large maps are examined at ``BACKDROP_WORK_SIZE``.
    """
    import cv2

    h, w = coc.shape
    factor = max(1, int(round(max(h, w) / BACKDROP_WORK_SIZE)))
    shrink = (lambda a: a) if factor == 1 else (lambda a: cv2.resize(np.asarray(a, np.float32), (w // factor, h // factor), interpolation=cv2.INTER_AREA))
    plane = _backdrop_mask(shrink(coc) / factor, shrink(evidence) / factor, shrink(weights), shrink(image), colour_reach, weight_percentile)
    if plane is None:
        return coc, None
    if factor > 1:  # back to the map's scale and size
        plane.centre, plane.tilt_x, plane.tilt_y = plane.centre * factor, plane.tilt_x * factor, plane.tilt_y * factor
        plane.mask = cv2.resize(plane.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    flat = plane.values((h, w))
    out = np.where(plane.mask, flat + np.float32(keep) * (coc - flat), coc).astype(np.float32)
    return out, plane


def _blur_reduced(stack: np.ndarray, psf: PSFModel, coc: float, views: Sequence[str], factor: int) -> list[np.ndarray]:
    """Blur a C x H x W stack with the view kernels of ``coc`` at 1/factor resolution."""
    import cv2

    c, h, w = stack.shape
    hs, ws = max(1, h // factor), max(1, w // factor)
    small = np.stack([cv2.resize(p, (ws, hs), interpolation=cv2.INTER_AREA) for p in stack])
    kl, kr = psf.kernels(coc / factor)
    kernel_of = {"left": kl, "right": kr, "combined": (kl + kr) / 2}
    out = []
    for blurred in convolve_stack(small, [kernel_of[v] for v in views]):
        out.append(np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in blurred]))
    return out


def _sharp_visibility(layers: Sequence[Layer], positions: list[np.ndarray]) -> list[np.ndarray | None]:
    """Per layer, the fraction of it that no nearer layer covers (by per-pixel depth), or None
    where no other layer overlaps it."""
    out: list[np.ndarray | None] = []
    for i, (layer, pos) in enumerate(zip(layers, positions)):
        vis = None
        for j, (other, other_pos) in enumerate(zip(layers, positions)):
            if j == i:
                continue
            nearer = np.asarray(other_pos <= pos) if j > i else np.asarray(other_pos < pos)  # ties: the later layer is on top
            hides = np.asarray(other.alpha, np.float32) * nearer
            if not hides.any():
                continue
            vis = (1.0 - hides) if vis is None else vis * (1.0 - hides)
        out.append(None if vis is None else np.broadcast_to(vis, layer.alpha.shape).astype(np.float32))
    return out


def render_layers(
    layers: Sequence[Layer],
    psf: PSFModel,
    views: Sequence[str] = ("left", "right"),
    bins: np.ndarray | None = None,
    fast: bool = False,
    fill_hidden: int = 0,
    local: bool = False,
    interpolate: bool = True,
) -> dict[str, np.ndarray]:
    """Render DP views of a layered scene, back to front, with premultiplied alpha, in linear light.

    Every layer pixel lies between two signed-CoC bins and is drawn at both, weighted by where it
    lies between them, so a surface's blur follows its CoC continuously instead of stepping from
    bin to bin (and the picture carries the sub-bin depth a benchmark's ground truth claims). Bins
    are visited from far (largest CoC) to near. At each bin, every layer with pixels there
    contributes the part of the layer that lies *at or nearer than* the next bin out (a cumulative
    mask) and the share ``1 - t`` of the pixels ``t`` of the way out to it, as far as no nearer
    layer hides them, blurred with the bin's kernel and composited with the premultiplied "over"
    operator. Using the cumulative mask rather than
    the bin's own pixels is what keeps a slanted surface free of seams between bins: the surface
    continues under its nearer parts, and those are redrawn on top at their own bins. Foreground
    blur spills over a sharp background, and a sharp background never shows through blurred
    foreground, because coverage itself is blurred.

    Parameters
    ----------
    layers : sequence of Layer
        Same-shape layers; their order does not matter (depth comes from the CoC).
    psf : PSFModel
        Kernel source.
    views : sequence of {"left", "right", "combined"}
        Which images to render; "combined" uses ``(K_L + K_R) / 2``.
    bins : array, optional
        Signed CoC bin centres; by default :func:`coc_bin_centres` over the scene's range.
    fast : bool
        Blur bins with radius >= 6 px at reduced resolution (factor ``radius // 3``, at most 4):
        their result is smooth, so this costs little accuracy and saves most of the time. Implies
        ``local``.
    local : bool
        At each bin, a per-pixel-CoC layer's cumulative cover (its pixels at or nearer than the next bin out)
        is taken only near the bin's own pixels (their box grown by twice the kernel radius): nearer
        content further away is redrawn by its own bins. Blurs stay exact; the picture differs from
        the full cover by 46 dB or less than that (often not at all), well inside what the binning
        itself costs (halving the bin spacing changes a scene by 38-45 dB), for about 25% less time.
    fill_hidden : int
        For a layer that is one image with a per-pixel CoC (an all-in-focus photo), what lies behind
        its much nearer pixels is unknown. With ``fill_hidden = m > 0``, at each bin the colour under
        pixels more than ``m`` bins nearer is filled from the pixels at that bin (pull-push), so a
        foreground that becomes blurred shows background through its soft rim instead of a ghost of
        itself. Pixels within ``m`` bins keep their colour: a slanted surface stays seamless.

    interpolate : bool
        Draw each pixel at the two bins around its CoC (default). False assigns it to the nearest bin
        alone: blur steps from bin to bin, for about 20 % less time.

    Returns
    -------
    dict of view name -> ``H x W x C`` float32 linear image.
    """
    if not layers:
        raise ValueError("render_layers needs at least one layer")
    for v in views:
        if v not in ("left", "right", "combined"):
            raise ValueError(f"unknown view {v!r}; use 'left', 'right' or 'combined'")
    h, w = layers[0].alpha.shape
    max_abs = max(float(np.max(np.abs(layer.coc))) for layer in layers)
    if bins is None:
        bins = coc_bin_centres(max_abs)
    bins = np.sort(np.asarray(bins, np.float32))
    # The scene continues past the frame: pad by the largest kernel radius (mirrored) so the
    # borders are not darkened by coverage that falls off outside the image.
    pad = max(psf.kernels(float(bins[0]))[0].shape[0], psf.kernels(float(bins[-1]))[0].shape[0]) // 2
    hp, wp = h + 2 * pad, w + 2 * pad
    if interpolate:
        positions = [bin_position(layer.coc, bins) for layer in layers]
        visibility = _sharp_visibility(layers, positions)
    else:
        positions = [nearest_bin(layer.coc, bins).astype(np.float32) for layer in layers]
        visibility = [None] * len(layers)
    prepared = []  # (layer bounding box, colour, alpha, bin position (map or scalar), visibility, bins present)
    for layer, pos, vis in zip(layers, positions, visibility):
        alpha_full = np.asarray(layer.alpha, np.float32)
        found = bounding_box(alpha_full > 0, 0, (h, w))
        if found is None:
            continue
        (y0, y1), (x0, x1) = (found[0].start, found[0].stop), (found[1].start, found[1].stop)
        # mirror-pad only where the layer touches the frame; elsewhere the padded box is a plain slice
        widths = ((pad if y0 == 0 else 0, pad if y1 == h else 0), (pad if x0 == 0 else 0, pad if x1 == w else 0))
        box = (slice(y0 + pad - widths[0][0], y1 + pad + widths[0][1]), slice(x0 + pad - widths[1][0], x1 + pad + widths[1][1]))

        def crop(arr: np.ndarray) -> np.ndarray:
            part = arr[y0:y1, x0:x1]
            return np.pad(part, widths + ((0, 0),) * (part.ndim - 2), mode="symmetric") if pad else part

        alpha = crop(alpha_full)
        colour = crop(np.asarray(layer.colour, np.float32))
        coc = np.asarray(layer.coc, np.float32)
        # each pixel is drawn at the two bins around its CoC, weighted by where it lies between them
        # (a surface between bins gets the interpolated blur, not the nearest bin's)
        pos = pos if coc.ndim == 0 else crop(pos)
        vis = None if vis is None else crop(vis)
        lo = np.floor(pos).astype(np.int64)
        frac = pos - lo
        # bin -> the layer's mean CoC there: layers sharing a bin are composited far to near by it
        if coc.ndim == 0:
            present = {int(k): float(coc) for k, wt in ((lo, 1 - frac), (lo + 1, frac)) if wt > 0}
        else:
            seen = alpha > 0
            c, lo_seen, frac_seen = crop(coc)[seen], lo[seen], frac[seen]
            lower, upper = lo_seen[frac_seen < 1], lo_seen[frac_seen > 0] + 1  # pos <= len(bins) - 1: frac > 0 has a next bin
            sums = np.bincount(lower, c[frac_seen < 1], minlength=len(bins)) + np.bincount(upper, c[frac_seen > 0], minlength=len(bins))
            counts = np.bincount(lower, minlength=len(bins)) + np.bincount(upper, minlength=len(bins))
            present = {int(k): float(sums[k] / counts[k]) for k in np.flatnonzero(counts)}
        prepared.append((box, colour, alpha, pos, vis, present))
    channels = prepared[0][1].shape[2] if prepared else np.asarray(layers[0].colour).shape[2]
    out = {v: np.zeros((hp, wp, channels), np.float32) for v in views}
    for b in range(len(bins) - 1, -1, -1):  # far -> near
        users = sorted((p for p in prepared if b in p[5]), key=lambda p: -p[5][b])
        if not users:
            continue
        kl, kr = psf.kernels(float(bins[b]))
        kernel_of = {v: trim_kernel(k) for v, k in (("left", kl), ("right", kr), ("combined", (kl + kr) / 2)) if v in views}
        radius = max(k.shape[0] for k in kernel_of.values()) // 2
        for layer_box, colour, alpha, pos, vis, _ in users:
            # cumulative cover: all of what lies at or nearer than this bin's outer neighbour
            # (pos <= b + 1; drawn there already, redrawn nearer), and 1 - t of what lies t of the way
            # out to it, as far as no other layer hides it (its full draw there is under them)
            region = (fast or local) and pos.ndim and bounding_box(np.abs(pos - b) < 1, 2 * radius + 1, pos.shape)
            sel = region if region else (slice(None), slice(None))
            p = pos[sel] if pos.ndim else pos
            weight = np.clip(b + 1 - p, 0, 1).astype(np.float32)
            if vis is not None:
                weight = np.where(p > b, weight * vis[sel], weight).astype(np.float32)
            if region:
                # only the bin's own pixels and what its blur reaches change the picture materially;
                # nearer content further away is redrawn by its own bins
                cover = np.zeros_like(alpha)
                cover[sel] = alpha[sel] * weight
            else:
                cover = alpha * weight
            local = bounding_box(cover > 0, radius, cover.shape)
            if local is None:
                continue
            a = cover[local]
            col = colour[local]
            if fill_hidden and pos.ndim:
                hidden = pos[local] < b - fill_hidden
                if (hidden & (a > 0)).any():
                    col = pull_push_fill(col, (a > 0) & ~hidden)
            # premultiplied colour and alpha, in a box grown by the kernel radius so blur spills
            # outside the layer's own box
            ys, xs = local
            y0, x0 = layer_box[0].start + ys.start, layer_box[1].start + xs.start
            gy0, gx0 = max(y0 - radius, 0), max(x0 - radius, 0)
            gy1 = min(y0 + a.shape[0] + radius, hp)
            gx1 = min(x0 + a.shape[1] + radius, wp)
            stack = np.zeros((col.shape[2] + 1, gy1 - gy0, gx1 - gx0), np.float32)
            inner = (slice(y0 - gy0, y0 - gy0 + a.shape[0]), slice(x0 - gx0, x0 - gx0 + a.shape[1]))
            np.multiply(np.moveaxis(col, 2, 0), a, out=stack[(slice(None, -1),) + inner])
            stack[(-1,) + inner] = a
            blur_radius = abs(float(bins[b]))  # not the kernel's array size: a bank pads every kernel
            factor = min(4, int(blur_radius // 3)) if fast and blur_radius >= 6 else 1
            if factor > 1:
                blurred = _blur_reduced(stack, psf, float(bins[b]), views, factor)
            else:
                blurred = convolve_stack(stack, [kernel_of[v] for v in views])
            for v, bl in zip(views, blurred):
                region = out[v][gy0:gy1, gx0:gx1]
                region *= 1.0 - np.clip(bl[-1], 0.0, 1.0)[..., None]
                region += bl[:-1].transpose(1, 2, 0)
    out = {v: img[pad : pad + h, pad : pad + w] for v, img in out.items()}
    return {v: np.clip(img, 0.0, None) for v, img in out.items()}
