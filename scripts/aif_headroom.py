"""Where the all-in-focus target's missing decibels would have to come from (reporting only).

On the benchmark scenes (``dpfocus evaluate``'s: seeds 900000+, never used to choose anything),
the backend's all-in-focus PSNR, and the same image with every pixel within R px of a surface's
outline replaced by the truth: the most that better object edges alone could give. With
``--breakdown``, also where the squared error lies: its share and the gain over the input by the
true |CoC| and the distance to the nearest outline. Prints ``name: value unit`` lines (PSNR as
means over the scenes, as ``dpfocus evaluate`` reports it; the breakdown pooled over them).

    .venv/bin/python scripts/aif_headroom.py --scenes 6 --backend network [--breakdown]
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
    ap.add_argument("--breakdown", action="store_true", help="also the squared error by |CoC| and distance to an outline")
    args = ap.parse_args()
    if args.scenes < 1 or min(args.radii) < 1:
        ap.error("give --scenes >= 1 and radii >= 1")
    coc_edges, far_edges = (0, 2, 4, 8, 12, np.inf), (0, 4, 16, np.inf)
    error, error_in = (np.zeros((len(coc_edges) - 1, len(far_edges) - 1)) for _ in range(2))
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
        if args.breakdown:
            cells = (np.digitize(np.abs(scene.coc), coc_edges[1:-1]), np.digitize(ndimage.distance_transform_edt(~outline), far_edges[1:-1]))
            for total, image in ((error, aif), (error_in, scene.combined)):
                squared = (image - scene.aif) ** 2
                np.add.at(total, cells, squared.mean(axis=2) if squared.ndim == 3 else squared)
    for name in rows[0]:
        print(f"{name}: {np.mean([r[name] for r in rows]):.2f} {'%' if name.startswith('pixels') else 'dB'}")
    if args.breakdown:
        span = lambda edges, j: f"{edges[j]:g}-{edges[j + 1]:g} px" if np.isfinite(edges[j + 1]) else f"{edges[j]:g}+ px"  # noqa: E731
        for a in range(error.shape[0]):
            for b in range(error.shape[1]):
                cell = f"|CoC| {span(coc_edges, a)}, {span(far_edges, b)} from an outline"
                print(f"squared error share, {cell}: {100 * error[a, b] / error.sum():.1f} %")
                if error[a, b] > 0:
                    print(f"gain over the input, {cell}: {10 * np.log10(error_in[a, b] / error[a, b]):.2f} dB")


if __name__ == "__main__":
    main()
