"""Screenshots of the real napari window for the README, one per dock (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_screenshots.py docs/images
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _window_with_sample(sample: str):
    """A 1600x1000 napari window with a bundled sample open and the analysis dock on the right."""
    import napari

    from dpfocus.napari._widgets import AnalysisWidget

    viewer = napari.Viewer(title="napari-dpfocus", show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-dpfocus", sample)
    dock = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(dock, name="DP analysis", area="right")
    return viewer, dock


def _save_window(viewer, path: Path) -> None:
    """The whole window (docks included), once Qt has drawn it, as an 8-bit PNG."""
    from qtpy.QtWidgets import QApplication

    from dpfocus.io import save_image

    for _ in range(10):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    save_image(path, np.asarray(img)[..., :3].astype(np.float32) / 255, 8)
    print(path)


def _save_side_by_side(viewer, names: tuple[str, str], path: Path) -> None:
    """Only the two named layers, in grid view (the one lower in the layer list on the left, as
    dimming one layer of dock_reblur showed), the second name selected; saved, then the window
    closes."""
    for layer in viewer.layers:
        layer.visible = layer.name in names
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 2)
    viewer.layers.selection.active = viewer.layers[names[1]]
    viewer.reset_view()
    _save_window(viewer, path)
    viewer.close()


def _click_farthest_object(viewer, sample: str) -> tuple[np.ndarray, np.ndarray]:
    """A focus-point click at the middle of the sample's farthest object (of over 4000 visible px);
    returns that object's pixel rows and columns."""
    from dpfocus.samples import load_ground_truth

    gt = load_ground_truth(sample)
    objects = [o for o in gt["scene"]["objects"] if o["visible_pixels"] > 4000]
    target = max(objects, key=lambda o: o["coc"])
    ys, xs = np.nonzero(gt["labels"] == target["label"])
    viewer.layers[f"{sample} focus points"].add([[float(np.median(ys)), float(np.median(xs))]])
    return ys, xs


def main(out: Path) -> None:
    from dpfocus.napari._inspector import KernelInspectorWidget
    from dpfocus.napari._widgets import FocusWidget

    out.mkdir(parents=True, exist_ok=True)
    viewer, analysis_dock = _window_with_sample("garden")
    focus_dock = FocusWidget(viewer)
    inspector = KernelInspectorWidget(viewer)

    def shot(name: str) -> None:
        _save_window(viewer, out / f"{name}.png")

    # 1. the analysis dock with the disparity layer on top
    analysis_dock.run(blocking=True)
    viewer.reset_view()
    shot("dock_analysis")

    # 2. the focus dock: a click on the farthest object, then the refocused image
    viewer.window.add_dock_widget(focus_dock, name="DP focus", area="right")
    ys, xs = _click_farthest_object(viewer, "garden")
    focus_dock.strength.setValue(1.5)
    focus_dock.render_full_now()
    for layer in viewer.layers:
        layer.visible = layer.name in ("garden refocused", "garden focus mask", "garden focus points")
    viewer.layers.selection.active = viewer.layers["garden focus mask"]
    shot("dock_focus")

    # 2b. the focus sweep: a stack layer whose slider moves the focal plane, here at the middle plane
    focus_dock.strength.setValue(1.0)
    focus_dock.sweep_steps.setValue(8)
    sweep = focus_dock.sweep()
    for layer in viewer.layers:
        layer.visible = layer.name in ("garden focus sweep", "garden focus mask", "garden focus points")
    viewer.dims.set_point(0, 2)
    viewer.layers.selection.active = sweep
    shot("dock_sweep")
    viewer.layers.remove(sweep)

    # 3. the kernel inspector: a clicked pixel on that object, one index highlighted
    viewer.window.add_dock_widget(inspector, name="DP kernel inspector", area="left")
    inspector.inspect_pixel(float(np.median(ys)), float(np.median(xs)))
    for layer in viewer.layers:
        layer.visible = layer.name in ("garden [L]", "garden kernel index")
    inspector.index.setValue(inspector.picked.top[0][0])
    viewer.layers.selection.active = viewer.layers["garden kernel index"]
    viewer.window._qt_window.resize(1600, 1200)
    shot("dock_inspector")
    viewer.close()
    backdrop_shot(out)
    blur_shot(out)
    reblur_shot(out)


def backdrop_shot(out: Path) -> None:
    """The analysis dock on the gallery sample, whose wall the classical backend replaces by a plane."""
    viewer, dock = _window_with_sample("gallery")
    dock.run(blocking=True)
    viewer.reset_view()
    _save_window(viewer, out / "dock_backdrop.png")
    viewer.close()


def blur_shot(out: Path) -> None:
    """The gallery sample's blur CoC layer beside its CoC layer (grid view): the wall is one plane in
    the CoC, while the blur map keeps each object's halo on it."""
    viewer, dock = _window_with_sample("gallery")
    dock.run(blocking=True)
    _save_side_by_side(viewer, ("gallery CoC", "gallery blur CoC"), out / "dock_blur.png")


def reblur_shot(out: Path) -> None:
    """The focus dock's two full renders of one click on the garden sample, in grid view: the
    layered renderer (kept as a copy) beside the network's reblur path."""
    from dpfocus.napari._widgets import NETWORK_REBLUR, FocusWidget

    viewer, dock = _window_with_sample("garden")
    dock.backend.setCurrentText("network")
    dock.run(blocking=True)
    focus = FocusWidget(viewer)
    viewer.window.add_dock_widget(focus, name="DP focus", area="right")
    _click_farthest_object(viewer, "garden")
    layered = focus.render_full_now()
    viewer.add_image(layered, name="garden refocused (layered renderer)", rgb=True)
    focus.full_backend.setCurrentText(NETWORK_REBLUR)
    focus.render_full_now()
    _save_side_by_side(viewer, ("garden refocused (layered renderer)", "garden refocused"), out / "dock_reblur.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
