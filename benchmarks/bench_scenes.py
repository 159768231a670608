"""Scene generator / layered DP renderer speed at 512x768, beside a same-run reference.

Prints `name: value unit` lines. The reference is one FFT disk blur (3 channels) of the same frame,
so the ratio shows how many full-frame blurs one scene costs.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from dpfocus.optics import DPPSF, fft_convolve
from dpfocus.scenes import SceneConfig, generate_scene


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(repeats: int = 7) -> None:
    h, w = 512, 768
    generate_scene(0, SceneConfig(height=h, width=w))  # warm caches (textures, kernels)
    img = np.random.default_rng(0).random((3, h, w), dtype=np.float32)
    kernel = DPPSF().kernels(8.0)[0]
    ref = median_time(lambda: fft_convolve(img, [kernel]), repeats)
    seeds = iter(range(1, 10_000))
    views = median_time(lambda: generate_scene(next(seeds), SceneConfig(height=h, width=w, with_refocus=False)), repeats)
    full = median_time(lambda: generate_scene(next(seeds), SceneConfig(height=h, width=w)), repeats)
    print(f"reference_fft_blur_512x768_rgb: {ref * 1000:.1f} ms")
    print(f"scene_512x768_dp_pair: {views * 1000:.0f} ms")
    print(f"scene_512x768_dp_pair_ratio_to_reference: {views / ref:.1f} x")
    print(f"scene_512x768_with_refocus_ground_truth: {full * 1000:.0f} ms")


if __name__ == "__main__":
    main()
