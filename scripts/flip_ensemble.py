"""What test-time compute buys the all-in-focus image: the shipped network alone, and averaged over
DP-valid flips of its input (2x and 4x the compute), on tuning scenes (never the benchmark's seeds).

A mirrored pair stays a DP pair once its views are swapped (``K_R = flip(K_L)``), with the same
signed CoC; a vertical flip keeps the views (the PSF is vertically symmetric). Prints
``name: value unit`` lines (gain = all-in-focus PSNR minus the input's, mean over the scenes).

    .venv/bin/python scripts/flip_ensemble.py --first 500000 --scenes 24
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from dpfocus.evaluate import HELD_OUT_SEED, psnr
    from dpfocus.nn.backend import load_network, run_network
    from dpfocus.scenes import SceneConfig, generate_scene

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=500_000, help="first scene seed (tuning seeds; not the benchmark's)")
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--size", type=int, nargs=2, default=(384, 576), metavar=("H", "W"))
    ap.add_argument("--weights", default=None, help="weights file (default: the shipped ones)")
    args = ap.parse_args()
    if args.scenes < 1:
        ap.error(f"--scenes {args.scenes}: give at least 1")
    if args.first + args.scenes > HELD_OUT_SEED and args.first < HELD_OUT_SEED + 100_000:
        ap.error(f"seeds {args.first}-{args.first + args.scenes - 1} reach the benchmark's ({HELD_OUT_SEED}+); choose tuning seeds")
    net = load_network(args.weights)

    def aif(left: np.ndarray, right: np.ndarray, mirror: bool, upside_down: bool) -> np.ndarray:
        flip = (lambda a: a[::-1] if upside_down else a)
        flip2 = (lambda a: flip(a[:, ::-1]) if mirror else flip(a))
        views = (flip2(right), flip2(left)) if mirror else (flip2(left), flip2(right))
        out = run_network(net, *(np.ascontiguousarray(v) for v in views), tile=None)["aif"]
        return flip2(out)

    gains = {"one pass": [], "mirrored pass": [], "2 passes": [], "4 passes": []}
    for seed in range(args.first, args.first + args.scenes):
        scene = generate_scene(seed, SceneConfig(height=args.size[0], width=args.size[1], with_refocus=False))
        rgb = (lambda a: np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a)
        left, right = rgb(scene.left).astype(np.float32), rgb(scene.right).astype(np.float32)
        passes = [aif(left, right, m, u) for u in (False, True) for m in (False, True)]
        final = (lambda a: np.clip(a, 0, 1).mean(2) if scene.left.ndim == 2 else np.clip(a, 0, 1))
        base = psnr(scene.combined, scene.aif)
        for name, image in (("one pass", passes[0]), ("mirrored pass", passes[1]), ("2 passes", (passes[0] + passes[1]) / 2),
                            ("4 passes", sum(passes) / 4)):
            gains[name].append(psnr(final(image), scene.aif) - base)
    for name, values in gains.items():
        print(f"aif gain, {name}: {np.mean(values):+.3f} dB")


if __name__ == "__main__":
    main()
