"""Surface smoothing (`optics.range_smooth`) of a 24 MP CoC map, the largest map either backend
smooths at full resolution, beside a same-run reference: one Gaussian blur of the same map.

Prints `name: value unit` lines: time and peak traced memory above the inputs. The map is 92 MiB
(float32), so a peak near that size means the smoothing's temporaries do not grow with the image.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np


def _timed(fn) -> tuple[float, float]:
    tracemalloc.start()
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    from scipy.ndimage import gaussian_filter

    from dpfocus.optics import SURFACE_SMOOTH_FRACTION, range_smooth

    h, w = 4000, 6000
    rng = np.random.default_rng(0)
    cols = np.arange(w, dtype=np.float32) / w
    coc = (6 * cols[None, :] - 3 + rng.normal(0, 0.3, (h, w))).astype(np.float32)
    coc[h // 3 : h // 2, w // 4 : w // 2] += 8
    confidence = rng.random((h, w), dtype=np.float32)
    print(f"map_size: {coc.nbytes / 2**20:.0f} MiB")
    seconds, peak = _timed(lambda: range_smooth(coc, confidence, SURFACE_SMOOTH_FRACTION * w, 0.75))
    print(f"range_smooth_24mp_time: {seconds:.2f} s")
    print(f"range_smooth_24mp_peak: {peak:.0f} MiB")
    seconds, peak = _timed(lambda: gaussian_filter(coc, 4.0))
    print(f"reference_gaussian_blur_24mp_time: {seconds:.2f} s")
    print(f"reference_gaussian_blur_24mp_peak: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
