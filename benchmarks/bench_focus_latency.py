"""End-to-end focus latency in a real napari viewer: paint stroke -> refocused layer redrawn.

A 1120x1680 RGB DP pair from the project's scene generator is added to ``napari.Viewer(show=True)``
as the two layers the reader makes; the analysis dock analyses it (blocking), the focus dock creates
the focus mask; then brush strokes are painted on the mask by sending real Qt mouse events (press,
moves at a real mouse's pace, release) to the vispy canvas widget of the full-screen window, so
napari's own paint binding draws the stroke and emits ``events.paint`` once, on release (napari groups
a drag into one undo item), which drives ``FocusWidget.mask_changed`` -> ``FocusSession.set_mask`` ->
preview render -> in-place update of ``"<stem> refocused"``. Each stroke is timed until that layer has
new data *and* the canvas has finished a draw after it (``events.draw`` at the last position, then
``glFinish``). Each stroke targets a new object: the mask is cleared (untimed) between strokes.

The latency figure is release -> redraw: the refocus can only start when the stroke ends. Press ->
redraw is printed too; it adds the drag itself (7 mouse moves >= 12 ms apart, each redrawn by napari).

The full-quality render that the dock starts after an idle period is kept out of the measurement:
the dock's idle timer interval is set to one hour (and it is stopped after every stroke), so only the
preview path is timed.

Prints ``name: value unit`` lines. Same-run references (same viewer, same visible layers):
a full-frame ``layer.data = ...`` update of a 1120x1680 RGB image layer with its redraw (the floor of
showing a new full-size frame) and the same for a half-resolution 560x840 layer shown at scale 2
(exactly what the dock pushes, without any compute). Run under a display, e.g.::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_focus_latency.py

``--profile FILE`` also writes a cProfile of release -> redraw of the timed strokes and prints the top
entries (the profiler inflates the timings of that run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")

now = time.perf_counter
MOVE_INTERVAL_S = 0.012  # mouse move spacing during a drag (about 83 Hz)


def pct(values, q):
    return float(np.percentile(np.asarray(values), q))


class Probe:
    """Timestamps of one update: set by callbacks hooked on the viewer, the layers and the session."""

    def __init__(self, qt_viewer) -> None:
        self.marks: dict[str, float] = {}
        self.watch: object | None = None  # the layer whose new data we wait for
        self.scene_canvas = qt_viewer.canvas._scene_canvas
        self.scene_canvas.events.draw.connect(self._on_draw, position="last")

    def reset(self, watch) -> None:
        self.marks = {}
        self.watch = watch

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, now())

    def on_data(self, event=None) -> None:
        if event is not None and getattr(event, "source", None) is not self.watch:
            return
        self.mark("data")

    def _on_draw(self, event=None) -> None:
        if "data" in self.marks and "drawn" not in self.marks:
            self.scene_canvas.context.finish()  # the frame is really rasterised (llvmpipe renders lazily)
            self.mark("drawn")

    def wait_drawn(self, app, timeout: float = 10.0) -> bool:
        deadline = now() + timeout
        while "drawn" not in self.marks and now() < deadline:
            app.processEvents()
        return "drawn" in self.marks


def settle(app, probe: Probe, layer) -> None:
    """Let pending redraws happen (untimed): force one update of ``layer`` and wait for its draw."""
    probe.reset(layer)
    probe.mark("data")
    layer.refresh()
    probe.scene_canvas.update()
    probe.wait_drawn(app, timeout=5.0)
    for _ in range(3):
        app.processEvents()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strokes", type=int, default=60, help="timed strokes (default 60)")
    parser.add_argument("--height", type=int, default=1120)
    parser.add_argument("--width", type=int, default=1680)
    parser.add_argument("--brush", type=int, default=15, help="brush size in image pixels")
    parser.add_argument("--set-data-updates", type=int, default=20, help="timed `mask_layer.data = mask` updates")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the timed strokes to FILE")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    from dpfocus.io import DPPair
    from dpfocus.napari._layers import layer_name, pair_layer_data
    from dpfocus.napari._widgets import AnalysisWidget, FocusWidget
    from dpfocus.scenes import SceneConfig, generate_scene

    h, w = args.height, args.width
    scene = generate_scene(123, SceneConfig(height=h, width=w, with_refocus=False))
    pair = DPPair.from_arrays(scene.left, scene.right, name="bench")

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    qt_viewer = viewer.window._qt_viewer
    for data, kwargs, kind in pair_layer_data(pair):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    analysis_dock = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(analysis_dock, name="DP analysis", area="right")
    t = now()
    analysis_dock.run(blocking=True)
    t_analysis = now() - t
    focus = FocusWidget(viewer)
    viewer.window.add_dock_widget(focus, name="DP focus", area="right")
    assert focus.session is not None, "the focus dock found no analysed pair"
    focus._idle.setInterval(3_600_000)  # keep the full-quality render out of the timed preview path
    stem = focus.stem
    mask_layer = viewer.layers[layer_name(stem, "focus_mask")]
    refocused_name = layer_name(stem, "refocused")
    viewer.layers.selection.active = mask_layer
    mask_layer.mode = "paint"
    mask_layer.brush_size = args.brush
    mask_layer.selected_label = 1
    window = viewer.window._qt_window
    screen = window.screen().availableGeometry()
    window.setGeometry(screen)  # the whole (virtual) screen, as a user would maximise the window
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()

    probe = Probe(qt_viewer)
    session = focus.session

    # --- split: wrap the session's two steps (instance attributes; the dock calls them through self)
    def wrap(obj, name, before, after):
        inner = getattr(obj, name)

        def wrapped(*a, **k):
            probe.mark(before)
            try:
                return inner(*a, **k)
            finally:
                probe.mark(after)

        setattr(obj, name, wrapped)

    wrap(session, "set_mask", "set_mask_start", "set_mask_end")
    wrap(session, "render_preview", "preview_start", "preview_end")
    mask_layer.events.paint.connect(lambda e: probe.mark("paint_event"), position="first")
    mask_layer.events.data.connect(lambda e: probe.mark("mask_data_event"), position="first")
    mask_layer.events.paint.connect(lambda e: probe.mark("handlers_done"), position="last")
    mask_layer.events.data.connect(lambda e: probe.mark("handlers_done"), position="last")

    # --- real mouse events on the canvas widget
    canvas = qt_viewer.canvas
    native = canvas.native
    node = canvas.layer_to_visual[mask_layer].node

    def to_canvas(row: float, col: float) -> QPointF:
        x, y = node.get_transform("visual", "canvas").map([col, row, 0, 1])[:2]
        return QPointF(float(x), float(y))

    def send(kind, pos: QPointF, button, buttons) -> None:
        where = QPointF(native.mapToGlobal(pos.toPoint()))
        event = QMouseEvent(kind, pos, where, button, buttons, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(native, event)

    left = Qt.MouseButton.LeftButton
    none = Qt.MouseButton.NoButton

    def idle_until(t_end: float) -> None:
        while now() < t_end:
            app.processEvents()

    def stroke(points) -> None:
        """Press at the first point, move through the rest, release at the last (napari's paint drag).

        Moves come ``MOVE_INTERVAL_S`` apart with the event loop running in between, as from a real
        mouse (vispy drops moves closer than 10 ms, and napari redraws the mask during the drag).
        """
        t = now()
        send(QEvent.Type.MouseButtonPress, to_canvas(*points[0]), left, left)
        for p in points[1:]:
            idle_until(t + MOVE_INTERVAL_S)
            t = now()  # spacing measured between sends: a busy event loop only makes it longer
            send(QEvent.Type.MouseMove, to_canvas(*p), none, left)
        idle_until(t + MOVE_INTERVAL_S)
        probe.mark("release")
        if profiling[0] is not None:
            profiling[0].enable()
        send(QEvent.Type.MouseButtonRelease, to_canvas(*points[-1]), left, none)

    # stroke paths over different objects (and the backdrop), cycling through them
    rng = np.random.default_rng(7)
    regions = [lab for lab in np.unique(scene.labels) if (scene.labels == lab).sum() > 4000]
    margin = 3 * args.brush

    def path(k: int) -> list[tuple[float, float]]:
        lab = regions[k % len(regions)]
        rows, cols = np.nonzero(scene.labels[margin:-margin, margin:-margin] == lab)
        i = rng.integers(rows.size)
        r0, c0 = rows[i] + margin, cols[i] + margin
        angle = rng.uniform(0, np.pi)
        steps = np.arange(8) * args.brush * 0.75
        rows = np.clip(r0 + steps * np.sin(angle), 0, h - 1)
        cols = np.clip(c0 + steps * np.cos(angle), 0, w - 1)
        return [(float(r), float(c)) for r, c in zip(rows, cols)]

    def clear_mask() -> None:
        mask_layer.data[...] = 0  # in place: no event, untimed
        settle(app, probe, mask_layer)

    def measured_stroke(k: int) -> dict[str, float]:
        clear_mask()
        if viewer.layers.selection.active is not mask_layer:
            # adding the refocused layer (first stroke) makes it the active layer; a user would click
            # the mask layer again before the next stroke (otherwise the drag pans the view)
            reselected.append(viewer.layers.selection.active.name)
            viewer.layers.selection.active = mask_layer
            settle(app, probe, mask_layer)
        refocused = viewer.layers[refocused_name] if refocused_name in viewer.layers else None
        probe.reset(refocused)
        if refocused is not None:
            before = refocused.data
        t0 = now()
        probe.marks["start"] = t0
        pts = path(k)
        stroke(pts)
        if refocused is None:  # first stroke: the dock adds the layer
            while refocused_name not in viewer.layers and now() - t0 < 30:
                app.processEvents()
            probe.mark("data")
        ok = probe.wait_drawn(app)
        if profiling[0] is not None:
            profiling[0].disable()
        focus._idle.stop()
        m = dict(probe.marks)
        if not ok:
            raise RuntimeError(f"stroke {k}: no redraw after the stroke (marks: {sorted(m)})")
        if refocused is not None and viewer.layers[refocused_name].data is before:
            raise RuntimeError(f"stroke {k}: the refocused layer did not change")
        data = mask_layer.data  # untimed check that the brush landed where the stroke went
        hits = [int(data[int(round(r)), int(round(c))] > 0) for r, c in pts]
        missed.extend(i for i, hit in enumerate(hits) if not hit)
        stroke_checks.append((sum(hits) / len(hits), int((data > 0).sum())))
        return m

    reselected: list[str] = []
    profiling: list = [None]  # the profiler, while the timed strokes run
    stroke_checks: list[tuple[float, int]] = []
    missed: list[int] = []

    # --- warm-up: the first stroke adds the refocused layer and prepares the preview stack
    first = measured_stroke(0)
    t_first = first["drawn"] - first["start"]
    refocused_layer = viewer.layers[refocused_name]
    refocused_layer.events.data.connect(probe.on_data, position="last")
    painted = int((mask_layer.data > 0).sum())
    for k in range(1, 3):
        measured_stroke(k)

    # --- timed strokes
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    profiling[0] = profiler  # profiles release -> redraw of each timed stroke
    runs = [measured_stroke(3 + k) for k in range(args.strokes)]
    profiling[0] = None
    d_trgs = focus.session.d_trg

    def ms(m, a, b):
        return (m[b] - m[a]) * 1000

    total = [ms(m, "start", "drawn") for m in runs]
    after_release = [ms(m, "release", "drawn") for m in runs]
    drag = [ms(m, "start", "release") for m in runs]
    to_mask = [ms(m, "paint_event", "set_mask_start") for m in runs]  # np.asarray(data) > 0, .any()
    set_mask = [ms(m, "set_mask_start", "set_mask_end") for m in runs]  # mask -> d_trg
    preview = [ms(m, "preview_start", "preview_end") for m in runs]
    update = [ms(m, "preview_end", "handlers_done") for m in runs]  # upsert_layer + label
    to_data = [ms(m, "preview_end", "data") for m in runs]
    draw = [ms(m, "handlers_done", "drawn") for m in runs]
    release_to_event = [ms(m, "release", "paint_event") for m in runs]

    # --- the `layer.data = mask` path (what prompts use): events.data -> mask_changed
    set_data = []
    for k in range(args.set_data_updates):
        mask = np.zeros((h, w), np.uint8)
        r, c = path(1000 + k)[0]
        yy, xx = np.ogrid[:h, :w]
        mask[(yy - r) ** 2 + (xx - c) ** 2 <= (2 * args.brush) ** 2] = 1
        settle(app, probe, mask_layer)
        probe.reset(refocused_layer)
        t0 = now()
        probe.marks["start"] = t0
        mask_layer.data = mask
        probe.wait_drawn(app)
        focus._idle.stop()
        set_data.append((probe.marks["drawn"] - t0) * 1000)

    # --- same-run references: full-frame image layer updates with a forced redraw
    def reference(shape, scale, n=20):
        frames = [np.ascontiguousarray(np.random.default_rng(i).random(shape, dtype=np.float32)) for i in range(2)]
        name = f"reference {shape[0]}x{shape[1]}"
        layer = viewer.add_image(frames[1], rgb=True, contrast_limits=(0.0, 1.0), scale=(scale, scale), name=name)
        layer.events.data.connect(probe.on_data, position="last")
        times = []
        for i in range(n + 2):
            settle(app, probe, layer)
            probe.reset(layer)
            t0 = now()
            layer.data = frames[i % 2]
            probe.wait_drawn(app)
            if i >= 2:
                times.append((probe.marks["drawn"] - t0) * 1000)
        viewer.layers.remove(layer)
        return statistics.median(times)

    redraws = []  # the canvas alone: one forced redraw, no new data
    for _ in range(20):
        settle(app, probe, mask_layer)
        probe.reset(None)
        t0 = now()
        probe.mark("data")
        probe.scene_canvas.update()
        probe.wait_drawn(app)
        redraws.append((probe.marks["drawn"] - t0) * 1000)
    ref_redraw = statistics.median(redraws)
    ref_full = reference((h, w, 3), 1.0)
    ref_half = reference((h // 2, w // 2, 3), 2.0)

    med = statistics.median(after_release)
    size = f"{h}x{w}"
    print(f"viewer_window_size: {window.width()}x{window.height()} px")
    print(f"viewer_canvas_size: {canvas.size[1]}x{canvas.size[0]} px")
    print(f"classical_analysis_via_dock_{size}: {t_analysis:.2f} s")
    print(f"first_stroke_latency_incl_preview_prepare: {t_first * 1000:.0f} ms")
    print(f"first_stroke_mask_pixels: {painted} px")
    print(f"mask_layer_reselected_after_stroke: {len(reselected)} times (active was {sorted(set(reselected))})")
    print(f"stroke_path_points_painted: {100 * np.mean([c[0] for c in stroke_checks]):.0f} %")
    print(f"stroke_path_points_missed_by_index: {np.bincount(np.asarray(missed, int), minlength=8).tolist()}")
    print(f"stroke_painted_pixels_median: {statistics.median([c[1] for c in stroke_checks]):.0f} px")
    spacing = f"{MOVE_INTERVAL_S * 1000:.0f} ms"
    print(f"strokes_timed: {len(runs)} (press, 7 moves >= {spacing} apart, release; brush {args.brush} px)")
    print(f"last_d_trg: {d_trgs:+.3f} px")
    print(f"viewer_visible_layers: {sum(layer.visible for layer in viewer.layers)} of {len(viewer.layers)}")
    print(f"reference_canvas_redraw_only: {ref_redraw:.1f} ms")
    print(f"reference_layer_update_draw_{size}_rgb: {ref_full:.1f} ms")
    print(f"reference_layer_update_draw_{h // 2}x{w // 2}_rgb_scale2: {ref_half:.1f} ms")
    print(f"focus_latency_stroke_to_redraw_median: {statistics.median(total):.1f} ms")
    print(f"focus_latency_stroke_to_redraw_p90: {pct(total, 90):.1f} ms")
    print(f"focus_latency_stroke_to_redraw_max: {max(total):.1f} ms")
    print(f"focus_latency_release_to_redraw_median: {med:.1f} ms")
    print(f"focus_latency_release_to_redraw_p90: {pct(after_release, 90):.1f} ms")
    print(f"focus_latency_release_to_redraw_max: {max(after_release):.1f} ms")
    print(f"focus_latency_release_to_redraw_ratio_to_full_frame_update: {med / ref_full:.2f} x")
    print(f"focus_latency_release_to_redraw_ratio_to_preview_frame_update: {med / ref_half:.2f} x")
    print(f"focus_latency_release_to_redraw_ratio_to_canvas_redraw: {med / ref_redraw:.2f} x")
    print(f"split_drag_press_to_release_median: {statistics.median(drag):.1f} ms")
    print(f"split_release_to_paint_event_median: {statistics.median(release_to_event):.1f} ms")
    print(f"split_mask_from_layer_median: {statistics.median(to_mask):.1f} ms")
    print(f"split_mask_to_d_trg_median: {statistics.median(set_mask):.1f} ms")
    print(f"split_preview_render_median: {statistics.median(preview):.1f} ms")
    print(f"split_layer_update_median: {statistics.median(update):.1f} ms")
    print(f"split_layer_update_until_data_event_median: {statistics.median(to_data):.1f} ms")
    print(f"split_canvas_draw_median: {statistics.median(draw):.1f} ms")
    print(f"focus_latency_set_mask_data_median: {statistics.median(set_data):.1f} ms")
    set_data_ratio = statistics.median(set_data) / ref_full
    print(f"focus_latency_set_mask_data_ratio_to_full_frame_update: {set_data_ratio:.1f} x")
    print(f"target_release_to_redraw_median: 100 ms ({'met' if med <= 100 else 'not met'})")

    if profiler:
        import pstats

        profiler.dump_stats(args.profile)
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)

    viewer.close()


if __name__ == "__main__":
    main()
