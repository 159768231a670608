"""Refocusing: focus target -> ``d_trg`` -> target CoC -> rendered image (preview or full quality).

Physics (DESIGN.md): ``C' = strength * J * (D - d_trg)``, ``d_trg`` the mean disparity over the
target region. With strength 1 the result is what the same camera would have recorded had it
focused on the target. A focus tolerance keeps a disparity band around ``d_trg`` sharp.

* :func:`render_refocus` (full quality): the layered renderer of :mod:`dpfocus.optics` (back to
  front, premultiplied, linear light) applied to the all-in-focus image with the analysis's own
  kernel bank; what a blurred foreground's rim reveals is filled from the background around it.
* :class:`RefocusPreview` (live): prepared once per analysis (a stack of the all-in-focus image
  blurred at a ladder of radii, at reduced resolution); each update only picks and interpolates
  two stack levels per pixel.
* :func:`focus_sweep` (a focal stack): the focal plane swept from the nearest surface to the
  farthest, one image per step, with either renderer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .analysis import Analysis, render_psf_from_spec
from .optics import BANK_RELATIVE_STEP, BANK_STEP, CalibratedPSF, Layer, PSFModel, bin_weights, bounding_box, coc_bin_centres, convolve_stack, grow_box, linear_to_srgb, render_layers, srgb_to_linear, trim_kernel

__all__ = ["FocusError", "check_controls", "check_sweep", "sweep_disparities", "focus_sweep", "focus_disparity", "target_coc", "analysis_psf", "render_refocus", "blur_by_radius", "RefocusPreview", "point_mask", "box_mask", "focus_region"]

POINT_RADIUS = 6  # px: a click selects a small disk
#: px: ``d_trg`` is the mean over the target's interior, the mask less this rim: an estimated map
#: blends across depth edges over a few px, the blur map gives a nearer surface's spill to the
#: pixels around it, and a painted mask strays over the edge. Refocus PSNR on tuning scenes
#: (network: seeds 500000-500023 / 700000-700011, classical: 700000-700023 / 500000-500011) went
#: 33.97 / 33.90 / 35.10 / 32.91 -> 34.31 / 34.15 / 35.16 / 32.97 dB; rims of 2, 4 and 8 px and the
#: mask's median gained less or lost more on single scenes
FOCUS_RIM = 6
#: px: a target whose interior is smaller than this (a click's disk, a thin stroke) keeps its rim
MIN_INTERIOR = 20
#: behind pixels more than this many CoC bins nearer, the full render fills in the background (what a
#: blurred foreground's soft rim reveals); +1.8 dB against ground-truth refocused images
HIDDEN_FILL_BINS = 1
#: the captured photo is re-blurred where the target CoC is at least the captured CoC less this (px);
#: tuning scenes: +0.76 dB over rendering everything from the all-in-focus image
PHOTO_SLACK = 0.5
#: a focus sweep spans these percentiles of the disparity (the nearest and farthest surfaces, not
#: a few stray pixels)
SWEEP_PERCENTILES = (1.0, 99.0)
MIN_SWEEP_SPAN = 0.05  # px of disparity: less is one depth, and a default sweep would repeat one image


class FocusError(ValueError):
    """A focus target that cannot be used (wrong size, empty, outside the image)."""


def point_mask(shape: tuple[int, int], x: float, y: float, radius: int = POINT_RADIUS) -> np.ndarray:
    h, w = shape
    if not (0 <= x < w and 0 <= y < h):
        raise FocusError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} image; use 0 <= X < {w}, 0 <= Y < {h}")
    yy, xx = np.ogrid[:h, :w]
    return (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def box_mask(shape: tuple[int, int], x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    h, w = shape
    xa, xb = sorted((x0, x1))
    ya, yb = sorted((y0, y1))
    xa, xb, ya, yb = max(xa, 0), min(xb, w), max(ya, 0), min(yb, h)
    if xb - xa < 1 or yb - ya < 1:
        raise FocusError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) covers no pixel of the {w}x{h} image")
    m = np.zeros(shape, bool)
    m[int(ya) : int(np.ceil(yb)), int(xa) : int(np.ceil(xb))] = True
    return m


def focus_region(mask: np.ndarray) -> np.ndarray:
    """The pixels of a non-empty focus mask that set ``d_trg``: those more than ``FOCUS_RIM`` px inside
    it (the image border is no edge), or the whole mask when fewer than ``MIN_INTERIOR`` are."""
    import cv2

    mask = np.asarray(mask, bool)
    box = bounding_box(mask, pad=FOCUS_RIM + 1)
    if box is None:
        return mask
    # erosion by the closed disk (3 ms for a mask filling a 1120x1680 frame; a distance transform
    # took 50 ms, too slow for the live preview); cv2 pads with the mask, so the border is no edge
    offsets = np.arange(-FOCUS_RIM, FOCUS_RIM + 1) ** 2
    disk = (np.add.outer(offsets, offsets) <= FOCUS_RIM**2).astype(np.uint8)
    interior = np.zeros_like(mask)
    interior[box] = cv2.erode(mask[box].view(np.uint8), disk) > 0
    return interior if np.count_nonzero(interior) >= MIN_INTERIOR else mask


def focus_disparity(
    analysis: Analysis,
    *,
    mask: np.ndarray | None = None,
    point: tuple[float, float] | None = None,
    box: tuple[float, float, float, float] | None = None,
    d_trg: float | None = None,
) -> float:
    """``d_trg``: the mean disparity over the target's interior (:func:`focus_region`; exactly one of
    mask, point, box, d_trg)."""
    given = [v is not None for v in (mask, point, box, d_trg)]
    if sum(given) != 1:
        raise FocusError("give exactly one focus target: a mask, a point, a box, or a disparity")
    if d_trg is not None:
        if not np.isfinite(d_trg):
            raise FocusError("the target disparity must be a finite number")
        return float(d_trg)
    if point is not None:
        mask = point_mask(analysis.shape, *point)
    elif box is not None:
        mask = box_mask(analysis.shape, *box)
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != analysis.shape:
        raise FocusError(
            f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {analysis.shape[1]}x{analysis.shape[0]}; "
            "draw it on the same pair (or resize it)"
        )
    mask = mask > 0
    if not mask.any():
        raise FocusError("the focus mask is empty; paint or select the region to bring into focus")
    return float(analysis.blur_disparity_at(focus_region(mask)).mean())


def check_controls(strength: float, tolerance: float = 0.0) -> None:
    """FocusError unless the aperture strength and the focus tolerance are finite and >= 0."""
    if not (np.isfinite(strength) and strength >= 0):
        raise FocusError(f"strength must be a number >= 0 (0 = all in focus, 1 = the captured aperture), got {strength:g}")
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise FocusError(f"tolerance must be a number of px >= 0 (0 = only the target disparity is sharp), got {tolerance:g}")


def target_coc(analysis: Analysis, d_trg: float, strength: float = 1.0, tolerance: float = 0.0) -> np.ndarray:
    """Signed target CoC ``strength * J * (D - d_trg)``, with a sharp band of +-tolerance (px disparity).
    ``D`` is the depth each pixel's blur shows (``Analysis.blur_disparity``): a nearer object's
    spill onto the wall around it is re-rendered with that object."""
    check_controls(strength, tolerance)
    delta = analysis.blur_disparity - np.float32(d_trg)
    if tolerance > 0:
        delta = np.sign(delta) * np.maximum(np.abs(delta) - np.float32(tolerance), 0)
    return (np.float32(strength * analysis.coc_per_disparity) * delta).astype(np.float32)


def analysis_psf(analysis: Analysis) -> PSFModel:
    """The PSF refocusing blurs with: the parametric DP PSF a backend names in ``meta["render_psf"]``
    (the network: its learned entries act on features, and resampled to image space they blur too
    little, 1.4 dB below the physical kernels on tuning scenes), else the analysis's kernel bank."""
    cached = analysis.meta.get("_psf")
    if cached is None:
        spec = analysis.meta.get("render_psf")
        if spec:
            cached = render_psf_from_spec(spec)
        else:
            cached = CalibratedPSF(analysis.kernel_cocs.tolist(), list(analysis.kernels_left), list(analysis.kernels_right))
        analysis.meta["_psf"] = cached
    return cached


def render_refocus(analysis: Analysis, d_trg: float, strength: float = 1.0, tolerance: float = 0.0) -> np.ndarray:
    """Full-quality refocused image (display-encoded, same shape as the input views).

    Where the target needs less blur than was captured, the all-in-focus image is re-rendered with
    the layered renderer. Where it needs at least the captured blur (within ``PHOTO_SLACK`` px), the
    captured photo itself is blurred by the difference, ``sqrt(C'^2 - C^2)`` (defocus magnification):
    it already holds the right occlusions and none of the deconvolution's errors, and at the captured
    focus and strength 1 it comes back unchanged.
    """
    coc = target_coc(analysis, d_trg, strength, tolerance)
    aif = analysis.aif
    lin = srgb_to_linear(aif if aif.ndim == 3 else aif[..., None])
    psf = analysis_psf(analysis)
    has_photo = analysis.photo is not None and analysis.photo.shape == aif.shape
    # the captured CoC by the same arithmetic as the target's (not analysis.coc, which rounds
    # differently): at the captured focus the extra blur is exactly zero, not a sqrt-amplified ulp
    wanted, captured = np.abs(coc), np.abs(target_coc(analysis, 0.0))
    from_photo = wanted >= captured - PHOTO_SLACK if has_photo else np.zeros(coc.shape, bool)
    out = np.empty_like(lin)
    # the layered render is only needed where the photo is not used, and within blur reach of there
    box = bounding_box(~from_photo, pad=int(np.ceil(wanted.max())) + 2)
    if box is not None:
        # depth bins with the kernel bank's spacing, over the target CoC range; nearest-bin blur:
        # interpolating between bins gained nothing with estimated maps (34.17 dB both ways on the
        # benchmark) and took 13-25 % longer
        bins = coc_bin_centres(float(wanted[box].max()), step=BANK_STEP, relative_step=BANK_RELATIVE_STEP)
        out[box] = render_layers(
            [Layer(lin[box], np.ones(coc[box].shape, np.float32), coc[box])], psf, views=("combined",), bins=bins,
            fast=True, fill_hidden=HIDDEN_FILL_BINS, interpolate=False,
        )["combined"]
    if from_photo.any():
        photo = srgb_to_linear(analysis.photo if analysis.photo.ndim == 3 else analysis.photo[..., None])
        extra = np.sqrt(np.maximum(wanted * wanted - captured * captured, 0)).astype(np.float32)
        reblurred = blur_by_radius(photo, extra, from_photo, psf)
        out = np.where(from_photo[..., None], reblurred, out)
    img = linear_to_srgb(out)
    return img if aif.ndim == 3 else img[..., 0]


def blur_by_radius(image: np.ndarray, radius: np.ndarray, where: np.ndarray, psf: PSFModel) -> np.ndarray:
    """Blur each pixel of a linear ``H x W x C`` image by its own radius (combined kernel of ``psf``),
    interpolating between blur levels; only pixels in ``where`` are computed (others are left as is).
    Each level is computed over the box of the pixels that need it; radii of 6 px and more at reduced
    resolution, as their result is smooth."""
    import cv2

    r = np.where(where, radius, 0).astype(np.float32)
    levels = np.concatenate([[0.0], coc_bin_centres(max(float(r.max()), 0.5), step=0.5, relative_step=BANK_RELATIVE_STEP / 2)])
    levels = np.unique(np.abs(levels))
    lo, _, t = bin_weights(r, levels)
    h, w = r.shape
    # each computed pixel blends its lower and upper level: visit the levels in order with the
    # pixels (flat indices, grouped by lower level) that use each one
    flat = np.flatnonzero(where)
    lo_f, t_f = lo.ravel()[flat], t.ravel()[flat].astype(np.float32)
    order = np.argsort(lo_f, kind="stable")
    flat, lo_f, t_f = flat[order], lo_f[order], t_f[order]
    starts = np.searchsorted(lo_f, np.arange(len(levels) + 1))
    acc = np.zeros((flat.size, image.shape[2]), np.float32)
    ys, xs = np.divmod(flat, w)
    for k, level in enumerate(levels):
        # pixels whose lower level is k (weight 1 - t), then those whose upper level is k (weight t)
        a0, a1 = starts[k], starts[k + 1]
        b0, b1 = starts[k - 1] if k > 0 else a0, a0
        if a0 == a1 and b0 == b1:
            continue
        sel = slice(b0, a1)  # contiguous: lower level k - 1, then lower level k
        y_sel, x_sel = ys[sel], xs[sel]
        box = (slice(int(y_sel.min()), int(y_sel.max()) + 1), slice(int(x_sel.min()), int(x_sel.max()) + 1))
        weight = np.concatenate([t_f[b0:b1], 1 - t_f[a0:a1]])
        if level == 0:
            blurred_at = image[y_sel, x_sel]
        else:
            kernel = psf.combined_kernel(float(level))
            grown, inner = grow_box(box, kernel.shape[0] // 2 + 2, (h, w))
            part = image[grown]
            factor = min(4, int(level // 3)) if level >= 6 else 1
            if factor > 1:
                ph, pw = part.shape[:2]
                small = cv2.resize(part, (max(pw // factor, 1), max(ph // factor, 1)), interpolation=cv2.INTER_AREA).reshape(max(ph // factor, 1), max(pw // factor, 1), -1)
                k_small = psf.combined_kernel(float(level) / factor)
                blurred_small = _blur_same(small, k_small)
                blurred = cv2.resize(blurred_small, (pw, ph), interpolation=cv2.INTER_LINEAR).reshape(ph, pw, -1)
            else:
                blurred = _blur_same(part, kernel)
            blurred_at = blurred[y_sel - grown[0].start, x_sel - grown[1].start]
        acc[sel] += weight[:, None] * blurred_at
    out = image.copy()
    out.reshape(h * w, -1)[flat] = acc
    return out


def _blur_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'Same' convolution of an ``H x W x C`` image with mirrored borders."""
    kernel = trim_kernel(np.asarray(kernel, np.float32))
    p = kernel.shape[0] // 2
    padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode="reflect") if p else image
    blurred = convolve_stack(padded.transpose(2, 0, 1), [kernel])[0]
    return blurred[:, p : p + image.shape[0], p : p + image.shape[1]].transpose(1, 2, 0)


class RefocusPreview:
    """Live refocus: per update, two lookups in a precomputed blur stack and one interpolation.

    Parameters
    ----------
    analysis : Analysis
    scale : int
        Preview resolution divisor (2: a quarter of the pixels). The image is shown scaled back up.
    """

    def __init__(self, analysis: Analysis, scale: int = 2) -> None:
        import cv2

        self.analysis = analysis
        self.scale = max(1, int(scale))
        h, w = analysis.shape
        self.shape = (h // self.scale, w // self.scale)
        hs, ws = self.shape
        aif = analysis.aif if analysis.aif.ndim == 3 else analysis.aif[..., None]
        lin = srgb_to_linear(cv2.resize(aif, (ws, hs), interpolation=cv2.INTER_AREA).reshape(hs, ws, -1))
        self.disparity = cv2.resize(analysis.blur_disparity, (ws, hs), interpolation=cv2.INTER_AREA)
        max_r = float(max(np.abs(analysis.kernel_cocs).max(), 1.0)) * 2 / self.scale
        radii = [0.0]
        while radii[-1] < max_r:
            radii.append(radii[-1] + max(0.5, 0.25 * radii[-1]))
        self.radii = np.array(radii, np.float32)  # in preview pixels
        psf = analysis_psf(analysis)
        stack = [lin]
        for r in self.radii[1:]:
            k = psf.combined_kernel(float(r) * self.scale)
            if self.scale > 1:  # the kernel at preview resolution
                size = max(3, int(2 * np.ceil(r) + 1) | 1)
                k = cv2.resize(k, (size, size), interpolation=cv2.INTER_AREA)
                k = k / k.sum()
            stack.append(_blur_same(lin, k))
        # display-encoded uint8 levels: a quarter of the memory traffic of float32 per lookup
        self.stack = np.stack([np.round(linear_to_srgb(s) * 255).astype(np.uint8) for s in stack]).reshape(len(stack) * hs * ws, -1)
        self._pixels = np.arange(hs * ws, dtype=np.int64)
        levels = len(self.radii)
        self._lut_step = 32.0  # table entries per preview pixel of radius
        table = np.arange(int(self.radii[-1] * self._lut_step) + 2, dtype=np.float32) / self._lut_step
        pos = np.interp(table, self.radii, np.arange(levels, dtype=np.float32)).astype(np.float32)
        self._lut_lo = np.minimum(pos.astype(np.int64), max(levels - 2, 0))
        self._lut_t = ((pos - self._lut_lo) / 255).astype(np.float32)
        channels = self.stack.shape[1]
        self._a = np.empty((hs * ws, channels), np.float32)
        self._b = np.empty((hs * ws, channels), np.float32)

    def render(self, d_trg: float, strength: float = 1.0, tolerance: float = 0.0) -> np.ndarray:
        """The refocused preview (display-encoded float32, ``H/scale x W/scale``)."""
        check_controls(strength, tolerance)
        n = self._pixels.size
        delta = np.abs(self.disparity - np.float32(d_trg))
        if tolerance > 0:
            delta = np.maximum(delta - np.float32(tolerance), 0)
        # radius -> (lower stack level, blend weight) through a table indexed by quantised radius
        quantised = (delta.ravel() * np.float32(strength * self.analysis.coc_per_disparity / self.scale * self._lut_step))
        q = np.minimum(quantised.astype(np.int32), self._lut_lo.size - 1)
        lo = np.take(self._lut_lo, q)
        t = np.take(self._lut_t, q)[:, None]
        index = lo * n + self._pixels
        np.copyto(self._a, np.take(self.stack, index, axis=0))
        np.copyto(self._b, np.take(self.stack, index + n if len(self.radii) > 1 else index, axis=0))
        # a / 255 + (b - a) * t / 255
        np.subtract(self._b, self._a, out=self._b)
        np.multiply(self._b, t, out=self._b)
        np.multiply(self._a, np.float32(1 / 255), out=self._a)
        np.add(self._a, self._b, out=self._a)
        img = self._a.reshape(*self.shape, -1).copy()
        return img if self.analysis.aif.ndim == 3 else img[..., 0]


def check_sweep(steps: int, near: float | None = None, far: float | None = None) -> None:
    """FocusError unless a sweep of ``steps`` planes between the given ends can be drawn (before any
    analysis runs): at least 2 steps, and ends that are finite numbers where given."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise FocusError(f"a focus sweep needs at least 2 steps, got {steps!r}")
    ends = [float(v) for v in (near, far) if v is not None]
    if not np.isfinite(ends).all():
        raise FocusError(f"the sweep's ends must be two finite disparities (px), got {', '.join(f'{v:g}' for v in ends)}")


def sweep_disparities(analysis: Analysis, steps: int = 12, near: float | None = None, far: float | None = None) -> np.ndarray:
    """``steps`` focus disparities (px), evenly spaced from near to far.

    By default from the nearest to the farthest surface of the analysis (the 1st and 99th
    percentiles of its disparity); ``near`` / ``far`` set either end. FocusError as
    :func:`check_sweep` says, or for a default sweep of a scene at one depth.
    """
    check_sweep(steps, near, far)
    lo, hi = (float(v) for v in np.percentile(analysis.disparity, SWEEP_PERCENTILES))
    if near is None and far is None and hi - lo < MIN_SWEEP_SPAN:
        raise FocusError(f"the scene spans only {hi - lo:.3f} px of disparity (one depth), so every plane would look the same; "
                         "give the sweep's near and far disparities (px) to move the focus off it")
    near = lo if near is None else float(near)
    far = hi if far is None else float(far)
    return np.linspace(near, far, int(steps)).astype(np.float64)


def focus_sweep(
    analysis: Analysis,
    disparities: np.ndarray,
    strength: float = 1.0,
    tolerance: float = 0.0,
    quality: str = "preview",
    preview: RefocusPreview | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(d_trg, image)`` for each focus disparity: a focal stack, one image at a time.

    ``quality="preview"`` renders at the preview's reduced resolution (``preview``, when given, is
    reused: its stack is the costly part), ``"full"`` with :func:`render_refocus` at full size.
    """
    check_controls(strength, tolerance)
    if quality not in ("preview", "full"):
        raise FocusError(f"quality must be 'preview' or 'full', got {quality!r}")
    values = np.asarray(disparities, np.float64).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise FocusError("the sweep's disparities must be finite numbers (px), at least one")
    if quality == "preview" and preview is None:
        preview = RefocusPreview(analysis)
    for d_trg in values:
        if quality == "preview":
            yield float(d_trg), preview.render(float(d_trg), strength, tolerance)
        else:
            yield float(d_trg), render_refocus(analysis, float(d_trg), strength, tolerance)
