"""Re-render the bundled sample DP scenes into src/dpfocus/sample_data/ (fixed seeds)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dpfocus.samples import SAMPLES, write_sample

ROOT = Path(__file__).resolve().parents[1] / "src" / "dpfocus" / "sample_data"

if __name__ == "__main__":
    names = sys.argv[1:] or list(SAMPLES)
    for name in names:
        seed, config = SAMPLES[name]
        t = time.perf_counter()
        scene = write_sample(ROOT / name, name, seed, config)
        print(f"{name}: {config.width}x{config.height}, focus {scene.meta['focus_placement']}, "
              f"CoC [{scene.coc.min():.1f}, {scene.coc.max():.1f}] px, {len(scene.objects)} objects, "
              f"{time.perf_counter() - t:.2f} s")
