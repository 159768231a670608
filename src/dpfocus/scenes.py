"""Random synthetic DP scenes with ground truth: the training and benchmark data source.

A scene is a far textured backdrop, an optional slanted ground plane, and several textured objects
at different depths. Depth is kept as *inverse* depth ``q`` (0 = infinity, 1 = nearest). The camera
focuses at ``q_f``; the signed CoC is ``A * (q_f - q)`` (positive = behind focus), and refocusing on
object ``i`` at strength 1 uses ``A * (q_i - q)``. Views are rendered with
:func:`dpfocus.optics.render_layers` in linear light, then get left/right vignetting, Poisson-Gaussian
noise, the sRGB curve and 8/16-bit quantisation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import scipy.fft
from scipy import ndimage

from .optics import DPPSF, Layer, PSFModel, linear_to_srgb, render_layers, srgb_to_linear

__all__ = ["SceneConfig", "Scene", "generate_scene", "random_psf", "texture_bank", "add_sensor_effects"]

FOCUS_PLACEMENTS = ("front", "on", "behind")


@dataclass
class SceneConfig:
    """Knobs of the random scene generator (ranges are sampled uniformly)."""

    height: int = 512
    width: int = 768
    max_coc: tuple[float, float] = (4.0, 14.0)  # largest |CoC| in the scene, px
    n_objects: tuple[int, int] = (2, 5)
    ground_probability: float = 0.7
    grey_probability: float = 0.0
    focus: str | None = None  # "front", "on", "behind" or None = random
    noise_shot: tuple[float, float] = (1e-4, 4e-3)  # Poisson gain a in var = a x + b (linear)
    noise_read: tuple[float, float] = (1e-7, 4e-5)
    vignetting: tuple[float, float] = (0.0, 0.12)  # opposite left/right gain ramps, fraction
    bit_depth: int = 16
    random_psf: bool = True
    with_refocus: bool = True
    relief: tuple[float, float] = (0.0, 0.06)  # tilt / bulge of backdrop and objects, in inverse depth
    micro_texture: tuple[float, float] = (0.05, 0.4)  # contrast of the 1/f grain every surface carries
    #: chance that a surface is featureless (clear sky, a plain wall, a blown highlight): one colour and
    #: gentle shading, no grain, so only the sensor noise is left on it. 0 (the default, and what the
    #: benchmark and the samples use) draws no extra random numbers, so their scenes do not change
    featureless_probability: float = 0.0
    #: chance that the scene's PSF is shaped like a calibrated real one (polygonal stop, unequal
    #: halves, off-axis vignetting; :func:`random_psf`); 0, the default, draws no extra numbers
    psf_variety: float = 0.0

    def __post_init__(self) -> None:
        if self.focus is not None and self.focus not in FOCUS_PLACEMENTS:
            raise ValueError(f"focus must be one of {FOCUS_PLACEMENTS} or None, got {self.focus!r}")
        if self.bit_depth not in (8, 16):
            raise ValueError("bit_depth must be 8 or 16")
        if not 0.0 <= self.featureless_probability <= 1.0:
            raise ValueError(f"featureless_probability must be in [0, 1], got {self.featureless_probability}")
        if not 0.0 <= self.psf_variety <= 1.0:
            raise ValueError(f"psf_variety must be in [0, 1], got {self.psf_variety}")


@dataclass
class Scene:
    """A rendered DP scene and its ground truth (images display-encoded float32 in [0, 1])."""

    left: np.ndarray
    right: np.ndarray
    combined: np.ndarray  # what the sensor records as the ordinary photo: (L + R) / 2
    aif: np.ndarray
    disparity: np.ndarray  # signed, px, of the visible surface
    coc: np.ndarray  # signed CoC radius, px
    inverse_depth: np.ndarray
    labels: np.ndarray  # 0 = backdrop / ground, i = visible part of object i
    objects: list[dict]
    refocused: dict[int, np.ndarray]  # object label -> combined image focused on it (strength 1)
    psf: PSFModel
    coc_per_disparity: float
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- textures

_RGB_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")
_GREY_SOURCES = ("brick", "grass", "gravel", "camera", "moon", "text", "page", "clock", "cell", "coins")


@lru_cache(maxsize=1)
def texture_bank() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Photographic textures shipped with scikit-image (offline), as float32 sRGB."""
    import skimage.data as data

    def load(names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        out = []
        for name in names:
            try:
                img = getattr(data, name)()
            except Exception:  # a data file that would need a download: skip it
                continue
            out.append(np.asarray(img, np.float32)[..., :3] / 255.0)
        return tuple(out)

    return load(_RGB_SOURCES), load(_GREY_SOURCES)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return cv2.resize(np.ascontiguousarray(img, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _fractal_noise(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
    """1/f^beta noise in [0, 1]."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2)
    spec[0, 0] = 0
    n = scipy.fft.irfft2(spec.astype(np.complex64), s=(h, w), workers=-1)
    n = (n - n.min()) / (np.ptp(n) + 1e-12)
    return n.astype(np.float32)


def _colourise(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    a, b = rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32)
    return np.multiply.outer(grey.astype(np.float32), b - a) + a


def _procedural(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        g = _fractal_noise(rng, h, w, rng.uniform(1.5, 3.0))
    elif kind == 1:  # rotated stripes with noise
        th = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        g = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
        g = 0.8 * g + 0.2 * _fractal_noise(rng, h, w, 2.0)
    elif kind == 2:  # checkerboard
        th = rng.uniform(0, np.pi)
        s = rng.uniform(8, 48)
        u = xx * np.cos(th) + yy * np.sin(th)
        v = -xx * np.sin(th) + yy * np.cos(th)
        g = ((np.floor(u / s) + np.floor(v / s)) % 2).astype(np.float32)
        g = ndimage.gaussian_filter(g, 0.6)
    elif kind == 3:  # dots
        g = np.zeros((h, w), np.float32)
        n = int(h * w / rng.uniform(150, 900))
        g[rng.integers(0, h, n), rng.integers(0, w, n)] = 1.0
        g = np.clip(ndimage.gaussian_filter(g, rng.uniform(1.0, 3.0)) * 20, 0, 1)
    else:  # cells: thresholded smooth noise
        small = ndimage.gaussian_filter(rng.normal(size=(h // 2 + 1, w // 2 + 1)).astype(np.float32), rng.uniform(1, 4))
        g = (_resize(small, h, w) > 0).astype(np.float32)
        g = ndimage.gaussian_filter(g, 0.7)
    rgb = _colourise(rng, g.astype(np.float32))
    return np.clip(rgb, 0, 1)


def _texture(rng: np.random.Generator, h: int, w: int, grain: float = 0.0) -> np.ndarray:
    """A random H x W x 3 sRGB texture with 1/f grain of contrast ``grain`` (real surfaces are never
    perfectly flat; a crop of a photo's flat border would otherwise be a uniform colour)."""
    tex = _base_texture(rng, h, w)
    if grain > 0:
        g = _fractal_noise(rng, h, w, float(rng.uniform(1.6, 2.4)))
        tex = np.clip(tex * (1.0 + grain * (2.0 * g[..., None] - 1.0)), 0, 1)
    return tex.astype(np.float32)


def _featureless_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One colour with gentle shading (up to 15 % across the frame) in a random direction; a quarter
    of them pure white, as an overexposed sky or lamp is."""
    if rng.uniform() < 0.25:
        return np.ones((h, w, 3), np.float32)
    colour = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) * np.float32(rng.uniform(0.0, 0.15))
    return np.clip(colour[None, None, :] * (1.0 + ramp[..., None]), 0, 1).astype(np.float32)


def _base_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random H x W x 3 sRGB texture: a crop of a photo, or a procedural pattern."""
    rgb_bank, grey_bank = texture_bank()
    choice = rng.uniform()
    if choice < 0.55 and (rgb_bank or grey_bank):
        use_rgb = rgb_bank and (not grey_bank or rng.uniform() < 0.6)
        src = rgb_bank[rng.integers(len(rgb_bank))] if use_rgb else grey_bank[rng.integers(len(grey_bank))]
        import cv2

        # one affine warp samples a scaled, rotated, possibly mirrored window (mirrored borders)
        scale = rng.uniform(0.5, 1.6) * np.array([-1.0 if rng.uniform() < 0.5 else 1.0, 1.0])
        theta = rng.uniform(-0.4, 0.4)
        c, s_ = np.cos(theta), np.sin(theta)
        lin = np.array([[c, -s_], [s_, c]]) / scale[None, :]
        centre = np.array([rng.uniform(0, src.shape[1]), rng.uniform(0, src.shape[0])])
        offset = centre - lin @ np.array([w / 2, h / 2])
        matrix = np.hstack([lin, offset[:, None]]).astype(np.float32)
        out = cv2.warpAffine(
            np.ascontiguousarray(src, np.float32),
            matrix,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        if out.ndim == 2:
            out = _colourise(rng, out)
        return np.clip(out, 0, 1).astype(np.float32)
    return _procedural(rng, h, w)


# --------------------------------------------------------------------------- geometry


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An anti-aliased random silhouette filling a good part of an h x w box."""
    from skimage.draw import ellipse, polygon

    m = np.zeros((2 * h, 2 * w), np.float32)  # drawn at 2x, then averaged down
    kind = rng.integers(4)
    if kind == 0:
        rr, cc = ellipse(h, w, h * rng.uniform(0.6, 0.98), w * rng.uniform(0.6, 0.98), shape=m.shape, rotation=rng.uniform(-0.5, 0.5))
        m[rr, cc] = 1
    elif kind == 1:
        n = rng.integers(3, 9)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.55, 0.98, n)
        rr = h + rad * h * np.sin(ang)
        cc = w + rad * w * np.cos(ang)
        pr, pc = polygon(rr, cc, shape=m.shape)
        m[pr, pc] = 1
    elif kind == 2:  # rounded rectangle
        y0, y1 = h * rng.uniform(0.0, 0.3), 2 * h - h * rng.uniform(0.0, 0.3)
        x0, x1 = w * rng.uniform(0.0, 0.3), 2 * w - w * rng.uniform(0.0, 0.3)
        r = rng.uniform(0.05, 0.5) * min(y1 - y0, x1 - x0)
        yy, xx = np.mgrid[0 : 2 * h, 0 : 2 * w].astype(np.float32)
        dy = np.maximum(np.maximum(y0 + r - yy, yy - (y1 - r)), 0)
        dx = np.maximum(np.maximum(x0 + r - xx, xx - (x1 - r)), 0)
        m = (dx * dx + dy * dy <= r * r).astype(np.float32)
    else:  # blob
        coarse = ndimage.gaussian_filter(rng.normal(size=(16, 16)), 2.5)
        g = _resize(coarse, 2 * h, 2 * w)
        yy, xx = np.mgrid[-1 : 1 : 2j * h, -1 : 1 : 2j * w]
        g = g / (np.abs(g).max() + 1e-9) - 1.2 * (yy**2 + xx**2) + 0.6
        m = (g > 0).astype(np.float32)
    m = m.reshape(h, 2, w, 2).mean(axis=(1, 3))
    if m.sum() < 0.1 * h * w:  # degenerate draw: fall back to an ellipse
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2) <= 0.8).astype(np.float32)
    return m


def random_psf(rng: np.random.Generator, variety: float = 0.0) -> DPPSF:
    """A DP PSF with randomised split softness, rim sharpness, rim brightness and fall-off; with
    chance ``variety`` also what calibrated real kernels show: a polygonal stop (5-9 blades, half of
    them), unequal halves (the split up to 0.3 radii off the centre) and off-axis vignetting (a cat's
    eye, half of them). ``variety`` 0 draws no further random numbers (the benchmark's scenes)."""
    order = float(rng.choice([2.0, 4.0, 8.0, math.inf], p=[0.2, 0.3, 0.3, 0.2]))
    params = dict(
        split_softness=float(rng.uniform(0.05, 0.4)),
        butterworth_order=order,
        rim=float(rng.choice([0.0, rng.uniform(0, 0.8)])),
        falloff=float(rng.choice([0.0, rng.uniform(0, 0.6)])),
    )
    if variety > 0 and rng.uniform() < variety:
        params.update(
            blades=int(rng.integers(5, 10)) if rng.uniform() < 0.5 else 0,
            split_offset=float(rng.uniform(-0.3, 0.3)),
            cat_eye=float(rng.uniform(0.2, 0.7)) if rng.uniform() < 0.5 else 0.0,
            cat_eye_angle=float(rng.uniform(0, 2 * math.pi)),
        )
    return DPPSF(**params)


# --------------------------------------------------------------------------- sensor


def add_sensor_effects(
    left_lin: np.ndarray,
    right_lin: np.ndarray,
    rng: np.random.Generator,
    *,
    vignetting: float,
    shot: float,
    read: float,
    bit_depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opposite left/right gain ramps, Poisson-Gaussian noise, sRGB encoding and quantisation.

    Returns display-encoded ``(left, right, combined)``; ``combined`` is the sum image the sensor
    records, ``(L + R) / 2`` of the noisy linear views.
    """
    w = left_lin.shape[1]
    ramp = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :, None]
    views = []
    for img, sign in ((left_lin, -1.0), (right_lin, 1.0)):
        gained = img * (1.0 + sign * vignetting * ramp)
        sigma = np.sqrt(np.clip(shot * gained + read, 0, None))
        views.append(np.clip(gained + sigma * rng.standard_normal(img.shape, dtype=np.float32), 0, 1))
    views.append((views[0] + views[1]) / 2)
    levels = 2**bit_depth - 1
    return tuple(np.round(linear_to_srgb(v) * levels).astype(np.float32) / levels for v in views)  # type: ignore[return-value]


# --------------------------------------------------------------------------- scenes


def generate_scene(seed: int | np.random.Generator = 0, config: SceneConfig | None = None) -> Scene:
    """Render one random DP scene with ground truth.

    Parameters
    ----------
    seed : int or numpy Generator
        Same seed and config give the same scene.
    config : SceneConfig, optional

    Returns
    -------
    Scene
    """
    cfg = config or SceneConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    t0 = time.perf_counter()
    h, w = cfg.height, cfg.width
    grey = rng.uniform() < cfg.grey_probability

    # --- geometry in inverse depth q (0 = infinity, 1 = nearest)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5

    def grain() -> float:
        return float(rng.uniform(*cfg.micro_texture))

    def surface_texture() -> np.ndarray:
        if cfg.featureless_probability > 0 and rng.uniform() < cfg.featureless_probability:
            return _featureless_texture(rng, h, w)
        return _texture(rng, h, w, grain())

    def tilt(amplitude: float) -> np.ndarray:
        """A plane through 0 at the frame centre whose values span about ``amplitude``."""
        angle = rng.uniform(0, 2 * np.pi)
        return (amplitude * (np.cos(angle) * xx + np.sin(angle) * yy)).astype(np.float32)

    q_back = float(rng.uniform(0.02, 0.15))
    back_map = np.maximum(q_back + tilt(float(rng.uniform(*cfg.relief))), 0.005).astype(np.float32)
    surfaces: list[tuple[np.ndarray, np.ndarray, np.ndarray | float]] = []  # (colour, alpha, q)
    surfaces.append((surface_texture(), np.ones((h, w), np.float32), back_map))
    if rng.uniform() < cfg.ground_probability:
        horizon = int(h * rng.uniform(0.35, 0.7))
        rows = np.arange(h, dtype=np.float32)
        t = np.clip((rows - horizon) / max(h - horizon, 1), 0, 1)
        q_near = rng.uniform(0.6, 1.0)
        q_ground = (q_back + (q_near - q_back) * t)[:, None] * np.ones((1, w), np.float32)
        ground_alpha = np.clip(rows - horizon + 0.5, 0, 1)[:, None] * np.ones((1, w), np.float32)
        surfaces.append((surface_texture(), ground_alpha.astype(np.float32), q_ground.astype(np.float32)))
    objects = []
    n_obj = int(rng.integers(cfg.n_objects[0], cfg.n_objects[1] + 1))
    for i in range(n_obj):
        oh = int(h * rng.uniform(0.2, 0.6))
        ow = int(w * rng.uniform(0.12, 0.4))
        y0 = int(rng.integers(0, h - oh))
        x0 = int(rng.integers(0, w - ow))
        alpha = np.zeros((h, w), np.float32)
        alpha[y0 : y0 + oh, x0 : x0 + ow] = _shape_mask(rng, oh, ow)
        q = float(rng.uniform(q_back + 0.1, 1.0))
        # a tilted, bulging surface rather than a cardboard cut-out parallel to the sensor
        cy, cx = (y0 + oh / 2) / h - 0.5, (x0 + ow / 2) / w - 0.5
        rho2 = ((yy - cy) / (oh / h / 2)) ** 2 + ((xx - cx) / (ow / w / 2)) ** 2
        bulge = float(rng.uniform(*cfg.relief)) * np.clip(1.0 - rho2, 0, 1)
        q_map = (q + tilt(float(rng.uniform(*cfg.relief))) + bulge).astype(np.float32)
        q_map -= float(q_map[alpha > 0.5].mean() - q) if (alpha > 0.5).any() else 0.0  # mean stays q
        surfaces.append((surface_texture(), alpha, q_map))
        objects.append({"label": i + 1, "inverse_depth": q, "box": [x0, y0, x0 + ow, y0 + oh]})
    if grey:
        surfaces = [(np.repeat(c.mean(axis=2, keepdims=True), 3, axis=2), a, q) for c, a, q in surfaces]

    linear = [srgb_to_linear(c) for c, _, _ in surfaces]

    # --- visible inverse depth, labels and all-in-focus image (front-most surface wins)
    q_vis = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.int32)
    aif_lin = np.zeros((h, w, 3), np.float32)
    order = sorted(range(len(surfaces)), key=lambda s: float(np.mean(surfaces[s][2])))
    for s in order:  # far -> near by mean depth; per pixel the nearer surface wins below
        colour, alpha, q = surfaces[s]
        qmap = np.broadcast_to(np.asarray(q, np.float32), (h, w))
        front = (alpha > 0.5) & (qmap >= q_vis)
        q_vis[front] = qmap[front]
        label = s - (len(surfaces) - n_obj) + 1
        labels[front] = label if label >= 1 else 0
    for s in order:
        colour, alpha, q = surfaces[s]
        lin = linear[s]
        qmap = np.broadcast_to(np.asarray(q, np.float32), (h, w))
        a = alpha * (qmap >= q_vis - 1e-6)
        aif_lin = aif_lin * (1 - a[..., None]) + lin * a[..., None]

    # an object's depth is the mean over its visible pixels: refocusing on it uses the same mean
    # as d_trg = mean(D over the object's mask)
    for o, (_, alpha, q) in zip(objects, surfaces[len(surfaces) - n_obj :]):
        seen = labels == o["label"]
        seen = seen if seen.any() else alpha > 0.5
        o["inverse_depth"] = float(np.broadcast_to(np.asarray(q, np.float32), (h, w))[seen].mean()) if seen.any() else float(np.mean(q))

    # --- focus and aperture
    placement = cfg.focus or str(rng.choice(FOCUS_PLACEMENTS))
    q_objs = [o["inverse_depth"] for o in objects] or [float(q_vis.max())]
    object_q = [np.asarray(q)[alpha > 0.5] for _, alpha, q in surfaces[len(surfaces) - n_obj :] if (alpha > 0.5).any()]
    if placement == "on":
        q_focus = float(rng.choice(q_objs))
    elif placement == "front":  # in front of everything visible, the near end of the ground included
        nearest = max([float(q.max()) for q in object_q] + [float(q_vis.max())])
        q_focus = float(min(1.2, nearest + rng.uniform(0.05, 0.3)))
    else:  # behind every object point, between them and the backdrop
        farthest = min([float(q.min()) for q in object_q] or [float(q_vis.max())])
        q_focus = float(rng.uniform(min(float(back_map.max()), farthest), farthest))
    span = max(abs(q_focus - float(q_vis.min())), abs(q_focus - float(q_vis.max())), 1e-3)
    max_coc = float(rng.uniform(*cfg.max_coc))
    aperture = max_coc / span
    psf = random_psf(rng, cfg.psf_variety) if cfg.random_psf else DPPSF()
    J = psf.coc_per_disparity

    def layers_for(q_target: float) -> list[Layer]:
        return [
            Layer(lin, a, aperture * (q_target - np.asarray(q, np.float32)))
            for lin, (_, a, q) in zip(linear, surfaces)
        ]

    views = render_layers(layers_for(q_focus), psf, views=("left", "right"), local=True)
    left, right, combined = add_sensor_effects(
        views["left"],
        views["right"],
        rng,
        vignetting=float(rng.uniform(*cfg.vignetting)),
        shot=float(np.exp(rng.uniform(*np.log(cfg.noise_shot)))),
        read=float(np.exp(rng.uniform(*np.log(cfg.noise_read)))),
        bit_depth=cfg.bit_depth,
    )
    t_render = time.perf_counter() - t0
    refocused: dict[int, np.ndarray] = {}
    if cfg.with_refocus:
        for o in objects:
            img = render_layers(layers_for(o["inverse_depth"]), psf, views=("combined",), local=True)["combined"]
            refocused[o["label"]] = linear_to_srgb(img)
    coc = (aperture * (q_focus - q_vis)).astype(np.float32)
    for o in objects:
        o["coc"] = float(aperture * (q_focus - o["inverse_depth"]))
        o["visible_pixels"] = int((labels == o["label"]).sum())
    if grey:
        left, right, combined = (v[..., 0] for v in (left, right, combined))
        refocused = {k: v[..., 0] for k, v in refocused.items()}
    aif = linear_to_srgb(aif_lin)
    if grey:
        aif = aif[..., 0]
    meta = {
        "config": asdict(cfg),
        "focus_placement": placement,
        "inverse_depth_focus": q_focus,
        "aperture": aperture,
        "psf": {k: v for k, v in asdict(psf).items() if not k.startswith("_")},
        "coc_per_disparity": J,
        "seconds_views": t_render,
        "seconds_total": time.perf_counter() - t0,
    }
    return Scene(
        left=left,
        right=right,
        combined=combined,
        aif=aif,
        disparity=(coc / J).astype(np.float32),
        coc=coc,
        inverse_depth=q_vis,
        labels=labels,
        objects=objects,
        refocused=refocused,
        psf=psf,
        coc_per_disparity=J,
        meta=meta,
    )
