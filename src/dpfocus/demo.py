"""`dpfocus demo`: a sample pair in napari, or the same pipeline headless into PNG files.

Headless mode writes what the window would show: both views, the ordinary photo, a red/cyan
anaglyph of the views (it makes the DP disparity visible), the ground-truth disparity, and, when an
X display or Xvfb is available, a screenshot of a real napari viewer with the sample loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .io import save_image
from .samples import load_ground_truth, load_sample

__all__ = ["run_headless", "run_interactive", "display_available", "virtual_display", "disparity_to_rgb", "anaglyph"]


def disparity_to_rgb(d: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Diverging blue-white-red picture of a signed map (blue = near/negative, red = far/positive)."""
    limit = float(limit or max(np.abs(d).max(), 1e-6))
    t = np.clip(d / limit, -1, 1)[..., None]
    white = np.ones(3, np.float32)
    red = np.array([0.70, 0.09, 0.17], np.float32)
    blue = np.array([0.13, 0.40, 0.67], np.float32)
    return np.where(t >= 0, white + t * (red - white), white - t * (blue - white)).astype(np.float32)


def anaglyph(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Red = left view, cyan = right view: DP disparity shows as colour fringes."""
    gl = left.mean(axis=2) if left.ndim == 3 else left
    gr = right.mean(axis=2) if right.ndim == 3 else right
    return np.stack([gl, gr, gr], axis=-1).astype(np.float32)


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@contextmanager
def virtual_display(width: int = 1600, height: int = 1000) -> Iterator[bool]:
    """Start Xvfb on a free display for the duration of the block (yields False if impossible)."""
    if display_available():
        yield True
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        yield False
        return
    proc = None
    for number in range(90, 140):
        if Path(f"/tmp/.X{number}-lock").exists():
            continue
        proc = subprocess.Popen(
            [xvfb, f":{number}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{number}").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            os.environ["DISPLAY"] = f":{number}"
            break
        proc = None
    try:
        yield proc is not None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            os.environ.pop("DISPLAY", None)


def demo_results(sample: str):
    """Analysis of the sample and a refocus on its largest object (the ground-truth mask)."""
    from .analysis import analyze
    from .refocus import focus_disparity, render_refocus

    pair = load_sample(sample)
    gt = load_ground_truth(sample)
    analysis = analyze(pair)
    objects = [o for o in gt["scene"]["objects"] if o["visible_pixels"] > 0]
    target = max(objects, key=lambda o: o["visible_pixels"])
    d_trg = focus_disparity(analysis, mask=gt["labels"] == target["label"])
    return pair, analysis, d_trg, render_refocus(analysis, d_trg)


def _open_viewer_with_sample(sample: str, show: bool):
    """A viewer with the sample, both docks, the analysis run, and a focus on the largest object."""
    import napari

    from .napari._inspector import KernelInspectorWidget
    from .napari._widgets import AnalysisWidget, FocusWidget

    viewer = napari.Viewer(title="napari-dpfocus demo", show=show)
    viewer.open_sample("napari-dpfocus", sample)
    analysis_dock = AnalysisWidget(viewer)
    focus_dock = FocusWidget(viewer)
    inspector_dock = KernelInspectorWidget(viewer)
    viewer.window.add_dock_widget(analysis_dock, name="DP analysis", area="right")
    viewer.window.add_dock_widget(focus_dock, name="DP focus", area="right")
    viewer.window.add_dock_widget(inspector_dock, name="DP kernel inspector", area="left")
    analysis_dock.run(blocking=True)
    gt = load_ground_truth(sample)
    objects = [o for o in gt["scene"]["objects"] if o["visible_pixels"] > 0]
    target = max(objects, key=lambda o: o["visible_pixels"])
    focus_dock._write_mask(gt["labels"] == target["label"])
    focus_dock.render_full_now()
    blurred = max(objects, key=lambda o: abs(o["coc"]) * (o["visible_pixels"] > 2000))  # show a real kernel
    ys, xs = np.nonzero(gt["labels"] == blurred["label"])
    inspector_dock.inspect_pixel(float(np.median(ys)), float(np.median(xs)))
    for layer in viewer.layers:
        if layer.name.endswith(("disparity", "focus mask")):
            layer.visible = False
    viewer.layers.selection.active = viewer.layers[f"{load_sample(sample).name} refocused"]
    return viewer


def screenshot_viewer(sample: str, path: Path) -> Path:
    """A screenshot of a real napari window with the sample loaded (needs a display)."""
    viewer = _open_viewer_with_sample(sample, show=True)
    try:
        from qtpy.QtWidgets import QApplication

        viewer.window._qt_window.resize(1600, 950)
        for _ in range(5):  # let Qt lay out the docks before grabbing the window
            QApplication.processEvents()
        viewer.reset_view()
        img = viewer.screenshot(canvas_only=False, flash=False)
    finally:
        viewer.close()
    save_image(path, np.asarray(img)[..., :3].astype(np.float32) / 255.0, 8)
    return path


def _screenshot_in_child(sample: str, path: Path) -> bool:
    """Take the viewer screenshot in a child process, so Qt is gone before the display is."""
    import sys

    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "xcb"))
    proc = subprocess.run(
        [sys.executable, "-m", "dpfocus.demo", "screenshot", sample, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not path.exists():
        print(f"screenshot failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return False
    return True


def sweep_strip(analysis, planes: int = 6, gap: int = 4) -> np.ndarray:
    """A focus sweep's preview planes side by side, nearest focus on the left (a white gap between)."""
    from .refocus import focus_sweep, sweep_disparities

    frames = [img for _, img in focus_sweep(analysis, sweep_disparities(analysis, planes))]
    spacer = np.ones((frames[0].shape[0], gap, *frames[0].shape[2:]), np.float32)
    parts = [part for frame in frames for part in (frame, spacer)][:-1]
    return np.concatenate(parts, axis=1)


def run_headless(out_dir: str | os.PathLike, sample: str = "garden", screenshot: bool = True) -> dict[str, Path]:
    """Run the demo pipeline without a window and write its pictures into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pair = load_sample(sample)
    gt = load_ground_truth(sample)
    written = {
        "left": save_image(out / f"{sample}_left.png", pair.left, 8),
        "right": save_image(out / f"{sample}_right.png", pair.right, 8),
        "anaglyph": save_image(out / f"{sample}_anaglyph.png", anaglyph(pair.left, pair.right), 8),
        "disparity_ground_truth": save_image(out / f"{sample}_disparity_gt.png", disparity_to_rgb(gt["disparity"]), 8),
    }
    if pair.combined is not None:
        written["combined"] = save_image(out / f"{sample}_combined.png", pair.combined, 8)
    _, analysis, d_trg, refocused = demo_results(sample)
    limit = float(max(np.abs(gt["disparity"]).max(), np.abs(analysis.disparity).max()))
    written["disparity"] = save_image(out / f"{sample}_disparity.png", disparity_to_rgb(analysis.disparity, limit), 8)
    written["confidence"] = save_image(out / f"{sample}_confidence.png", analysis.confidence, 8)
    written["kernel_index"] = save_image(
        out / f"{sample}_kernel_index.png", analysis.kernel_index.astype(np.float32) / max(len(analysis.kernel_cocs) - 1, 1), 8
    )
    written["all_in_focus"] = save_image(out / f"{sample}_aif.png", analysis.aif, 8)
    written["refocused"] = save_image(out / f"{sample}_refocused.png", refocused, 8)
    written["focus_sweep"] = save_image(out / f"{sample}_focus_sweep.png", sweep_strip(analysis), 8)
    if screenshot:
        with virtual_display() as ok:
            if ok and _screenshot_in_child(sample, out / "viewer.png"):
                written["screenshot"] = out / "viewer.png"
    return written


def run_interactive(sample: str = "garden") -> None:
    import napari

    _open_viewer_with_sample(sample, show=True)
    napari.run()


if __name__ == "__main__":  # used by _screenshot_in_child
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "screenshot":
        screenshot_viewer(sys.argv[2], Path(sys.argv[3]))
