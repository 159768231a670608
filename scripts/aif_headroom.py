"""Where the all-in-focus target's missing decibels would have to come from (reporting only).

On the benchmark scenes (``dpfocus evaluate``'s: seeds 900000+, never used to choose anything),
the backend's all-in-focus PSNR, and the same image with every pixel within R px of a surface's
outline replaced by the truth: the most that better object edges alone could give. Prints
``name: value unit`` lines (means over the scenes, as ``dpfocus evaluate`` reports PSNR).

    .venv/bin/python scripts/aif_headroom.py --scenes 6 --backend network
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from scipy import ndimage

    from dpfocus.analysis import analyze
    from dpfocus.evaluate import HELD_OUT_SEED, psnr
    from dpfocus.io import DPPair
    from dpfocus.scenes import SceneConfig, generate_scene

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--backend", default="network")
    ap.add_argument("--radii", type=int, nargs="+", default=(4, 8), help="px around each outline made perfect")
    args = ap.parse_args()
    if args.scenes < 1 or min(args.radii) < 1:
        ap.error("give --scenes >= 1 and radii >= 1")
    rows = []
    for i in range(args.scenes):
        scene = generate_scene(HELD_OUT_SEED + i, SceneConfig(height=384, width=576))
        aif = np.clip(analyze(DPPair.from_arrays(scene.left, scene.right, name=str(i)), backend=args.backend).aif, 0, 1)
        outline = np.zeros(scene.labels.shape, bool)
        outline[:, 1:] |= scene.labels[:, 1:] != scene.labels[:, :-1]
        outline[1:] |= scene.labels[1:] != scene.labels[:-1]
        row = {"input psnr": psnr(scene.combined, scene.aif), "aif psnr": psnr(aif, scene.aif)}
        for radius in args.radii:
            near = ndimage.binary_dilation(outline, iterations=radius)
            perfect = np.where(near[..., None] if aif.ndim == 3 else near, scene.aif, aif)
            row[f"aif psnr, outlines perfect within {radius} px"] = psnr(perfect, scene.aif)
            row[f"pixels within {radius} px of an outline"] = 100 * float(near.mean())
        rows.append(row)
    for name in rows[0]:
        print(f"{name}: {np.mean([r[name] for r in rows]):.2f} {'%' if name.startswith('pixels') else 'dB'}")


if __name__ == "__main__":
    main()
