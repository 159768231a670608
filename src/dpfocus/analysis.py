"""The ``Analysis`` of a DP pair, backends that produce it, and its on-disk form.

``analyze(pair, backend="classical")`` runs a registered backend. Every backend fills the same
fields, so the refocus renderer, the CLI and the napari docks never care which one ran.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .io import DPPair, read_image, save_image, save_map

__all__ = ["render_psf_spec", "render_psf_from_spec", "Analysis", "AnalysisCancelled", "BackendError", "register_backend", "backends", "backend_tiles", "require_backend", "analyze", "analyze_steps", "save_analysis", "load_analysis", "ANALYSIS_FILES"]

ANALYSIS_FILES = {
    "disparity": "disparity.tif",
    "coc": "coc.tif",
    "kernel_index": "kernel_index.tif",
    "aif": "aif.png",
    "confidence": "confidence.tif",
    "kernels": "kernels.npz",
    "record": "analysis.json",
}
#: the captured photo beside them (optional when reading: an older folder refocuses from the AIF alone)
PHOTO_FILE = "photo.png"
#: the blur map, where it differs from the CoC map (optional: see ``Analysis.blur_coc``)
BLUR_FILE = "blur_coc.tif"


def render_psf_spec(psf) -> dict:
    """A parametric DP PSF as the JSON-able ``meta["render_psf"]`` entry (see ``Analysis.meta``)."""
    from dataclasses import asdict

    return {"model": "DPPSF", **{k: v for k, v in asdict(psf).items() if not k.startswith("_")}}


def render_psf_from_spec(spec: dict):
    """The DP PSF a ``meta["render_psf"]`` entry describes; ``ValueError`` saying what is wrong."""
    from .optics import DPPSF

    params = {k: v for k, v in dict(spec).items() if k != "model"}
    if spec.get("model") != "DPPSF":
        raise ValueError(f"render_psf model {spec.get('model')!r} is not known (only 'DPPSF')")
    try:
        return DPPSF(**params)
    except TypeError as exc:
        raise ValueError(f"render_psf {params} does not describe a DPPSF ({exc})") from None


@dataclass
class Analysis:
    """What a backend found in a DP pair (all maps at the input resolution).

    Attributes
    ----------
    disparity : ndarray, H x W float32
        Signed DP disparity in px, ``B_R(x) ~= B_L(x - d)``; 0 = in focus, + = behind focus.
    confidence : ndarray, H x W float32 in [0, 1]
        How well the data determined the disparity (low in textureless areas, which are filled).
    coc : ndarray, H x W float32
        Signed CoC radius in px, ``coc = J * disparity`` relative to the captured focus.
    kernel_index : ndarray, H x W uint16
        Index into the kernel bank of the best-fitting kernel at each pixel.
    kernel_cocs : ndarray, (N,) float32
        Signed CoC of each bank entry (sorted), what each kernel index stands for.
    kernels_left, kernels_right : ndarray, (N, S, S) float32
        The bank as image-space left/right kernels (zero-padded to a common size).
    aif : ndarray
        All-in-focus image, display-encoded, same shape as the input views.
    coc_per_disparity : float
        ``J`` in ``C = J * D``.
    backend : str
    meta : dict
        Timings (s), units, version, pair name/id, backend options; ``render_psf`` (optional): the
        parametric DP PSF refocusing blurs with instead of the bank (:func:`render_psf_spec`).
    kernel_weights_topk : tuple of (indices, weights) arrays, optional
        Per-pixel top-k bank indices and weights (a backend with soft retrieval fills it); otherwise
        weights come from the CoC by linear interpolation between the two nearest bank entries.
    photo : ndarray, optional
        The captured ordinary photo (display-encoded, the views' shape) that was analysed:
        :func:`analyze` attaches the pair's own, or ``(L + R) / 2``. Refocusing re-blurs it wherever
        the target needs at least the captured blur, and uses the all-in-focus image elsewhere.
    blur_coc : ndarray, H x W float32, optional
        The CoC of the blur each pixel shows, where a backend's ``coc`` models the scene instead
        (the backdrop plane, ``optics.flatten_backdrop``; the network's sharp depth edges, to which
        it adds ``optics.foreground_spill``): a nearer object's blur spilling onto the wall around
        it counts as that object's. The kernel index and weights, the deconvolution and the
        renderer's layers follow it; None = ``coc``.
    """

    disparity: np.ndarray
    confidence: np.ndarray
    coc: np.ndarray
    kernel_index: np.ndarray
    kernel_cocs: np.ndarray
    kernels_left: np.ndarray
    kernels_right: np.ndarray
    aif: np.ndarray
    coc_per_disparity: float
    backend: str
    meta: dict = field(default_factory=dict)
    kernel_weights_topk: tuple[np.ndarray, np.ndarray] | None = None
    photo: np.ndarray | None = None
    blur_coc: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.disparity.shape  # type: ignore[return-value]

    def backdrop_note(self) -> str:
        """One line on the backdrop plane the backend put in (``meta["backdrop_plane"]``), or ""."""
        plane = self.meta.get("backdrop_plane")
        if not plane:
            return ""
        return (f"backdrop: a plane over {plane['fraction']:.0%} of the image, CoC {plane['centre_coc_px']:+.2f} px at the centre, "
                f"{plane['tilt_x_px']:+.2f} / {plane['tilt_y_px']:+.2f} px across its width / height")

    @property
    def blur(self) -> np.ndarray:
        """The CoC of the blur each pixel shows (``blur_coc``, or ``coc`` where they agree)."""
        return self.coc if self.blur_coc is None else self.blur_coc

    @property
    def blur_disparity(self) -> np.ndarray:
        """``blur`` in px of disparity: the depth the renderer layers each pixel at."""
        return self.blur_disparity_at(...)

    def blur_disparity_at(self, where) -> np.ndarray:
        """``blur_disparity[where]``, dividing only the selected pixels (the focus target of every
        paint stroke reads a mask's worth, not the frame)."""
        if self.blur_coc is None:
            return self.disparity[where]
        return (self.blur_coc[where] / np.float32(self.coc_per_disparity)).astype(np.float32)

    def kernel_weights(self, y: int, x: int, top_k: int = 5) -> list[tuple[int, float]]:
        """The bank entries that make up pixel (y, x)'s kernel, as ``(index, weight)``, largest first."""
        if self.kernel_weights_topk is not None:
            idx, w = self.kernel_weights_topk
            pairs = [(int(i), float(v)) for i, v in zip(idx[y, x], w[y, x]) if v > 0]
        else:
            c = float(self.blur[y, x])
            bank = self.kernel_cocs
            hi = int(np.clip(np.searchsorted(bank, c), 1, len(bank) - 1)) if len(bank) > 1 else 0
            lo = max(hi - 1, 0)
            if len(bank) == 1 or c <= bank[0]:
                pairs = [(0, 1.0)]
            elif c >= bank[-1]:
                pairs = [(len(bank) - 1, 1.0)]
            else:
                t = (c - bank[lo]) / (bank[hi] - bank[lo])
                pairs = [(lo, 1.0 - t), (hi, t)]
        pairs = sorted((p for p in pairs if p[1] > 1e-6), key=lambda p: -p[1])[:top_k]
        total = sum(w for _, w in pairs) or 1.0
        return [(i, w / total) for i, w in pairs]

    def effective_kernels(self, y: int, x: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left, right and combined kernel at pixel (y, x): the weighted blend of its bank entries."""
        kl = np.zeros(self.kernels_left.shape[1:], np.float32)
        kr = np.zeros_like(kl)
        for i, w in self.kernel_weights(y, x, top_k=len(self.kernel_cocs)):
            kl += w * self.kernels_left[i]
            kr += w * self.kernels_right[i]
        return kl, kr, (kl + kr) / 2


Backend = Callable[..., Analysis]
_BACKENDS: dict[str, Backend] = {}
_TILING: set[str] = set()  # backends whose ``tile`` option changes how they run


def register_backend(name: str, tiles: bool = False) -> Callable[[Backend], Backend]:
    """Decorator: make ``fn(pair, **options) -> Analysis`` available as ``analyze(..., backend=name)``.

    ``tiles``: the backend runs in tiles whose size its ``tile`` option sets (others ignore it)."""

    def deco(fn: Backend) -> Backend:
        _BACKENDS[name] = fn
        (_TILING.add if tiles else _TILING.discard)(name)
        return fn

    return deco


def backend_tiles(name: str) -> bool:
    """Whether the backend's ``tile`` option has an effect (see :func:`register_backend`)."""
    return name in _TILING


def backends() -> list[str]:
    """Names of the registered backends."""
    _load_builtin_backends()
    return sorted(_BACKENDS)


def require_backend(name: str) -> None:
    """BackendError naming the registered backends unless ``name`` is one of them."""
    if name not in backends():
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(backends())}")


def _load_builtin_backends() -> None:
    from importlib.util import find_spec

    from . import classical  # noqa: F401  (registers "classical")
    from .nn import WEIGHTS_PATH

    if "network" not in _BACKENDS and WEIGHTS_PATH.is_file() and find_spec("torch") is not None:
        register_backend("network", tiles=True)(_network_backend)


def _network_backend(pair: DPPair, **options) -> Analysis:
    """``network``, imported on first use: torch and the weights take 1.3 s that classical users skip."""
    from .nn.backend import network_backend

    return network_backend(pair, **options)


#: px: the shortest side a pair may have (the classical cost window alone is 19 px across)
MIN_ANALYSIS_SIDE = 16


def analyze(pair: DPPair, backend: str = "classical", **options) -> Analysis:
    """Analyse a DP pair with a registered backend (see :func:`backends`)."""
    require_backend(backend)
    h, w = pair.shape[:2]
    if min(h, w) < MIN_ANALYSIS_SIDE:
        where = pair.left_path or pair.name
        raise BackendError(
            f"{where}: the pair is {w}x{h} px, too small to analyse; DP analysis needs at least "
            f"{MIN_ANALYSIS_SIDE} px on each side (use the uncropped views)"
        )
    from ._memory import reusing_freed_memory

    t0 = time.perf_counter()
    with reusing_freed_memory():
        result = _BACKENDS[backend](pair, **options)
    if result.photo is None:
        result.photo = pair.photo.astype(np.float32)
    result.meta.setdefault("timings", {})["total_s"] = time.perf_counter() - t0
    result.meta.update(
        {
            "backend": backend,
            "version": __version__,
            "pair_name": pair.name,
            "pair_id": pair.pair_id,
            "left_path": str(pair.left_path) if pair.left_path else None,
            "right_path": str(pair.right_path) if pair.right_path else None,
            "bit_depth": pair.bit_depth,
            "units": {"disparity": "px", "coc": "px (signed radius)", "kernel_index": "bank index"},
        }
    )
    return result


class BackendError(ValueError):
    """A backend that cannot run as asked (missing or corrupt weights, a pair too small); one actionable line."""


class AnalysisCancelled(Exception):
    """Raised inside a backend when the caller stopped listening (the user pressed Cancel)."""


def analyze_steps(pair: DPPair, backend: str = "classical", cancel=None, **options):
    """Generator form of :func:`analyze`: yields ``(fraction, message)``, returns the Analysis.

    The backend runs in a helper thread and reports through its ``progress`` callback. Setting
    ``cancel`` (a ``threading.Event``), or closing the generator, makes the backend's next progress
    call raise :class:`AnalysisCancelled`; the generator waits for the thread to end and raises it.
    """
    import queue
    import threading

    updates: queue.Queue = queue.Queue()
    cancelled = cancel if cancel is not None else threading.Event()
    outcome: dict = {}

    def progress(fraction: float, message: str) -> None:
        if cancelled.is_set():
            raise AnalysisCancelled()
        updates.put((float(fraction), message))

    def run() -> None:
        try:
            outcome["analysis"] = analyze(pair, backend=backend, progress=progress, **options)
        except BaseException as exc:  # handed to the consumer below
            outcome["error"] = exc
        finally:
            updates.put(None)

    # not a daemon: the interpreter waits for it rather than tearing numpy down under it
    thread = threading.Thread(target=run, name="dpfocus-analysis")
    thread.start()
    try:
        while True:
            try:
                item = updates.get(timeout=0.05)
            except queue.Empty:
                if cancelled.is_set():
                    break
                continue
            if item is None:
                break
            yield item
    finally:
        if thread.is_alive():
            cancelled.set()
            thread.join()
    if cancelled.is_set() and "analysis" not in outcome:
        raise AnalysisCancelled(f"analysis of {pair.name} cancelled")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["analysis"]


def save_analysis(analysis: Analysis, folder: str | Path, bit_depth: int | None = None) -> dict[str, Path]:
    """Write the CLI's analysis files (see ``ANALYSIS_FILES``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bits = int(bit_depth or analysis.meta.get("bit_depth", 16))
    bits = bits if bits in (8, 16) else 16
    out = {
        "disparity": save_map(folder / ANALYSIS_FILES["disparity"], analysis.disparity.astype(np.float32)),
        "coc": save_map(folder / ANALYSIS_FILES["coc"], analysis.coc.astype(np.float32)),
        "kernel_index": save_map(folder / ANALYSIS_FILES["kernel_index"], analysis.kernel_index.astype(np.uint16)),
        "confidence": save_map(folder / ANALYSIS_FILES["confidence"], analysis.confidence.astype(np.float32)),
        "aif": save_image(folder / ANALYSIS_FILES["aif"], analysis.aif, bits),
    }
    if analysis.photo is not None:
        out["photo"] = save_image(folder / PHOTO_FILE, analysis.photo, bits)
    if analysis.blur_coc is not None:
        out["blur_coc"] = save_map(folder / BLUR_FILE, analysis.blur_coc.astype(np.float32))
    kernels_path = folder / ANALYSIS_FILES["kernels"]
    np.savez_compressed(kernels_path, cocs=analysis.kernel_cocs, left=analysis.kernels_left, right=analysis.kernels_right)
    out["kernels"] = kernels_path
    public = {k: v for k, v in analysis.meta.items() if not k.startswith("_")}  # "_..." are in-memory caches
    record = dict(public, backend=analysis.backend, J=analysis.coc_per_disparity, files=ANALYSIS_FILES, aif_bit_depth=bits)
    record_path = folder / ANALYSIS_FILES["record"]
    record_path.write_text(json.dumps(record, indent=2, default=float))
    out["record"] = record_path
    return out


def load_analysis(folder: str | Path) -> Analysis:
    """Read back what :func:`save_analysis` (or ``dpfocus analyze``) wrote.

    DPPairError with one line naming the file and what is wrong: a missing, unreadable or
    truncated file, a record that is not the project's JSON, or maps of different sizes.
    """
    import tifffile

    from .io import DPPairError

    folder = Path(folder)
    if not folder.is_dir():
        raise DPPairError(f"{folder}: not a folder; give the folder `dpfocus analyze -o` wrote")
    missing = [name for name in ANALYSIS_FILES.values() if not (folder / name).exists()]
    if missing:
        raise DPPairError(f"{folder}: not an analysis folder (missing {', '.join(missing)}); run `dpfocus analyze` first")
    record_path = folder / ANALYSIS_FILES["record"]
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DPPairError(f"{record_path}: not readable JSON ({exc}); re-run `dpfocus analyze`") from None
    if not isinstance(record, dict) or "J" not in record or "backend" not in record:
        raise DPPairError(f"{record_path}: not an analysis record (no J or backend); re-run `dpfocus analyze`")
    if record.get("render_psf") is not None:
        try:
            render_psf_from_spec(record["render_psf"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise DPPairError(f"{record_path}: {exc}; re-run `dpfocus analyze`") from None

    def read(name: str, reader) -> np.ndarray:
        path = folder / name
        try:
            return reader(path)
        except DPPairError:
            raise
        except Exception as exc:  # tifffile / numpy raise many kinds for a truncated or foreign file
            raise DPPairError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); re-run `dpfocus analyze`") from None

    maps = {key: read(ANALYSIS_FILES[key], tifffile.imread) for key in ("disparity", "confidence", "coc", "kernel_index")}
    aif = read(ANALYSIS_FILES["aif"], lambda p: read_image(p)[0])
    try:
        with np.load(folder / ANALYSIS_FILES["kernels"]) as bank:
            cocs, left, right = bank["cocs"], bank["left"], bank["right"]
    except Exception as exc:
        raise DPPairError(f"{folder / ANALYSIS_FILES['kernels']}: not a kernel bank ({type(exc).__name__}: {exc}); re-run `dpfocus analyze`") from None
    photo = read_image(folder / PHOTO_FILE)[0] if (folder / PHOTO_FILE).exists() else None
    blur = read(BLUR_FILE, tifffile.imread) if (folder / BLUR_FILE).exists() else None
    shape = aif.shape[:2]
    for key, arr in [*maps.items(), ("photo", photo), ("blur", blur)]:
        if arr is not None and (arr.ndim < 2 or arr.shape[:2] != shape):
            name = {"photo": PHOTO_FILE, "blur": BLUR_FILE}.get(key) or ANALYSIS_FILES[key]
            size = f"{arr.shape[1]}x{arr.shape[0]}" if arr.ndim >= 2 else f"not an image (shape {arr.shape})"
            raise DPPairError(f"{folder / name}: is {size} but {ANALYSIS_FILES['aif']} is {shape[1]}x{shape[0]}; "
                              "it is damaged or from another analysis, re-run `dpfocus analyze`")
    if not (len(cocs) == len(left) == len(right)) or int(maps["kernel_index"].max(initial=0)) >= len(cocs):
        raise DPPairError(f"{folder / ANALYSIS_FILES['kernels']}: holds {len(cocs)} kernels, fewer than the kernel index uses; re-run `dpfocus analyze`")
    return Analysis(
        disparity=maps["disparity"],
        confidence=maps["confidence"],
        coc=maps["coc"],
        kernel_index=maps["kernel_index"],
        kernel_cocs=cocs,
        kernels_left=left,
        kernels_right=right,
        aif=aif,
        coc_per_disparity=float(record["J"]),
        backend=record["backend"],
        meta={k: v for k, v in record.items() if k not in ("J", "files")},
        photo=photo,
        blur_coc=blur,
    )
