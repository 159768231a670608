"""The analysis and focus docks in a real napari viewer (under Xvfb via `make test`)."""

import json

import numpy as np
import pytest

from dpfocus.napari import _widgets
from dpfocus.napari._inspector import KernelInspectorWidget
from dpfocus.napari._widgets import AnalysisWidget, FocusWidget
from dpfocus.refocus import focus_disparity, focus_region
from dpfocus.samples import load_ground_truth

pytest.importorskip("napari")


def sharpness(img: np.ndarray, mask: np.ndarray) -> float:
    """Laplacian energy of the lightly smoothed image: edges count, pixel noise does not."""
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(img.mean(axis=2) if img.ndim == 3 else img, 1.0)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float((lap**2)[mask[1:-1, 1:-1]].mean())


@pytest.fixture
def analysed(make_napari_viewer):
    _widgets.ANALYSES.clear()
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dpfocus", "garden")
    dock = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(dock, name="DP analysis")
    assert dock.left.currentText() == "garden [L]" and dock.right.currentText() == "garden [R]"
    dock.run(blocking=True)
    return viewer, dock


def docked(viewer, widget_class):
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=widget_class.__name__)
    return widget


def test_analysis_dock_adds_layers_and_rerun_updates_in_place(analysed):
    viewer, dock = analysed
    names = [layer.name for layer in viewer.layers]
    for suffix in ("disparity", "CoC", "blur CoC", "kernel index", "all-in-focus", "confidence"):
        assert names.count(f"garden {suffix}") == 1
    # the blur map (what the kernel index and the renderer follow) beside the CoC, in the same colours
    np.testing.assert_array_equal(viewer.layers["garden blur CoC"].data, dock.last_analysis.blur)
    assert viewer.layers["garden blur CoC"].contrast_limits == viewer.layers["garden CoC"].contrast_limits
    lo, hi = viewer.layers["garden disparity"].contrast_limits
    assert lo == pytest.approx(-hi)
    assert all(viewer.layers[f"garden {suffix}"].colorbar.visible for suffix in ("disparity", "CoC", "confidence"))
    assert not viewer.layers["garden all-in-focus"].colorbar.visible
    viewer.layers["garden disparity"].colorbar.visible = False  # the user hides a legend: a re-run keeps it hidden
    viewer.layers["garden CoC"].name = "my CoC"  # the user renames one of ours
    mine = viewer.add_image(np.zeros((4, 4)), name="garden confidence notes")
    before = len(viewer.layers)
    dock.run(blocking=True)  # cached: instant, in place
    assert len(viewer.layers) == before + 1  # only the renamed CoC comes back under its own name
    assert "cached" in dock.status.text()
    assert viewer.layers["my CoC"].name == "my CoC" and np.all(mine.data == 0)
    assert not viewer.layers["garden disparity"].colorbar.visible


def test_analysis_dock_runs_in_a_worker_with_progress(make_napari_viewer, qtbot):
    _widgets.ANALYSES.clear()
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dpfocus", "microscope")
    dock = AnalysisWidget(viewer)
    dock.run()
    assert dock.worker is not None and not dock.run_button.isEnabled()
    qtbot.waitUntil(lambda: "microscope disparity" in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: dock.run_button.isEnabled(), timeout=10_000)
    assert dock.progress.value() == 100


def test_tile_box_is_enabled_only_for_a_backend_that_tiles(make_napari_viewer):
    dock = AnalysisWidget(make_napari_viewer())
    dock.backend.setCurrentText("classical")
    assert not dock.tile.isEnabled() and "whole image" in dock.tile.toolTip()
    if "network" in [dock.backend.itemText(i) for i in range(dock.backend.count())]:
        dock.backend.setCurrentText("network")
        assert dock.tile.isEnabled()


def test_analysis_dock_without_a_pair_notifies_instead_of_raising(make_napari_viewer):
    dock = AnalysisWidget(make_napari_viewer())
    dock.run(blocking=True)  # no layers: a notification, no exception
    assert dock.last_analysis is None


def test_painting_a_mask_refocuses_sharper_inside_and_blurrier_outside(analysed):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    assert focus.session is not None
    gt = load_ground_truth("garden")
    # objects large enough for the classical backend to locate (small, strongly blurred ones it
    # misplaces, see the README's benchmark): the most blurred of them becomes the target
    objects = {o["label"]: o for o in gt["scene"]["objects"] if o["visible_pixels"] > 4000}
    # the most blurred object with texture to recover (a flat one looks the same sharp or blurred)
    textured = [o for o in objects.values() if gt["aif"][gt["labels"] == o["label"]].std(axis=0).mean() > 0.05]
    target = max(textured, key=lambda o: abs(o["coc"]))
    inside = gt["labels"] == target["label"]
    was_sharp = np.abs(gt["coc"]) < 0.5  # what the camera focused on
    assert was_sharp.sum() > 2000 and not (was_sharp & inside).any()
    mask_layer = viewer.layers["garden focus mask"]
    s = focus.session

    def full_render():
        focus.render_full_now()
        return viewer.layers["garden refocused"].data.copy()

    mask_layer.data = was_sharp.astype(np.uint8)  # before: focus where the camera focused
    before = full_render()
    mask_layer.data = inside.astype(np.uint8)  # as a programmatic paint stroke
    preview = viewer.layers["garden refocused"]
    assert preview.metadata["dpfocus"]["quality"] == "preview" and preview.scale[0] == pytest.approx(2.0)
    assert s.d_trg == pytest.approx(float(s.analysis.blur_disparity[focus_region(inside)].mean()))  # the stroke's interior
    after = full_render()
    full = viewer.layers["garden refocused"]
    assert full.metadata["dpfocus"]["quality"] == "full" and after.shape[:2] == inside.shape
    assert sharpness(after, inside) > 1.3 * sharpness(before, inside)
    assert sharpness(after, was_sharp) < 0.8 * sharpness(before, was_sharp)
    # a stale full render (the user acted again) is dropped
    generation, stale = s.render_full()
    focus.strength.setValue(0.5)
    focus._full_done(s, (generation, np.zeros_like(stale)))
    assert viewer.layers["garden refocused"].data.max() > 0


def test_points_box_and_text_prompts_fill_the_mask(analysed):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    gt = load_ground_truth("garden")
    obj = max(gt["scene"]["objects"], key=lambda o: o["visible_pixels"])
    ys, xs = np.nonzero(gt["labels"] == obj["label"])
    viewer.layers["garden focus points"].add([[float(np.median(ys)), float(np.median(xs))]])
    mask = viewer.layers["garden focus mask"].data > 0
    assert mask.any() and (mask & (gt["labels"] == obj["label"])).sum() > 0.5 * mask.sum()
    x0, y0, x1, y1 = obj["box"]
    viewer.layers["garden focus boxes"].add_rectangles(np.array([[y0, x0], [y1, x1]], float))
    assert (viewer.layers["garden focus mask"].data > 0).any()
    viewer.layers["garden focus mask"].data = np.zeros_like(mask, np.uint8)
    focus.text.setText("nearest object")
    focus.focus_on_text()
    assert (viewer.layers["garden focus mask"].data > 0).any()
    assert "d_trg: " in focus.d_label.text()
    focus.text.setText("purple elephant")
    focus.focus_on_text()  # unknown words: a notification, the mask stays
    assert (viewer.layers["garden focus mask"].data > 0).any()


def test_shortcuts_all_in_focus_and_captured(analysed):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    viewer.layers["garden focus mask"].data = (load_ground_truth("garden")["labels"] == 1).astype(np.uint8)
    focus.all_in_focus()
    assert focus.session.strength == 0.0
    focus.captured_focus()
    assert focus.session.strength == 1.0 and focus.session.d_trg == 0.0
    assert "Shift+F" in focus.aif_button.toolTip() and "Shift+C" in focus.captured_button.toolTip()


def test_negative_clicks_cut_regions_out_of_the_mask(analysed):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    gt = load_ground_truth("garden")
    obj = max(gt["scene"]["objects"], key=lambda o: o["visible_pixels"])
    ys, xs = np.nonzero(gt["labels"] == obj["label"])
    points = viewer.layers["garden focus points"]
    points.add([[float(np.median(ys)), float(np.median(xs))]])
    grown = viewer.layers["garden focus mask"].data > 0
    # exclude the part of the grown region farthest from the positive click
    gy, gx = np.nonzero(grown)
    far = int(np.argmax((gy - np.median(ys)) ** 2 + (gx - np.median(xs)) ** 2))
    focus.negative.setChecked(True)
    points.add([[float(gy[far]), float(gx[far])]])
    assert list(points.features["positive"]) == [True, False]
    cut = viewer.layers["garden focus mask"].data > 0
    assert cut.any() and cut.sum() < grown.sum() and not cut[gy[far], gx[far]]
    focus.clear_mask()
    assert len(points.data) == 0 and not viewer.layers["garden focus mask"].data.any()


def test_kernel_inspector_shows_the_clicked_pixels_kernel_and_highlights_an_index(analysed):
    viewer, _ = analysed
    docked(viewer, FocusWidget)  # its focus mask layer is drawn on below
    inspector = docked(viewer, KernelInspectorWidget)
    analysis = inspector.analysis
    assert analysis is not None and len(inspector._atlas.boxes) == len(analysis.kernel_cocs)
    y, x = 200, 300

    class Click:  # what napari hands a mouse callback for a left click at data (y, x)
        button = 1
        position = (float(y), float(x))

    for callback in viewer.mouse_drag_callbacks:
        callback(viewer, Click())
    picked = inspector.picked
    assert (picked.y, picked.x) == (y, x)
    left, right, combined = analysis.effective_kernels(y, x)
    np.testing.assert_allclose(picked.combined, combined)
    np.testing.assert_allclose(picked.left, right[:, ::-1], atol=1e-6)  # K_L = flip_x(K_R)
    assert picked.top[0][0] == analysis.kernel_index[y, x]
    assert sum(w for _, w, _ in picked.top) == pytest.approx(1.0)
    assert f"x={x}, y={y}" in inspector.pixel_label.text()
    # selecting an index highlights exactly its pixels in the kernel-index layer
    index = int(np.bincount(analysis.kernel_index.ravel()).argmax())
    inspector.index.setValue(index)
    layer = viewer.layers["garden kernel index"]
    assert layer.visible and layer.show_selected_label and layer.selected_label == index + 1
    assert np.array_equal(np.asarray(layer.data) == index + 1, analysis.kernel_index == index)
    # histogram over the image and inside the painted mask
    viewer.layers["garden focus mask"].data = (load_ground_truth("garden")["labels"] == 2).astype(np.uint8)
    inspector.draw_histogram()
    assert len(inspector.ax_hist.patches) == 2 * len(analysis.kernel_cocs)
    inspector.index.setValue(-1)
    assert not layer.show_selected_label


def test_export_then_cli_reproduces_the_same_image(analysed, tmp_path):
    from dpfocus.cli import main
    from dpfocus.io import read_image

    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    viewer.layers["garden focus mask"].data = (load_ground_truth("garden")["labels"] == 1).astype(np.uint8)
    focus.strength.setValue(1.5)
    focus.tolerance.setValue(0.2)
    files = focus.export(tmp_path)
    folder = files["record"].parent
    for name in ("refocused.png", "focus_mask.png", "record.json", "analysis/disparity.tif", "analysis/kernel_index.tif", "analysis/aif.png"):
        assert (folder / name).is_file(), name
    record = __import__("json").loads(files["record"].read_text())
    assert record["strength"] == pytest.approx(1.5) and record["tolerance"] == pytest.approx(0.2)
    assert record["d_trg"] == pytest.approx(focus.session.d_trg) and record["backend"] == "classical"
    assert focus.export(tmp_path)["record"].parent != folder  # a second export never overwrites the first
    out = tmp_path / "again.png"
    assert main(["refocus", "--record", str(files["record"]), "-o", str(out)]) == 0
    exported, bits = read_image(folder / "refocused.png")
    again, bits_again = read_image(out)
    assert bits == bits_again == 16
    assert np.abs(exported - again).max() < 1e-4


def test_ui_errors_are_notifications(make_napari_viewer, monkeypatch):
    messages = []
    monkeypatch.setattr(_widgets, "_notify", lambda message, error=True: messages.append(message))
    _widgets.ANALYSES.clear()
    viewer = make_napari_viewer()
    focus = docked(viewer, FocusWidget)
    focus.focus_on_text()
    focus.export()
    assert "run the analysis first" in messages[0] and "nothing to export" in messages[1]
    viewer.add_image(np.zeros((20, 30), np.float32), name="a")
    viewer.add_image(np.zeros((20, 31), np.float32), name="b")
    dock = docked(viewer, AnalysisWidget)
    dock.left.setCurrentText("a")
    dock.right.setCurrentText("b")
    dock.run(blocking=True)
    assert "30x20" in messages[-1] or "31" in messages[-1]
    assert dock.last_analysis is None
    focus.sam_path.setText(str(viewer.layers[0].name) + "-missing.pth")
    focus.load_models()
    assert focus.sam is None and "default segmentation" in messages[-1]
    assert "default" in focus.segmenter_label.text()


def test_sam_checkpoint_drives_clicks_and_boxes_in_a_worker(analysed, tiny_ckpt, qtbot):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    focus.sam_path.setText(str(tiny_ckpt))
    focus.load_models()
    assert focus.sam is not None and "Segment Anything custom" in focus.segmenter_label.text()
    qtbot.waitUntil(lambda: not focus._prompt_workers, timeout=60_000)  # the embedding, computed once
    assert focus.sam.encoder_calls == 1
    h, w = focus.session.analysis.shape
    viewer.layers["garden focus points"].add([[h / 2, w / 2]])
    qtbot.waitUntil(lambda: bool((viewer.layers["garden focus mask"].data > 0).any()), timeout=60_000)
    viewer.layers["garden focus mask"].data = np.zeros((h, w), np.uint8)
    viewer.layers["garden focus boxes"].add_rectangles(np.array([[h / 4, w / 4], [3 * h / 4, 3 * w / 4]]))
    qtbot.waitUntil(lambda: bool((viewer.layers["garden focus mask"].data > 0).any()), timeout=60_000)
    qtbot.waitUntil(lambda: not focus._prompt_workers, timeout=60_000)
    assert focus.sam.encoder_calls == 1  # cached by image: prompts never re-encode
    assert focus.session.d_trg is not None


def test_cancel_stops_the_analysis_and_adds_nothing(make_napari_viewer, qtbot):
    _widgets.ANALYSES.clear()
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dpfocus", "workshop")
    dock = docked(viewer, AnalysisWidget)
    dock.run()
    qtbot.waitUntil(lambda: dock.progress.value() > 0, timeout=60_000)  # running, reporting progress
    dock.cancel()
    qtbot.waitUntil(lambda: dock.run_button.isEnabled(), timeout=60_000)
    assert "cancelled" in dock.status.text()
    assert "workshop disparity" not in viewer.layers and not _widgets.ANALYSES


def test_full_render_backend_choice_uses_that_backends_analysis(analysed, monkeypatch):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    s = focus.session
    viewer.layers["garden focus mask"].data = (load_ground_truth("garden")["labels"] == 1).astype(np.uint8)
    blank = np.zeros_like(s.analysis.aif)
    other = type(s.analysis)(**{**s.analysis.__dict__, "aif": blank, "photo": blank, "backend": "stand-in", "meta": dict(s.analysis.meta)})
    _widgets.ANALYSES[(s.analysis.meta["pair_id"], "stand-in")] = other
    focus.full_backend.addItem("stand-in")
    focus.full_backend.setCurrentText("stand-in")
    assert focus.render_full_now().max() == 0  # rendered from the chosen analysis's all-in-focus image
    focus.full_backend.setCurrentIndex(0)
    assert focus.render_full_now().max() > 0


def test_full_render_by_the_networks_reblur_path_shows_and_exports_it(analysed, tmp_path, monkeypatch):
    from dpfocus.io import DPPair, read_image
    from dpfocus.nn.backend import network_refocus

    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    messages = []
    monkeypatch.setattr(_widgets, "_notify", lambda message, error=True: messages.append(message))
    mask = load_ground_truth("garden")["labels"] == 1
    viewer.layers["garden focus mask"].data = mask.astype(np.uint8)
    focus.full_backend.setCurrentText(_widgets.NETWORK_REBLUR)
    img = focus.render_full_now()
    pair = DPPair.from_arrays(viewer.layers["garden [L]"].data, viewer.layers["garden [R]"].data)
    np.testing.assert_array_equal(img, network_refocus(pair, mask)[1])
    layer = viewer.layers["garden refocused"]
    assert layer.metadata["dpfocus"]["quality"] == "full" and layer.metadata["dpfocus"]["renderer"] == "network"
    assert _widgets.NETWORK_REBLUR in focus.d_label.text()
    files = focus.export(tmp_path)
    assert json.loads(files["record"].read_text())["renderer"] == "network"
    np.testing.assert_allclose(read_image(files["refocused"])[0], img, atol=1 / 65535)
    # a tolerance band is the layered renderer's: the dock says so, and the shown image stays
    focus.tolerance.setValue(1.0)
    focus._start_full_render()
    assert focus._full_worker is None and any("no sharp band" in m for m in messages)
    focus.full_backend.setCurrentIndex(0)
    assert focus.render_full_now() is not None and viewer.layers["garden refocused"].metadata["dpfocus"]["renderer"] == "layered"


def test_focus_sweep_stack_layer_and_focus_on_a_plane(analysed, monkeypatch):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    messages = []
    monkeypatch.setattr(_widgets, "_notify", lambda message, error=True: messages.append(message))
    focus.focus_on_sweep_plane()  # nothing swept yet: a notification, no target
    assert "no focus sweep yet" in messages[-1] and focus.session.d_trg is None
    gt = load_ground_truth("garden")
    near_obj = min((o for o in gt["scene"]["objects"] if o["visible_pixels"] > 4000), key=lambda o: o["coc"])
    near = gt["labels"] == near_obj["label"]
    focus.sweep_steps.setValue(6)
    layer = focus.sweep()
    assert layer.name == "garden focus sweep" and layer.data.shape[0] == 6 and layer.rgb
    a = focus.session.analysis
    ds = layer.metadata["dpfocus"]["d_trg"]
    assert [ds[0], ds[-1]] == pytest.approx(list(np.percentile(a.disparity, [1, 99])))  # nearest to farthest surface
    assert np.all(np.diff(ds) > 0) and layer.scale[1] == pytest.approx(2.0)
    # the slider is the focal plane: the near object is sharper at the first plane than at the last
    small = near[::2, ::2][: layer.data.shape[1], : layer.data.shape[2]]
    assert layer.data.dtype == np.uint8  # 8-bit planes, a quarter of the memory
    first, last = (layer.data[i].astype(np.float32) / 255 for i in (0, -1))
    assert sharpness(first, small) > 1.3 * sharpness(last, small)
    assert viewer.dims.nsteps[0] == 6 and viewer.dims.axis_labels[0] == "focus plane" and "sweep plane 1 of 6" in focus.sweep_label.text()
    viewer.dims.set_point(0, 3)
    assert focus.sweep_plane() == (3, pytest.approx(ds[3])) and "sweep plane 4 of 6" in focus.sweep_label.text()
    # the plane on screen becomes the focus target; the refocused layer follows
    focus.focus_on_sweep_plane()
    assert focus.session.d_trg == pytest.approx(ds[3]) and "garden refocused" in viewer.layers
    # the mask stays drawable above the sweep; a second sweep updates the same layer in place
    assert viewer.layers.index(layer) < viewer.layers.index(viewer.layers["garden focus mask"])
    count = len(viewer.layers)
    focus.sweep_steps.setValue(4)
    assert focus.sweep() is layer and layer.data.shape[0] == 4 and len(viewer.layers) == count


def test_opening_an_analysis_folder_adds_its_maps_and_refocuses_without_running_it(make_napari_viewer, tmp_path, monkeypatch, qtbot):
    from dpfocus.cli import main as cli_main
    from dpfocus.napari import _reader
    from dpfocus.samples import sample_dir

    _widgets.ANALYSES.clear()
    assert cli_main(["analyze", str(sample_dir("garden") / "garden_L.png"), "-o", str(tmp_path / "out")]) == 0
    viewer = make_napari_viewer()
    focus = docked(viewer, FocusWidget)
    inspector = docked(viewer, KernelInspectorWidget)
    assert focus.session is None  # nothing analysed yet
    analyze_calls = []
    monkeypatch.setattr(_widgets, "analyze_steps", lambda *a, **k: analyze_calls.append(a))
    layers = viewer.open(str(tmp_path / "out"), plugin="napari-dpfocus")
    names = [layer.name for layer in layers]
    for suffix in ("[L]", "[R]", "disparity", "CoC", "kernel index", "all-in-focus", "confidence"):
        assert f"garden {suffix}" in names
    disparity = viewer.layers["garden disparity"]
    assert disparity.metadata["dpfocus"]["source"] == str(tmp_path / "out")
    # the docks offer the pair once the folder's layers are in, and put the focus layers above them
    qtbot.waitUntil(lambda: focus.pair.currentText() == "garden (classical)", timeout=5000)
    qtbot.waitUntil(lambda: inspector.analysis is focus.session.analysis, timeout=5000)
    order = [layer.name for layer in viewer.layers]
    assert order.index("garden focus mask") > order.index("garden disparity")
    np.testing.assert_array_equal(focus.session.analysis.disparity, disparity.data)
    mask = np.zeros(focus.session.analysis.shape, np.uint8)
    mask[150:200, 250:300] = 1
    viewer.layers["garden focus mask"].data = mask
    # d_trg is the mean, over the mask's interior, of the depth the renderer layers by (the blur map,
    # which the reopened analysis carries from its folder)
    assert focus.session.analysis.blur_coc is not None
    blur = focus.session.analysis.blur_disparity
    assert "garden refocused" in viewer.layers and focus.session.d_trg == pytest.approx(float(blur[156:194, 256:294].mean()))
    inspector.inspect_pixel(175.0, 275.0)
    assert inspector.picked is not None and "pixel (x=275, y=175)" in inspector.pixel_label.text()
    # the analysis dock finds it cached for the same pair and backend: nothing runs again
    dock = docked(viewer, AnalysisWidget)
    dock.run(blocking=True)
    assert "cached" in dock.status.text() and not analyze_calls
    # a damaged folder: one notification naming the file, no layers, no traceback
    messages = []
    monkeypatch.setattr(_reader, "_notify", lambda message, error=True: messages.append(message))
    (tmp_path / "out" / "coc.tif").write_bytes(b"II*\x00 truncated")
    count = len(viewer.layers)
    assert _reader.get_reader(str(tmp_path / "out"))(str(tmp_path / "out")) == []
    assert "coc.tif: " in messages[-1] and "re-run `dpfocus analyze`" in messages[-1] and len(viewer.layers) == count


def test_reopening_an_export_brings_back_mask_image_and_controls(analysed, tmp_path, make_napari_viewer, qtbot):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    target = (load_ground_truth("garden")["labels"] == 1).astype(np.uint8)
    viewer.layers["garden focus mask"].data = target
    focus.strength.setValue(1.75)
    focus.tolerance.setValue(0.4)
    files = focus.export(tmp_path)
    d_trg = focus.session.d_trg
    # a new napari session: nothing analysed, the export folder opened from the analysis dock
    _widgets.ANALYSES.clear()
    again = make_napari_viewer()
    dock = docked(again, FocusWidget)
    opener = docked(again, AnalysisWidget)
    messages = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_widgets, "_notify", lambda message, error=True: messages.append(message))
        assert opener.open_folder(tmp_path / "nothing here") == [] and "neither an analysis folder" in messages[-1]
    assert opener.open_folder(files["record"].parent) and "opened" in opener.status.text()
    qtbot.waitUntil(lambda: dock.session is not None, timeout=5000)
    s = dock.session
    assert s.d_trg == pytest.approx(d_trg) and s.strength == pytest.approx(1.75) and s.tolerance == pytest.approx(0.4)
    assert dock.strength.value() == pytest.approx(1.75) and dock.tolerance.value() == pytest.approx(0.4)
    names = [layer.name for layer in again.layers]
    assert names.count("garden focus mask") == 1 and names.count("garden refocused") == 1 and "garden disparity" in names
    np.testing.assert_array_equal(again.layers["garden focus mask"].data, target)
    assert "d_trg: " in dock.d_label.text() and f"{d_trg:+.3f}" in dock.d_label.text()
    # the reopened mask is the dock's own: a correction refocuses the same layer in place
    refocused = again.layers["garden refocused"]
    corrected = target.copy()
    corrected[:40] = 0
    again.layers["garden focus mask"].data = corrected
    assert again.layers["garden refocused"] is refocused and refocused.metadata["dpfocus"]["quality"] == "preview"
    assert s.d_trg == pytest.approx(focus_disparity(s.analysis, mask=corrected))
    assert dock.export(tmp_path)["record"].parent.name == "garden_refocus_002"  # the first export stays


def test_a_prompt_or_clear_over_a_painted_mask_is_undone_with_the_layers_undo(analysed):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    layer = viewer.layers["garden focus mask"]
    painted = np.zeros(layer.data.shape, np.uint8)
    painted[300:340, 100:160] = 1
    layer.data = painted.copy()  # the annotator's brush work (napari keeps the array it is given)
    s = focus.session
    d_painted = s.d_trg
    assert d_painted == pytest.approx(focus_disparity(s.analysis, mask=painted))
    focus.text.setText("background")
    focus.focus_on_text()  # a prompt replaces the mask...
    assert not np.array_equal(layer.data > 0, painted > 0) and s.d_trg != pytest.approx(d_painted)
    inspector = docked(viewer, KernelInspectorWidget)
    inspector._hist_timer.stop()
    layer.undo()  # ...and napari's undo (Ctrl+Z on the layer) brings the painting back, and its focus
    np.testing.assert_array_equal(layer.data > 0, painted > 0)
    assert s.d_trg == pytest.approx(d_painted)
    assert inspector._hist_timer.isActive()  # the mask histogram is redrawn for the painting too
    layer.redo()
    assert s.d_trg != pytest.approx(d_painted)
    layer.undo()
    focus.clear_mask()  # Clear mask is one undoable edit too
    assert not layer.data.any() and "the focus mask is empty" in focus.d_label.text()
    layer.undo()
    np.testing.assert_array_equal(layer.data > 0, painted > 0)
    assert s.d_trg == pytest.approx(d_painted)


def test_a_reopened_export_keeps_a_focus_that_did_not_come_from_its_mask(analysed, tmp_path, make_napari_viewer, qtbot):
    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    viewer.layers["garden focus mask"].data = (load_ground_truth("garden")["labels"] == 1).astype(np.uint8)
    focus.sweep_steps.setValue(4)
    focus.sweep()
    viewer.dims.set_point(0, 3)
    focus.focus_on_sweep_plane()  # the target is now the farthest plane, not the mask's mean
    d_trg = focus.session.d_trg
    assert d_trg != pytest.approx(focus_disparity(focus.session.analysis, mask=viewer.layers["garden focus mask"].data))
    files = focus.export(tmp_path)
    _widgets.ANALYSES.clear()
    again = make_napari_viewer()
    dock = docked(again, FocusWidget)
    again.open(str(files["record"].parent), plugin="napari-dpfocus")
    qtbot.waitUntil(lambda: dock.session is not None, timeout=5000)
    again.layers["garden focus mask"].refresh()  # a redraw of the reopened mask (napari emits set_data) ...
    assert dock.session.d_trg == pytest.approx(d_trg)  # ... does not move the target to the mask's mean


def test_full_quality_sweep_renders_in_a_worker_and_can_be_stopped(analysed, qtbot):
    from dpfocus.refocus import render_refocus

    viewer, _ = analysed
    focus = docked(viewer, FocusWidget)
    a = focus.session.analysis
    focus.sweep_full.setChecked(True)
    focus.sweep_steps.setValue(3)
    assert focus.sweep() is None and focus.sweep_button.text() == "Stop sweep"  # it runs in the background
    qtbot.waitUntil(lambda: "garden focus sweep" in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: focus.sweep_button.text() == "Focus sweep", timeout=10_000)
    layer = viewer.layers["garden focus sweep"]
    info = layer.metadata["dpfocus"]
    assert layer.data.shape == (3, *a.aif.shape) and info["quality"] == "full" and layer.scale[1] == pytest.approx(1.0)
    expected = render_refocus(a, info["d_trg"][1])
    assert np.abs(layer.data[1].astype(np.float32) / 255 - expected).max() <= 0.5 / 255 + 1e-6  # the full renderer's own image
    # pressing again while a long sweep runs stops it: the finished sweep stays as it was
    focus.sweep_steps.setValue(64)
    focus.sweep()
    qtbot.waitUntil(lambda: "of 64 planes rendered" in focus.sweep_label.text(), timeout=10_000)
    focus.sweep()
    qtbot.waitUntil(lambda: focus.sweep_button.text() == "Focus sweep", timeout=120_000)
    assert viewer.layers["garden focus sweep"].data.shape[0] == 3
    assert "of 3:" in focus.sweep_label.text()  # the label names the kept sweep's plane again
