"""napari integration with a real viewer (under Xvfb via `make test`)."""

import numpy as np
import pytest

from dpfocus.io import save_image
from dpfocus.napari._reader import get_reader
from dpfocus.samples import sample_names

napari = pytest.importorskip("napari")


def test_reader_declines_what_it_does_not_handle(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    save_image(tmp_path / "photo.png", np.zeros((4, 4)))
    save_image(tmp_path / "lonely_L.png", np.zeros((4, 4)))
    for p in ("notes.txt", "photo.png", "lonely_L.png", "does_not_exist_L.png"):
        assert get_reader(str(tmp_path / p)) is None
    assert get_reader([str(tmp_path / "photo.png")] * 3) is None


def test_reader_returns_nothing_and_does_not_raise_on_corrupt_pair(tmp_path):
    (tmp_path / "k_L.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "k_R.png").write_bytes(b"\x89PNG garbage")
    reader = get_reader(str(tmp_path / "k_L.png"))
    assert reader is not None and reader(str(tmp_path / "k_L.png")) == []


@pytest.mark.parametrize("given", ["scene_R.png", "scene_L.png", "."])
def test_opening_either_view_or_the_folder_adds_both_views(make_napari_viewer, tmp_path, rng, given):
    left = rng.random((30, 40, 3)).astype(np.float32)
    right = np.roll(left, 2, axis=1)
    save_image(tmp_path / "scene_L.png", left)
    save_image(tmp_path / "scene_R.png", right)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / given), plugin="napari-dpfocus")
    assert [layer.name for layer in viewer.layers] == ["scene [L]", "scene [R]"]
    meta = viewer.layers["scene [R]"].metadata["dpfocus"]
    assert meta["view"] == "right" and meta["bit_depth"] == 16 and meta["name"] == "scene"
    assert meta["right_path"].endswith("scene_R.png")
    np.testing.assert_allclose(viewer.layers["scene [L]"].data, left, atol=1 / 65535)


@pytest.mark.parametrize("name", sample_names())
def test_sample_data_adds_pair_and_screenshot_is_not_blank(make_napari_viewer, name):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dpfocus", name)
    assert [layer.name for layer in viewer.layers] == [f"{name} [L]", f"{name} [R]"]
    left = viewer.layers[f"{name} [L]"]
    assert left.metadata["dpfocus"]["bit_depth"] == 16
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 10  # real picture content, not a blank canvas
    # many distinct levels: the canvas shows the image's texture, not a few flat colours
    assert np.unique(shot[..., :3].mean(axis=2).round()).size > 40


def test_writer_keeps_bit_depth_and_writes_maps_as_float_tiff(make_napari_viewer, tmp_path):
    import tifffile

    from dpfocus.io import read_image

    viewer = make_napari_viewer()
    viewer.open_sample("napari-dpfocus", "microscope")
    layer = viewer.layers["microscope [L]"]
    out = tmp_path / "saved.png"
    layer.save(str(out), plugin="napari-dpfocus")
    back, bits = read_image(out)
    assert bits == 16
    np.testing.assert_allclose(back, layer.data, atol=1 / 65535)
    disp = viewer.add_image(np.linspace(-3, 3, 20, dtype=np.float32).reshape(4, 5), name="microscope disparity", metadata={"dpfocus": {"kind": "disparity"}})
    disp.save(str(tmp_path / "disp.tif"), plugin="napari-dpfocus")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "disp.tif"), disp.data)
    labels = viewer.add_labels(np.arange(20, dtype=np.int32).reshape(4, 5), name="microscope kernel index")
    labels.save(str(tmp_path / "k.png"), plugin="napari-dpfocus")
    back, bits = read_image(tmp_path / "k.png")
    np.testing.assert_array_equal(np.round(back * 255), labels.data)


def test_analysis_layers_in_a_real_viewer(make_napari_viewer, rng):
    from dpfocus.analysis import analyze
    from dpfocus.napari._layers import analysis_layer_data

    from dpfocus.samples import load_sample

    pair = load_sample("microscope")
    analysis = analyze(pair)
    viewer = make_napari_viewer()
    for data, kwargs, kind in analysis_layer_data(analysis, pair.name):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    names = {layer.name for layer in viewer.layers}
    assert {"microscope disparity", "microscope CoC", "microscope kernel index", "microscope all-in-focus", "microscope confidence"} <= names
    disp = viewer.layers["microscope disparity"]
    lo, hi = disp.contrast_limits
    assert lo == pytest.approx(-hi)  # symmetric limits on a diverging colormap
    assert disp.metadata["dpfocus"]["units"] == "px"
    kidx = viewer.layers["microscope kernel index"]
    assert "coc_px" in kidx.features and len(kidx.features) == len(analysis.kernel_cocs)


def test_an_analysis_folder_whose_views_moved_opens_its_maps_and_says_so(make_napari_viewer, tmp_path, monkeypatch):
    from dpfocus.analysis import analyze, save_analysis
    from dpfocus.io import load_pair
    from dpfocus.napari import _reader, _widgets
    from dpfocus.scenes import SceneConfig, generate_scene

    scene = generate_scene(3, SceneConfig(height=96, width=144, with_refocus=False))
    save_image(tmp_path / "moved_L.png", scene.left)
    save_image(tmp_path / "moved_R.png", scene.right)
    analysis = analyze(load_pair(tmp_path / "moved_L.png"))
    save_analysis(analysis, tmp_path / "maps")
    (tmp_path / "moved_L.png").unlink()
    messages = []
    monkeypatch.setattr(_reader, "_notify", lambda message, error=True: messages.append((message, error)))
    assert get_reader(str(tmp_path / "maps")) is not None
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "maps"), plugin="napari-dpfocus")
    assert sorted(layer.name for layer in viewer.layers) == sorted(
        f"moved {s}" for s in ("disparity", "CoC", "blur CoC", "kernel index", "all-in-focus", "confidence"))
    assert "views" in messages[-1][0] and "are not there" in messages[-1][0] and messages[-1][1] is False
    np.testing.assert_allclose(viewer.layers["moved disparity"].data, analysis.disparity)
    assert (analysis.meta["pair_id"], "classical") in _widgets.ANALYSES


def test_writer_saves_a_stack_as_one_png_per_plane_or_one_tiff(make_napari_viewer, tmp_path):
    import tifffile

    from dpfocus.io import read_image

    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).random((3, 8, 10, 3)).astype(np.float32)
    layer = viewer.add_image(stack, name="s focus sweep", rgb=True, metadata={"dpfocus": {"kind": "focus_sweep", "bit_depth": 8}})
    written = layer.save(str(tmp_path / "sweep.png"), plugin="napari-dpfocus")
    assert [p.rsplit("/", 1)[-1] for p in written] == ["sweep_0.png", "sweep_1.png", "sweep_2.png"]
    back, bits = read_image(tmp_path / "sweep_2.png")
    assert bits == 8 and back.shape == (8, 10, 3)
    np.testing.assert_allclose(back, stack[2], atol=1 / 255)
    grey = viewer.add_image(stack[..., 0], name="g focus sweep", metadata={"dpfocus": {"kind": "focus_sweep"}})
    grey.save(str(tmp_path / "grey.tif"), plugin="napari-dpfocus")
    assert tifffile.imread(tmp_path / "grey.tif").shape == (3, 8, 10)
