"""Compare network weights files on the tuning scenes (never the benchmark's), side by side.

    python scripts/compare_weights.py OLD.pt NEW.pt [--first 500000] [--scenes 24] [--size 384 576]
        [--psf-variety 0 1] [--featureless 0]

For each scene set (one per ``--psf-variety`` value) and each weights file it prints ``name: value
unit`` lines: the mean disparity Spearman and all-in-focus gain over the input, and for the last
file against the first the per-scene change (worst and best), which is what a stage is chosen on.
"""

from __future__ import annotations

import argparse

import numpy as np

from dpfocus.analysis import analyze
from dpfocus.evaluate import psnr, spearman
from dpfocus.io import DPPair
from dpfocus.scenes import SceneConfig, generate_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="weights files; the first is the baseline")
    parser.add_argument("--first", type=int, default=500_000, help="first tuning seed (the network's: 500000+)")
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=[384, 576])
    parser.add_argument("--psf-variety", type=float, nargs="+", default=[0.0], help="one scene set per value")
    parser.add_argument("--featureless", type=float, default=0.0)
    args = parser.parse_args()
    for variety in args.psf_variety:
        rows = {w: [] for w in args.weights}
        for seed in range(args.first, args.first + args.scenes):
            config = SceneConfig(height=args.size[0], width=args.size[1], with_refocus=False, featureless_probability=args.featureless,
                                 psf_variety=variety)
            scene = generate_scene(seed, config)
            pair = DPPair.from_arrays(scene.left, scene.right, name=str(seed))
            pair.combined = scene.combined
            base = psnr(scene.combined, scene.aif)
            for w in args.weights:
                a = analyze(pair, backend="network", weights=w)
                rows[w].append((spearman(a.disparity, scene.disparity), psnr(a.aif, scene.aif) - base))
        tag = f"variety{variety:g}_featureless{args.featureless:g}"
        for i, w in enumerate(args.weights):
            r = np.array(rows[w])
            print(f"{tag}_weights{i}_spearman: {r[:, 0].mean():.4f}")
            print(f"{tag}_weights{i}_aif_gain: {r[:, 1].mean():.3f} dB")
        if len(args.weights) > 1:
            delta = np.array(rows[args.weights[-1]]) - np.array(rows[args.weights[0]])
            print(f"{tag}_spearman_change_worst_best: {delta[:, 0].min():+.3f} {delta[:, 0].max():+.3f}")
            print(f"{tag}_aif_gain_change_worst_best: {delta[:, 1].min():+.3f} {delta[:, 1].max():+.3f} dB")


if __name__ == "__main__":
    main()
