"""The network backend at 1120x1680 RGB (DPDD size), beside the classical backend in the same run.

Prints `name: value unit` lines: parameters and multiply-accumulates of one forward pass, analysis
time and peak memory (each backend in its own child process, which reads the views from disk, so its
peak RSS is its own and not the scene renderer's), tiled against
whole-image inference (PSNR between them), and the classical analysis as the same-run reference.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _common import in_child, peak_rss_mib, read_pair, write_views


def _analyse(backend: str, views: Path, queue) -> None:
    from dpfocus.analysis import analyze

    pair = read_pair(views)
    before = peak_rss_mib()
    t = time.perf_counter()
    if backend == "network":  # once per process (the viewer keeps it): import torch, load the weights
        from dpfocus.nn.backend import WEIGHTS_PATH, _shipped

        _shipped(str(WEIGHTS_PATH))
    load = time.perf_counter() - t
    t = time.perf_counter()
    analysis = analyze(pair, backend=backend)
    queue.put({"seconds": time.perf_counter() - t, "load_seconds": load, "timings": analysis.meta.get("timings", {}),
               "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before})


def main() -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dpfocus.evaluate import psnr
    from dpfocus.nn.backend import DEFAULT_TILE, load_network, run_network

    net = load_network()
    x = torch.rand(1, 3, 1120, 1680)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, x)
    print(f"network_parameters: {sum(p.numel() for p in net.parameters()) / 1e6:.3f} M")
    print(f"network_gmac_1120x1680: {counter.get_total_flops() / 2e9:.1f} GMAC")
    with tempfile.TemporaryDirectory(prefix="bench_network_") as folder:
        views = write_views(folder, 1120, 1680)
        for backend in ("network", "classical"):
            r = in_child(_analyse, backend, views)
            print(f"{backend}_analysis_1120x1680: {r['seconds']:.2f} s")
            if backend == "network":
                print(f"network_import_and_load_once_per_process: {r['load_seconds']:.2f} s")
                for step, seconds in r["timings"].items():  # the analysis's own steps
                    if step != "total_s":
                        print(f"network_analysis_step_{step[:-2]}: {seconds:.2f} s")
            print(f"{backend}_analysis_peak_rss: {r['peak_rss_mib']:.0f} MiB")
            print(f"{backend}_analysis_rss_before: {r['rss_before_mib']:.0f} MiB")
        pair = read_pair(views)
    t = time.perf_counter()
    whole = run_network(net, pair.left, pair.right, tile=None)
    t_whole = time.perf_counter() - t
    t = time.perf_counter()
    tiled = run_network(net, pair.left, pair.right, tile=DEFAULT_TILE)
    t_tiled = time.perf_counter() - t
    print(f"network_whole_image_forward: {t_whole:.2f} s")
    print(f"network_tiled_forward_tile{DEFAULT_TILE}: {t_tiled:.2f} s")
    print(f"network_tiled_vs_whole_aif_psnr: {psnr(tiled['aif'], whole['aif']):.1f} dB")
    print(f"network_tiled_vs_whole_disparity_max_abs_diff: {np.abs(tiled['disparity'] - whole['disparity']).max():.4f} px")


if __name__ == "__main__":
    main()
