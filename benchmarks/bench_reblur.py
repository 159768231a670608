"""The network's own refocus (its reblur path) on whole images and in tiles, in one run.

Prints `name: value unit` lines: seconds and peak memory of `network_refocus` at 1120x1680 whole
and in 768 px tiles, and at 2592x3888 tiled (past `WHOLE_MAX_PIXELS`, the default there) and whole, each
in its own child process that reads the views from disk (the parent renders the scenes), so its peak
RSS is the refocus's own plus torch and the views; the time to load the weights and calibrate
the reblur path (`reblur_calibration`, once per loaded network, not in the refocus's time); and
the PSNR between the tiled and whole 1120x1680 images.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _common import in_child, peak_rss_mib, read_pair, write_views

# tile: px, or None for network_refocus's own choice (a tile as large as the image runs it whole)
CASES = (("1120x1680_whole", 1120, 1680, 1680), ("1120x1680_tiled", 1120, 1680, 768), ("2592x3888_tiled", 2592, 3888, None),
         ("2592x3888_whole", 2592, 3888, 3888))


def _refocus(views: Path, tile: int | None, queue) -> None:
    from dpfocus.nn.backend import WEIGHTS_PATH, _shipped, network_refocus, reblur_calibration

    pair = read_pair(views)
    height, width = pair.shape[:2]
    mask = np.zeros((height, width), bool)
    mask[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = True
    t = time.perf_counter()
    reblur_calibration(_shipped(str(WEIGHTS_PATH)))  # once per loaded network, like the weights
    calibration = time.perf_counter() - t
    before = peak_rss_mib()
    t = time.perf_counter()
    _, image = network_refocus(pair, mask, tile=tile)
    queue.put({"seconds": time.perf_counter() - t, "peak_rss_mib": peak_rss_mib(), "load_and_calibration_s": calibration,
               "rss_before_mib": before, "image": image if height * width <= 1120 * 1680 else None})


def main() -> None:
    from dpfocus.evaluate import psnr

    images = {}
    with tempfile.TemporaryDirectory(prefix="bench_reblur_") as folder:
        for name, height, width, tile in CASES:
            r = in_child(_refocus, write_views(folder, height, width), tile)
            print(f"network_reblur_{name}: {r['seconds']:.2f} s")
            print(f"network_reblur_{name}_peak_rss: {r['peak_rss_mib']:.0f} MiB")
            print(f"network_reblur_{name}_rss_before: {r['rss_before_mib']:.0f} MiB")
            print(f"network_reblur_{name}_load_and_calibration: {r['load_and_calibration_s']:.2f} s")
            images[name] = r["image"]
    print(f"network_reblur_tiled_vs_whole_1120x1680: {psnr(images['1120x1680_tiled'], images['1120x1680_whole']):.1f} dB")


if __name__ == "__main__":
    main()
