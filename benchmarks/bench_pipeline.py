"""Analysis and refocus at 1120x1680 RGB (DPDD size), beside same-run references.

Prints `name: value unit` lines (a 12-plane focus sweep too). References: one full-frame copy (the memory-bandwidth floor of a
preview update) and one full-frame FFT disk blur, median of five (the unit of work of the full-quality render).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from _common import peak_rss_mib, reset_peak_rss

from dpfocus.analysis import analyze
from dpfocus.io import DPPair
from dpfocus.optics import DPPSF, fft_convolve
from dpfocus.refocus import RefocusPreview, focus_sweep, render_refocus, sweep_disparities
from dpfocus.scenes import SceneConfig, generate_scene


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    h, w = 1120, 1680
    scene = generate_scene(123, SceneConfig(height=h, width=w, with_refocus=False))
    pair = DPPair.from_arrays(scene.left, scene.right, name="bench")
    pair.combined = scene.combined
    # the peak while analysing, on top of the scene already in memory (its renderer peaks higher)
    reset_peak_rss()
    rss_before = peak_rss_mib()
    analysis, t_analysis = timed(lambda: analyze(pair))
    rss_peak = peak_rss_mib()
    img = scene.combined
    copies = []
    for _ in range(20):
        _, t = timed(lambda: img.copy())
        copies.append(t)
    blur_kernel = DPPSF().combined_kernel(8.0)
    t_blur = statistics.median(timed(lambda: fft_convolve(img.transpose(2, 0, 1), [blur_kernel]))[1] for _ in range(5))
    preview, t_prepare = timed(lambda: RefocusPreview(analysis))
    d = analysis.disparity
    targets = np.linspace(np.percentile(d, 5), np.percentile(d, 95), 50)
    latencies = []
    for i, d_trg in enumerate(targets):
        _, t = timed(lambda: preview.render(float(d_trg), strength=0.5 + (i % 5) * 0.25))
        latencies.append(t)
    # this machine is shared: the median of three renders (and of five reference blurs)
    full = [timed(lambda: render_refocus(analysis, float(np.median(d))))[1] for _ in range(3)]
    t_full = statistics.median(full)
    # a focus sweep of 12 planes with the prepared preview (what the dock's button does), beside 12
    # single preview updates
    planes = sweep_disparities(analysis, 12)
    _, t_sweep = timed(lambda: np.stack([img for _, img in focus_sweep(analysis, planes, preview=preview)]))
    print(f"reference_copy_1120x1680_rgb: {statistics.median(copies) * 1000:.1f} ms")
    print(f"reference_fft_blur_1120x1680_rgb: {t_blur * 1000:.0f} ms")
    print(f"classical_analysis_1120x1680: {t_analysis:.2f} s")
    print(f"classical_analysis_peak_rss: {rss_peak:.0f} MiB")
    print(f"classical_analysis_rss_before: {rss_before:.0f} MiB")
    print(f"refocus_preview_prepare: {t_prepare * 1000:.0f} ms")
    print(f"refocus_preview_update_median: {statistics.median(latencies) * 1000:.1f} ms")
    print(f"refocus_preview_update_ratio_to_copy: {statistics.median(latencies) / statistics.median(copies):.1f} x")
    print(f"focus_sweep_12_preview_planes: {t_sweep * 1000:.0f} ms")
    print(f"focus_sweep_ratio_to_12_preview_updates: {t_sweep / (12 * statistics.median(latencies)):.2f} x")
    print(f"refocus_full_quality_median_of_3: {t_full:.2f} s")
    print(f"refocus_full_quality_range: {min(full):.2f}-{max(full):.2f} s")
    print(f"refocus_full_quality_ratio_to_fft_blur: {t_full / t_blur:.1f} x")


if __name__ == "__main__":
    main()
