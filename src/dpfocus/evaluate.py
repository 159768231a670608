"""Public benchmark: held-out synthetic scenes (fixed seeds, never used for tuning) and DPDD folders.

Per backend it reports disparity Spearman |rho| and affine-invariant L1 error (px) against ground
truth, all-in-focus PSNR/SSIM beside the input's own, refocus PSNR/SSIM against the ground-truth
refocused image beside the do-nothing baseline (the captured photo), and timings. It also checks
the renderer alone: ground-truth AIF + disparity rendered with the scene's PSF against the
ground-truth refocused images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .analysis import Analysis, analyze, require_backend
from .analysis import backends as available_backends
from .classical import deconvolve_aif, kernel_bank
from .io import DPPair, list_pairs, load_pair
from .refocus import focus_disparity, render_refocus
from .scenes import SceneConfig, generate_scene

__all__ = ["HELD_OUT_SEED", "ground_truth_analysis", "deconvolution_bound", "psnr", "ssim", "affine_l1", "spearman", "evaluate", "format_report"]

HELD_OUT_SEED = 900_000  # benchmark scenes use seeds HELD_OUT_SEED + i; training and tuning never do
MIN_OBJECT_PIXELS = 400


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2 if a.ndim == 3 else None))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    step = max(1, a.size // 200_000)
    return float(abs(spearmanr(a.ravel()[::step], b.ravel()[::step]).correlation))


def affine_l1(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean |a * estimate + b - truth| after the least-squares affine fit (scale/offset free)."""
    x = estimate.ravel().astype(np.float64)
    y = truth.ravel().astype(np.float64)
    a, b = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, y.mean())
    return float(np.mean(np.abs(a * x + b - y)))


def _scene_rows(backend: str, n_scenes: int, size: tuple[int, int], featureless: float = 0.0) -> list[dict]:
    rows = []
    for i in range(n_scenes):
        scene = generate_scene(HELD_OUT_SEED + i, SceneConfig(height=size[0], width=size[1], featureless_probability=featureless))
        pair = DPPair.from_arrays(scene.left, scene.right, name=f"scene{i}")
        pair.combined = scene.combined
        t = time.perf_counter()
        analysis = analyze(pair, backend=backend)
        seconds = time.perf_counter() - t
        truth_analysis = ground_truth_analysis(scene)
        row = {
            "scene": i,
            "spearman": spearman(analysis.disparity, scene.disparity),
            "affine_l1_px": affine_l1(analysis.disparity, scene.disparity),
            "disparity_over_2px": float((np.abs(analysis.disparity - scene.disparity) > 2.0).mean()),
            "aif_psnr": psnr(analysis.aif, scene.aif),
            "aif_ssim": ssim(analysis.aif, scene.aif),
            "input_psnr": psnr(scene.combined, scene.aif),
            "input_ssim": ssim(scene.combined, scene.aif),
            "deconvolution_gt_psnr": psnr(deconvolution_bound(truth_analysis, scene), scene.aif),
            "analysis_s": seconds,
        }
        refocus, nothing, renderer, refocus_ssim, nothing_ssim, own = [], [], [], [], [], []
        for obj in scene.objects:
            mask = scene.labels == obj["label"]
            if mask.sum() < MIN_OBJECT_PIXELS:
                continue
            target = scene.refocused[obj["label"]]
            img = render_refocus(analysis, focus_disparity(analysis, mask=mask))
            refocus.append(psnr(img, target))
            refocus_ssim.append(ssim(img, target))
            nothing.append(psnr(scene.combined, target))
            nothing_ssim.append(ssim(scene.combined, target))
            # the renderer alone: at the target's own d_trg, the true mean over the whole object (the
            # interior's mean, which focus_disparity takes from an estimated map, differs on tilted objects)
            renderer.append(psnr(render_refocus(truth_analysis, float(truth_analysis.disparity[mask].mean())), target))
            if backend == "network":  # the network's own refocus: its reblur path with target kernels
                from .nn.backend import network_refocus

                own.append(psnr(network_refocus(pair, mask)[1], target))
        if refocus:
            row.update(
                refocus_psnr=float(np.mean(refocus)),
                refocus_ssim=float(np.mean(refocus_ssim)),
                nothing_psnr=float(np.mean(nothing)),
                nothing_ssim=float(np.mean(nothing_ssim)),
                renderer_gt_psnr=float(np.mean(renderer)),
            )
            if own:
                row["reblur_refocus_psnr"] = float(np.mean(own))
        rows.append(row)
    return rows


def ground_truth_analysis(scene) -> Analysis:
    """An Analysis holding the scene's true AIF, disparity and PSF (checks the renderer alone)."""
    cocs, left, right = kernel_bank(scene.psf, float(np.abs(scene.coc).max()) * 2 + 1)
    return Analysis(
        disparity=scene.disparity,
        confidence=np.ones_like(scene.disparity),
        coc=scene.coc,
        kernel_index=np.zeros(scene.coc.shape, np.uint16),
        kernel_cocs=cocs,
        kernels_left=left,
        kernels_right=right,
        aif=scene.aif,
        coc_per_disparity=scene.coc_per_disparity,
        backend="ground truth",
    )


def deconvolution_bound(truth: Analysis, scene) -> np.ndarray:
    """The classical deconvolution of the scene's views given its true CoC map and PSF bank
    (``truth`` from :func:`ground_truth_analysis`; checks the deconvolver alone: how far a perfect
    map would take the all-in-focus image)."""
    return deconvolve_aif(scene.left, scene.right, truth.coc.astype(np.float32), truth.kernel_cocs, truth.kernels_left, truth.kernels_right)


def _dpdd_rows(backend: str, folder: str | Path) -> list[dict]:
    rows = []
    for left, right, name, _ in list_pairs(folder):
        pair = load_pair(left, right)
        if pair.target is None:
            continue
        t = time.perf_counter()
        analysis = analyze(pair, backend=backend)
        combined = pair.photo
        rows.append(
            {
                "pair": name,
                "aif_psnr": psnr(analysis.aif, pair.target),
                "aif_ssim": ssim(analysis.aif, pair.target),
                "input_psnr": psnr(combined, pair.target),
                "input_ssim": ssim(combined, pair.target),
                "analysis_s": time.perf_counter() - t,
            }
        )
    return rows


def _mean(rows: list[dict]) -> dict:
    keys = sorted({k for r in rows for k in r if isinstance(r[k], float)})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def evaluate(
    backends: list[str] | None = None,
    n_scenes: int = 8,
    dpdd: str | Path | None = None,
    size: tuple[int, int] = (384, 576),
    featureless: float = 0.0,
) -> dict:
    """Run the benchmark; returns ``{backend: {"synthetic": means, "scenes": rows, "dpdd": ...}}``.

    ``featureless`` > 0 draws the same held-out seeds with featureless surfaces (each surface one flat
    colour with that chance: sky, plain walls, blown highlights), a different set of scenes.
    """
    for backend in backends or []:  # all of them before the first one runs
        require_backend(backend)
    report = {}
    for backend in backends or available_backends():
        rows = _scene_rows(backend, n_scenes, size, featureless)
        entry = {"synthetic": _mean(rows), "scenes": rows}
        if dpdd:
            drows = _dpdd_rows(backend, dpdd)
            entry["dpdd"] = {"mean": _mean(drows), "pairs": drows}
        report[backend] = entry
    return report


def format_report(report: dict) -> str:
    """``name: value unit`` lines, one block per backend."""
    units = {"spearman": "", "affine_l1_px": "px", "analysis_s": "s", "disparity_over_2px": "(fraction)"}
    lines = []
    for backend, entry in report.items():
        for key, value in entry["synthetic"].items():
            unit = units.get(key, "dB" if "psnr" in key else "")
            lines.append(f"{backend}_synthetic_{key}: {value:.4f} {unit}".rstrip())
        if "dpdd" in entry:
            for key, value in entry["dpdd"]["mean"].items():
                unit = units.get(key, "dB" if "psnr" in key else "")
                lines.append(f"{backend}_dpdd_{key}: {value:.4f} {unit}".rstrip())
    return "\n".join(lines)
