"""The README's figures that are not window screenshots, from the bundled samples (Qt-free).

    .venv/bin/python scripts/make_figures.py docs/images

* ``analysis_garden.png``: captured photo, full-quality refocus on the largest object, ground-truth
  disparity; then each backend's estimated disparity, kernel index and all-in-focus image.
* ``sample_workshop.png``: left view, red/cyan anaglyph of the views, ground-truth all-in-focus
  image and disparity.
* ``network_spill.png``: refocusing with the network's maps, its blur map without and with a
  blurred foreground's spill (``optics.foreground_spill``).
* ``network_deconvolution.png``: the network's all-in-focus image alone and blended with the
  deconvolution on its own maps.

Window screenshots come from ``scripts/make_screenshots.py`` (docks) and ``dpfocus demo --headless``
(the whole demo window).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _grid(panels: list[list[tuple[np.ndarray, str]]], path: Path, width: float = 15.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(panels), max(len(r) for r in panels)
    h, w = panels[0][0][0].shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(width, width * rows * h / (cols * w) + 0.35 * rows), squeeze=False)
    for ax_row, row in zip(axes, panels):
        for ax, (img, title) in zip(ax_row, row):
            ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=10)
            ax.axis("off")
        for ax in ax_row[len(row):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(path)


def analysis_figure(out: Path, sample: str = "garden") -> None:
    from dpfocus.analysis import analyze, backends
    from dpfocus.demo import demo_results, disparity_to_rgb
    from dpfocus.evaluate import spearman
    from dpfocus.samples import load_ground_truth

    gt = load_ground_truth(sample)
    pair, _, d_trg, refocused = demo_results(sample)
    limit = float(np.abs(gt["disparity"]).max())
    rows = [[(pair.combined if pair.combined is not None else (pair.left + pair.right) / 2, "captured photo"),
             (refocused, f"refocused on the largest object (d_trg {d_trg:+.2f} px)"),
             (disparity_to_rgb(gt["disparity"], limit), "ground-truth disparity")]]
    for backend in backends():
        a = analyze(pair, backend=backend)
        index = a.kernel_index.astype(np.float32) / max(len(a.kernel_cocs) - 1, 1)
        rows.append([(disparity_to_rgb(a.disparity * _scale(a.disparity, gt["disparity"]), limit),
                      f"{backend}: disparity (Spearman {spearman(a.disparity, gt['disparity']):.2f})"),
                     (index, f"{backend}: kernel index (0..{len(a.kernel_cocs) - 1})"),
                     (a.aif, f"{backend}: all-in-focus")])
    _grid(rows, out / f"analysis_{sample}.png")


def _scale(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Least-squares scale of an estimate onto the truth, so both share one colour scale."""
    return float((estimate * truth).sum() / max((estimate * estimate).sum(), 1e-9))


def spill_figure(out: Path, seed: int = 500006, label: int = 2) -> None:
    """``network_spill.png``: a generated scene (a network tuning seed) refocused with the network's
    maps on its nearest, most blurred object, with the backend's blur map as it was before
    ``foreground_spill`` and as it is."""
    import dpfocus.nn.backend as network
    from dpfocus.analysis import analyze
    from dpfocus.demo import disparity_to_rgb
    from dpfocus.evaluate import psnr
    from dpfocus.io import DPPair
    from dpfocus.refocus import focus_disparity, render_refocus
    from dpfocus.scenes import SceneConfig, generate_scene

    scene = generate_scene(seed, SceneConfig(height=384, width=576))
    pair = DPPair.from_arrays(scene.left, scene.right, name=str(seed))
    pair.combined = scene.combined
    spill = network.foreground_spill
    network.foreground_spill = lambda coc: coc  # the backend without the spill, for the "before" row
    try:
        before = analyze(pair, backend="network")
    finally:
        network.foreground_spill = spill
    after = analyze(pair, backend="network")
    mask, target = scene.labels == label, scene.refocused[label]
    limit = float(np.abs(scene.disparity).max())
    rows = []
    for analysis, name in ((before, "blur map without the spill"), (after, "blur map with the spill")):
        img = render_refocus(analysis, focus_disparity(analysis, mask=mask))
        rows.append([(disparity_to_rgb(analysis.blur_disparity, limit), f"network: {name}"),
                     (img, f"refocused on the near object ({psnr(img, target):.2f} dB)"),
                     (np.clip(np.abs(img - target).mean(axis=2) * 8, 0, 1), "error x8 against the true refocus")])
    _grid(rows, out / "network_spill.png")


def blend_figure(out: Path, sample: str = "workshop") -> None:
    """``network_deconvolution.png``: the network's all-in-focus image alone and blended with the
    deconvolution on its own maps (``nn.backend.deconvolution_share``), beside the truth."""
    import dpfocus.nn.backend as network
    from dpfocus.analysis import analyze
    from dpfocus.evaluate import psnr
    from dpfocus.samples import load_ground_truth, load_sample

    pair, gt = load_sample(sample), load_ground_truth(sample)["aif"]
    blended = analyze(pair, backend="network")
    share = network.deconvolution_share(blended.blur)
    shipped = network.DECONV_SHARE
    network.DECONV_SHARE = ((np.inf, 0.0),)  # the network's own image, for comparison
    try:
        alone = analyze(pair, backend="network")
    finally:
        network.DECONV_SHARE = shipped
    h, w = share.shape
    crop = (slice(h // 4, h // 4 + h // 2), slice(w // 4, w // 4 + w // 2))
    _grid([[(pair.combined[crop], f"captured photo ({psnr(pair.combined, gt):.2f} dB)"),
            (alone.aif[crop], f"network alone ({psnr(alone.aif, gt):.2f} dB)"),
            (blended.aif[crop], f"network + deconvolution ({psnr(blended.aif, gt):.2f} dB)")],
           [(gt[crop], "ground truth"), (share[crop], "deconvolution's share (black 0, white 1)"),
            (np.clip(np.abs(blended.aif - alone.aif)[crop].mean(axis=2) * 8, 0, 1), "what the blend changed, x8")]],
          out / "network_deconvolution.png", width=13.0)


def sample_figure(out: Path, sample: str = "workshop") -> None:
    from dpfocus.demo import anaglyph, disparity_to_rgb
    from dpfocus.samples import load_ground_truth, load_sample

    pair, gt = load_sample(sample), load_ground_truth(sample)
    _grid([[(pair.left, "left view"), (anaglyph(pair.left, pair.right), "anaglyph (red: left, cyan: right)")],
           [(gt["aif"], "ground-truth all-in-focus"), (disparity_to_rgb(gt["disparity"]), "ground-truth disparity")]],
          out / f"sample_{sample}.png", width=11.0)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
    target.mkdir(parents=True, exist_ok=True)
    analysis_figure(target)
    sample_figure(target)
    blend_figure(target)
    spill_figure(target)
