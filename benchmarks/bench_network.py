"""The network backend at 1120x1680 RGB (DPDD size), beside the classical backend in the same run.

Prints `name: value unit` lines: parameters and multiply-accumulates of one forward pass, analysis
time and peak memory (each backend in its own child process, so peak RSS is its own), tiled against
whole-image inference (PSNR between them), and the classical analysis as the same-run reference.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time

import numpy as np


def _pair():
    from dpfocus.io import DPPair
    from dpfocus.scenes import SceneConfig, generate_scene

    scene = generate_scene(123, SceneConfig(height=1120, width=1680, with_refocus=False))
    return DPPair.from_arrays(scene.left, scene.right, name="bench")


def _analyse(backend: str, queue) -> None:
    from dpfocus.analysis import analyze

    pair = _pair()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    if backend == "network":  # once per process (the viewer keeps it): import torch, load the weights
        from dpfocus.nn.backend import WEIGHTS_PATH, _shipped

        _shipped(str(WEIGHTS_PATH))
    load = time.perf_counter() - t
    t = time.perf_counter()
    analyze(pair, backend=backend)
    queue.put({"seconds": time.perf_counter() - t, "load_seconds": load,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mib": before})


def _in_child(backend: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_analyse, args=(backend, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


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
    for backend in ("network", "classical"):
        r = _in_child(backend)
        print(f"{backend}_analysis_1120x1680: {r['seconds']:.2f} s")
        if backend == "network":
            print(f"network_import_and_load_once_per_process: {r['load_seconds']:.2f} s")
        print(f"{backend}_analysis_peak_rss: {r['peak_rss_mib']:.0f} MiB")
    pair = _pair()
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
