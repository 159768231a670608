"""What the benchmarks share: the scene's views on disk (for child processes) and peak memory."""

from __future__ import annotations

import multiprocessing as mp
import resource
from pathlib import Path

import numpy as np


def write_views(folder: str | Path, height: int, width: int, seed: int = 123) -> Path:
    """Render the benchmark scene once (in the parent) and keep its views in ``folder``, so a child
    that reads them measures its own work's memory, not the renderer's."""
    from dpfocus.scenes import SceneConfig, generate_scene

    path = Path(folder) / f"views_{seed}_{height}x{width}.npz"
    if not path.exists():
        scene = generate_scene(seed, SceneConfig(height=height, width=width, with_refocus=False))
        np.savez(path, left=scene.left, right=scene.right)
    return path


def in_child(target, *args) -> dict:
    """``target(*args, queue)`` in a fresh (spawned) process; what it puts on the queue. Its peak
    memory is then its own (see :func:`peak_rss_mib`)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def read_pair(path: str | Path):
    from dpfocus.io import DPPair

    views = np.load(path)
    return DPPair.from_arrays(views["left"], views["right"], name="bench")


def reset_peak_rss() -> None:
    """Start this process's peak memory afresh (Linux: clear_refs 5), so the next reading is the
    peak of what runs after, on top of what is already resident."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """This process's own peak resident memory, MiB.

    Read from ``VmHWM``: ``ru_maxrss`` is carried over fork and exec on Linux, so a spawned child
    would report its parent's peak until it exceeded it.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the best there is
