import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import textured
from dpfocus.analysis import Analysis, analyze, backends, load_analysis, save_analysis
from dpfocus.classical import kernel_bank
from dpfocus.cli import main as cli_main
from dpfocus.evaluate import ground_truth_analysis, psnr
from dpfocus.io import DPPair, DPPairError, read_image, save_image, views_photo
from dpfocus.optics import DPPSF, Layer, linear_to_srgb, render_layers, srgb_to_linear
from dpfocus.refocus import FocusError, RefocusPreview, focus_disparity, focus_region, point_mask, render_refocus, target_coc
from dpfocus.scenes import SceneConfig, generate_scene


def plane_pair(rng, coc, h=128, w=192):
    aif = textured(rng, h, w, sigma=1.0)
    out = render_layers([Layer(srgb_to_linear(aif), np.ones((h, w), np.float32), coc)], DPPSF())
    return DPPair.from_arrays(linear_to_srgb(out["left"]), linear_to_srgb(out["right"]), name="plane"), aif


def plane_pairs_folder(root, rng, cocs=(("near", 2.0), ("far", 5.0)), bit_depth=16):
    """A folder of ``<name>_L.png`` / ``<name>_R.png`` pairs, each a plane at its own CoC."""
    root.mkdir()
    for name, coc in cocs:
        pair, _ = plane_pair(rng, coc, 64, 96)
        save_image(root / f"{name}_L.png", pair.left, bit_depth)
        save_image(root / f"{name}_R.png", pair.right, bit_depth)
    return root


def test_classical_is_registered():
    assert "classical" in backends()
    with pytest.raises(ValueError, match="unknown backend"):
        analyze(DPPair.from_arrays(np.zeros((8, 8)), np.zeros((8, 8))), backend="nope")


@pytest.mark.parametrize("coc", [-5.0, 4.0])
def test_known_disparity_gets_right_sign_and_scale(rng, coc):
    pair, _ = plane_pair(rng, coc)
    a = analyze(pair)
    expected = DPPSF().disparity(coc)
    assert np.median(a.disparity) == pytest.approx(expected, abs=0.4)
    assert np.median(a.coc) == pytest.approx(coc, abs=0.5)
    np.testing.assert_allclose(a.coc, a.disparity * a.coc_per_disparity, rtol=1e-4, atol=1e-4)
    # the kernel index points at the bank entry nearest the CoC
    k = int(np.median(a.kernel_index))
    assert abs(a.kernel_cocs[k] - coc) < 1.0
    assert a.aif.shape == pair.left.shape and a.confidence.min() >= 0 and a.confidence.max() <= 1


def test_classical_disparity_holds_at_the_left_and_right_borders():
    # the cost filters pad each view with the mirrored *other* view (mirroring swaps a DP pair's
    # views); plain reflection showed them the negative CoC beside the border
    from dpfocus.classical import estimate_disparity

    scene = generate_scene(700023, SceneConfig(192, 288, with_refocus=False, random_psf=False))  # a tuning seed
    error = np.abs(estimate_disparity(scene.left, scene.right, DPPSF())[0] - scene.coc)
    border = np.concatenate([error[:, :12], error[:, -12:]], 1).mean()
    assert border < 1.1 * error[:, 24:-24].mean()  # measured 1.52 px against 1.58 inside; 2.30 with plain reflection


def test_grey_8_bit_pair(rng):
    pair, _ = plane_pair(rng, 3.0)
    grey = DPPair.from_arrays(np.round(pair.left.mean(2) * 255) / 255, np.round(pair.right.mean(2) * 255) / 255, bit_depth=8)
    a = analyze(grey)
    assert a.aif.ndim == 2 and np.median(a.coc) == pytest.approx(3.0, abs=0.6)


def test_aif_is_sharper_than_the_input_on_a_blurred_plane(rng):
    pair, aif = plane_pair(rng, 5.0)
    a = analyze(pair)
    combined = (pair.left + pair.right) / 2
    assert psnr(a.aif[8:-8, 8:-8], aif[8:-8, 8:-8]) > psnr(combined[8:-8, 8:-8], aif[8:-8, 8:-8]) + 1.0


def test_kernel_weights_and_effective_kernel(rng):
    pair, _ = plane_pair(rng, 4.0, 64, 96)
    a = analyze(pair)
    weights = a.kernel_weights(30, 40)
    assert sum(w for _, w in weights) == pytest.approx(1.0)
    kl, kr, k = a.effective_kernels(30, 40)
    np.testing.assert_allclose(kl, kr[:, ::-1], atol=1e-6)
    assert k.sum() == pytest.approx(1.0, abs=1e-4)


def test_refocus_on_the_in_focus_region_returns_the_capture():
    scene = generate_scene(4, SceneConfig(height=160, width=240, focus="on", noise_shot=(1e-7, 1e-7), noise_read=(1e-9, 1e-9), vignetting=(0, 0)))
    truth = ground_truth_analysis(scene)
    in_focus = np.abs(scene.coc) < 0.25
    img = render_refocus(truth, focus_disparity(truth, mask=in_focus))
    assert psnr(img, scene.combined) > 30  # measured 31.7 dB: hidden content behind occluders is unknown


def test_refocus_at_the_captured_focus_gives_back_the_photo_exactly():
    scene = generate_scene(4, SceneConfig(height=120, width=180, focus="on", with_refocus=False))
    a = analyze(DPPair.from_arrays(scene.left, scene.right))
    # analyze attaches the photo the views add up to (their mean in linear light): the rendered
    # photo to 105 dB, where the mean of the encoded values is 43-45 dB off
    np.testing.assert_allclose(a.photo, views_photo(scene.left, scene.right), atol=1e-6)
    assert np.abs(a.photo - scene.combined).max() < 1e-3
    # strength 1 at d_trg = 0: every pixel keeps its captured blur, so the photo comes back as it was
    np.testing.assert_allclose(render_refocus(a, 0.0), a.photo, atol=2e-4)
    # more blur everywhere (strength 2) comes from the photo too: never sharper than it was
    stronger = render_refocus(a, 0.0, strength=2.0)
    assert np.abs(np.diff(stronger, axis=1)).mean() < np.abs(np.diff(a.photo, axis=1)).mean()


def test_occlusion_order_at_a_depth_edge():
    h, w = 64, 128
    aif = np.zeros((h, w, 3), np.float32)
    aif[:, :64] = 1.0  # white foreground on the left, black background on the right
    disparity = np.where(np.arange(w)[None, :] < 64, -6.0, 0.0).astype(np.float32).repeat(h, 0)
    cocs, left, right = kernel_bank(DPPSF(), 12)
    J = DPPSF().coc_per_disparity
    a = Analysis(disparity, np.ones_like(disparity), disparity * J, np.zeros((h, w), np.uint16), cocs, left, right, aif, J, "synthetic")
    on_back = render_refocus(a, d_trg=0.0)[h // 2, :, 0]
    on_front = render_refocus(a, d_trg=-6.0)[h // 2, :, 0]
    assert on_back[68] > 0.1  # the blurred foreground spills over the sharp background
    assert on_front[60] == pytest.approx(1.0, abs=1e-3) and on_front[62] == pytest.approx(1.0, abs=1e-3)
    # an in-focus foreground sends none of its light into the blurred background beside it
    np.testing.assert_allclose(on_front[66:80], 0.0, atol=1e-3)


def test_a_bank_without_an_in_focus_kernel_still_renders_the_focal_plane_sharp(rng):
    h, w = 64, 96
    aif = textured(rng, h, w)
    disparity = np.zeros((h, w), np.float32)
    cocs, left, right = kernel_bank(DPPSF(), 12)
    keep = np.abs(cocs) >= 2  # like the network's learned bank: nothing between -2 and +2 px
    J = DPPSF().coc_per_disparity
    a = Analysis(disparity, np.ones_like(disparity), disparity, np.zeros((h, w), np.uint16), cocs[keep], left[keep], right[keep], aif, J, "synthetic")
    np.testing.assert_allclose(render_refocus(a, d_trg=0.0), aif, atol=2e-3)
    assert 0.0 not in a.kernel_cocs  # the analysis's own bank is left as it was


def test_focus_targets_and_errors(rng):
    pair, _ = plane_pair(rng, 3.0, 64, 96)
    a = analyze(pair)
    assert focus_disparity(a, point=(10, 10)) == pytest.approx(float(np.median(a.disparity)), abs=0.5)
    assert focus_disparity(a, box=(0, 0, 20, 20)) == pytest.approx(focus_disparity(a, mask=np.pad(np.ones((20, 20), bool), ((0, 44), (0, 76)))))
    for kwargs, message in [
        ({"mask": np.zeros((64, 96), bool)}, "empty"),
        ({"mask": np.ones((10, 10), bool)}, "is 10x10 but the image is 96x64"),
        ({"point": (500, 5)}, "outside"),
        ({"box": (200, 200, 300, 300)}, "covers no pixel"),
        ({}, "exactly one"),
    ]:
        with pytest.raises(FocusError, match=message):
            focus_disparity(a, **kwargs)
    assert np.all(target_coc(a, 0.0, strength=0.0) == 0)
    sharp_band = target_coc(a, float(np.median(a.disparity)), tolerance=1.0)
    assert np.mean(sharp_band == 0) > 0.9


def test_a_focus_mask_that_strays_over_a_depth_edge_focuses_on_the_surface_it_covers():
    h, w, J = 80, 120, 1.0
    disparity = np.where(np.arange(w)[None, :] < 60, 0.0, 4.0).astype(np.float32).repeat(h, 0)
    cocs, left, right = kernel_bank(DPPSF(), 8)
    aif = np.full((h, w, 3), 0.5, np.float32)
    a = Analysis(disparity, np.ones_like(disparity), disparity * J, np.zeros((h, w), np.uint16), cocs, left, right, aif, J, "synthetic")
    mask = np.zeros((h, w), bool)
    mask[20:60, 20:66] = True  # a stroke over the left surface that runs 6 px onto the right one
    assert disparity[mask].mean() == pytest.approx(0.52, abs=0.01)  # the plain mean is pulled off the surface
    assert focus_disparity(a, mask=mask) == pytest.approx(0.0, abs=1e-6)
    # a click is too small to lose its rim, and the image border is no depth edge
    assert focus_region(point_mask((h, w), 30, 40)).sum() == point_mask((h, w), 30, 40).sum()
    corner = np.zeros((h, w), bool)
    corner[:20, :20] = True  # loses only its inner 6 px
    assert np.array_equal(focus_region(corner), np.pad(np.ones((14, 14), bool), ((0, 66), (0, 106))))
    assert focus_region(np.ones((h, w), bool)).all()


def test_preview_matches_full_quality(rng):
    scene = generate_scene(6, SceneConfig(height=160, width=240))
    truth = ground_truth_analysis(scene)
    label = max(scene.objects, key=lambda o: o["visible_pixels"])["label"]
    d = focus_disparity(truth, mask=scene.labels == label)
    full = render_refocus(truth, d)
    preview = RefocusPreview(truth, scale=2)
    img = preview.render(d)
    assert img.shape == (80, 120, 3)
    import cv2

    # measured 26.5 dB: the preview gathers, so blur does not spill across occlusion edges
    assert psnr(cv2.resize(full, (120, 80), interpolation=cv2.INTER_AREA), img) > 25
    # strength 0 gives back the all-in-focus image
    assert psnr(preview.render(d, strength=0.0), cv2.resize(truth.aif, (120, 80), interpolation=cv2.INTER_AREA)) > 45
    # the preview and the full render refuse the same controls
    for bad in ({"strength": -1.0}, {"strength": float("nan")}, {"tolerance": -0.5}, {"tolerance": float("inf")}):
        with pytest.raises(FocusError):
            preview.render(d, **bad)
        with pytest.raises(FocusError):
            render_refocus(truth, d, **bad)


def test_analysis_round_trips_through_the_cli_files(tmp_path, rng, capsys):
    pair, _ = plane_pair(rng, 3.0, 64, 96)
    save_image(tmp_path / "p_L.png", pair.left)
    save_image(tmp_path / "p_R.png", pair.right)
    assert cli_main(["analyze", str(tmp_path / "p_R.png"), "-o", str(tmp_path / "out"), "--tile", "512"]) == 0
    assert "--tile has no effect with the classical backend" in capsys.readouterr().err
    back = load_analysis(tmp_path / "out")
    direct = analyze(DPPair.from_arrays(read_image(tmp_path / "p_L.png")[0], read_image(tmp_path / "p_R.png")[0]))
    np.testing.assert_allclose(back.disparity, direct.disparity, atol=1e-5)
    np.testing.assert_array_equal(back.kernel_index, direct.kernel_index)
    np.testing.assert_allclose(back.aif, direct.aif, atol=1 / 65535 + 1e-6)
    np.testing.assert_allclose(back.photo, direct.photo, atol=1 / 65535 + 1e-6)  # the refocus source travels too
    assert back.coc_per_disparity == pytest.approx(direct.coc_per_disparity)
    assert back.meta["backend"] == "classical" and "timings" in back.meta
    for name in ("disparity.tif", "coc.tif", "kernel_index.tif", "aif.png", "analysis.json"):
        assert (tmp_path / "out" / name).exists()
    assert read_image(tmp_path / "out" / "aif.png")[1] == 16
    again = tmp_path / "again"
    save_analysis(back, again)
    np.testing.assert_array_equal(load_analysis(again).kernel_index, back.kernel_index)


def test_cli_analyzes_every_pair_of_a_folder_into_its_own_subfolder(tmp_path, rng, capsys):
    pairs = plane_pairs_folder(tmp_path / "pairs", rng)
    assert cli_main(["analyze", str(pairs), "-o", str(tmp_path / "out")]) == 0
    assert "2 of 2 pairs done" in capsys.readouterr().out
    for name in ("near", "far"):
        back = load_analysis(tmp_path / "out" / name)
        assert back.meta["pair_name"] == name
    # the farther plane is analysed as more blurred: each folder holds its own pair
    near, far = (float(np.median(load_analysis(tmp_path / "out" / n).coc)) for n in ("near", "far"))
    assert far > near + 1.5
    # an unreadable pair is named and skipped, the others still run, and the exit code says so
    (pairs / "broken_L.png").write_bytes(b"not a png")
    (pairs / "broken_R.png").write_bytes(b"not a png")
    assert cli_main(["analyze", str(pairs), "-o", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert "skipped broken" in err and "1 pair(s) skipped (broken)" in err
    assert not (tmp_path / "again" / "broken").exists() and (tmp_path / "again" / "far" / "analysis.json").exists()
    # an unknown backend is refused before any pair runs
    assert cli_main(["analyze", str(pairs), "-o", str(tmp_path / "third"), "--backend", "magic"]) == 2
    assert not (tmp_path / "third").exists()
    # deblur a folder: one all-in-focus image per pair, the unreadable one named and skipped
    assert cli_main(["deblur", str(pairs), "-o", str(tmp_path / "sharp")]) == 2
    assert "skipped broken" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "sharp").iterdir()) == ["far.png", "near.png"]
    np.testing.assert_allclose(read_image(tmp_path / "sharp" / "far.png")[0], load_analysis(tmp_path / "out" / "far").aif, atol=1 / 65535 + 1e-6)


def test_cli_refocus_and_deblur_write_input_bit_depth(tmp_path, rng):
    pair, _ = plane_pair(rng, 3.0, 64, 96)
    save_image(tmp_path / "p_L.png", pair.left, 8)
    save_image(tmp_path / "p_R.png", pair.right, 8)
    mask = np.zeros((64, 96), np.float32)
    mask[10:30, 10:40] = 1
    save_image(tmp_path / "mask.png", mask, 8)
    assert cli_main(["refocus", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "r.png"), "--mask", str(tmp_path / "mask.png")]) == 0
    assert read_image(tmp_path / "r.png")[1] == 8
    assert cli_main(["refocus", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "q.png"), "--box", "0", "0", "30", "30", "--quality", "preview"]) == 0
    assert read_image(tmp_path / "q.png")[0].shape == (64, 96, 3)
    assert cli_main(["deblur", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "d.png")]) == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--mask", "{tmp}/small.png"], "mask is 10x10 but the pair is 96x64"),
        (["--mask", "{tmp}/empty.png"], "mask is empty"),
        (["--mask", "{tmp}/missing.png"], "not found"),
        (["--mask", "{tmp}/broken.png"], "cannot decode"),
        (["--point", "500", "3"], "outside"),
        (["--box", "200", "200", "300", "300"], "covers no pixel"),
        (["--text", "the cat"], "text prompts"),
        ([], "give a focus target"),
        (["--point", "5", "5", "--strength", "nan"], "strength must be a number >= 0"),
        (["--point", "5", "5", "--strength", "-1"], "strength must be a number >= 0"),
        (["--point", "5", "5", "--tolerance", "-3"], "tolerance must be a number of px >= 0"),
    ],
)
def test_cli_refocus_bad_input_exits_2_and_writes_nothing(tmp_path, rng, capsys, extra, message):
    pair, _ = plane_pair(rng, 3.0, 64, 96)
    save_image(tmp_path / "p_L.png", pair.left)
    save_image(tmp_path / "p_R.png", pair.right)
    save_image(tmp_path / "small.png", np.ones((10, 10)), 8)
    save_image(tmp_path / "empty.png", np.zeros((64, 96)), 8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nope")
    args = ["refocus", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "out.png")] + [a.format(tmp=tmp_path) for a in extra]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_cli_never_overwrites_an_input_and_rejects_missing_pairs(tmp_path, rng, capsys):
    pair, _ = plane_pair(rng, 3.0, 32, 48)
    save_image(tmp_path / "p_L.png", pair.left)
    save_image(tmp_path / "p_R.png", pair.right)
    before = (tmp_path / "p_L.png").read_bytes()
    assert cli_main(["deblur", str(tmp_path / "p_R.png"), "-o", str(tmp_path / "p_L.png")]) == 2
    assert (tmp_path / "p_L.png").read_bytes() == before
    assert cli_main(["analyze", str(tmp_path / "nothing_L.png"), "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    assert cli_main(["analyze", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "o"), "--backend", "magic"]) == 2
    assert "unknown backend" in capsys.readouterr().err
    assert cli_main(["analyze", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "o"), "--backend", "network", "--tile", "-5"]) == 2
    assert "tile must be a positive number of px" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("backend", ["classical", "network"])
def test_a_pair_too_small_to_analyse_is_refused_with_its_size(tmp_path, rng, capsys, backend):
    views = rng.random((12, 40, 3)).astype(np.float32)
    save_image(tmp_path / "tiny_L.png", views, 8)
    save_image(tmp_path / "tiny_R.png", views, 8)
    assert cli_main(["analyze", str(tmp_path / "tiny_L.png"), "-o", str(tmp_path / "o"), "--backend", backend]) == 2
    err = capsys.readouterr().err
    assert "tiny_L.png: the pair is 40x12 px" in err and "at least 16 px" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="too small"):
        analyze(DPPair.from_arrays(views[:, :15], views[:, :15], name="strip"), backend=backend)


def test_evaluate_reports_every_figure_on_scenes_and_a_dpdd_folder(tmp_path, capsys):
    scene = generate_scene(8, SceneConfig(height=96, width=144, with_refocus=False))
    root = tmp_path / "dpdd"
    save_image(root / "test_l/source/a.png", scene.left)
    save_image(root / "test_r/source/a.png", scene.right)
    save_image(root / "test_c/source/a.png", scene.combined)
    save_image(root / "test_c/target/a.png", scene.aif)
    json_path = tmp_path / "report.json"
    assert cli_main(["evaluate", "--scenes", "1", "--size", "128", "192", "--dpdd", str(root), "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    for name in ("spearman", "affine_l1_px", "aif_psnr", "input_psnr", "refocus_psnr", "nothing_psnr", "renderer_gt_psnr", "deconvolution_gt_psnr", "analysis_s"):
        assert f"classical_synthetic_{name}: " in out
    assert "classical_dpdd_aif_psnr: " in out and "classical_dpdd_input_psnr: " in out
    import json

    report = json.loads(json_path.read_text())
    assert report["classical"]["dpdd"]["pairs"][0]["pair"] == "a"
    assert 0 <= report["classical"]["synthetic"]["spearman"] <= 1
    synthetic = report["classical"]["synthetic"]
    assert synthetic["deconvolution_gt_psnr"] > synthetic["input_psnr"] + 1  # the deconvolver alone, given the true map
    assert 0 <= synthetic["disparity_over_2px"] <= 1


def test_evaluate_draws_featureless_scenes_on_request(capsys):
    assert cli_main(["evaluate", "--scenes", "1", "--size", "96", "144", "--backend", "classical", "--featureless", "1"]) == 0
    assert "classical_synthetic_spearman: " in capsys.readouterr().out
    assert cli_main(["evaluate", "--scenes", "1", "--featureless", "1.5"]) == 2
    assert "--featureless 1.5" in capsys.readouterr().err
    for args, message in ((["--scenes", "0"], "give at least 1 synthetic scene"), (["--scenes", "-2"], "give at least 1"),
                          (["--size", "8", "300"], "at least 16 px on each side"), (["--backend", "bogus"], "unknown backend 'bogus'")):
        assert cli_main(["evaluate"] + args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_blur_by_radius_matches_a_direct_blur_and_leaves_other_pixels_alone(rng):
    from dpfocus.refocus import blur_by_radius

    img = textured(rng, 80, 120)
    psf = DPPSF()
    where = np.zeros((80, 120), bool)
    where[:, 60:] = True
    for radius in (0.0, 2.5, 7.0):  # 7 px takes the reduced-resolution path
        out = blur_by_radius(img, np.full((80, 120), radius, np.float32), where, psf)
        direct = render_layers([Layer(img, np.ones((80, 120), np.float32), radius)], psf, views=("combined",), bins=np.array([radius], np.float32))["combined"]
        np.testing.assert_array_equal(out[:, :60], img[:, :60])
        assert psnr(np.clip(out[20:60, 75:105], 0, 1), np.clip(direct[20:60, 75:105], 0, 1)) > (40 if radius < 6 else 30)


def test_pull_push_fill_keeps_weighted_values_and_fills_the_rest():
    from dpfocus.optics import pull_push_fill

    values = np.zeros((64, 64, 3), np.float32)
    values[:, :32] = (0.2, 0.4, 0.6)
    values[:, 32:] = 5.0  # garbage where the weight is zero
    weights = np.zeros((64, 64), np.float32)
    weights[:, :32] = 1.0
    filled = pull_push_fill(values, weights)
    np.testing.assert_allclose(filled[:, :32], values[:, :32], atol=1e-6)
    np.testing.assert_allclose(filled[:, 40:], np.broadcast_to(np.float32([0.2, 0.4, 0.6]), (64, 24, 3)), atol=1e-3)


def test_smooth_surfaces_removes_noise_but_keeps_jumps_and_ramps():
    from dpfocus.optics import smooth_surfaces

    rng = np.random.default_rng(3)
    h, w = 120, 240
    ramp = np.tile(np.linspace(4.0, 4.4, w, dtype=np.float32), (h, 1))  # a gently tilted wall
    truth = ramp.copy()
    truth[30:90, 60:120] = 1.0  # an object 3 px of CoC nearer
    noisy = truth + rng.normal(0, 0.1, truth.shape).astype(np.float32)
    confidence = np.ones_like(truth)
    confidence[:, 200:] = 0.0  # unmeasured: filled by the smoothing, not trusted over the rest
    out = smooth_surfaces(noisy, confidence, 0.25)
    wall = np.ones_like(truth, bool)
    wall[26:94, 56:124] = False  # away from the object's edge
    wall[:, 190:] = False
    assert np.abs(out - truth)[wall].std() < 0.35 * np.abs(noisy - truth)[wall].std()
    assert abs(np.polyfit(np.arange(w)[20:180], out[5:25, 20:180].mean(0), 1)[0] * w - 0.4) < 0.05  # the tilt survives
    np.testing.assert_allclose(out[34:86, 64:116], 1.0, atol=0.05)  # the object keeps its level
    assert out[60, 61] < 1.3 and out[60, 118] < 1.3 and out[60, 58] > 4.0 and out[60, 121] > 4.0  # its edges stay sharp


def shapes_pair(rng, coc, h=112, w=160, noise=0.004):
    """A plane of flat-coloured rectangles (edges a sparse gradient prior favours), blurred and noisy."""
    aif = np.full((h, w, 3), 0.5, np.float32)
    for _ in range(14):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        aif[y : y + rng.integers(8, 40), x : x + rng.integers(8, 50)] = rng.uniform(0.1, 0.9, 3)
    out = render_layers([Layer(srgb_to_linear(aif), np.ones((h, w), np.float32), coc)], DPPSF())
    views = [np.clip(linear_to_srgb(out[v]) + rng.normal(0, noise, aif.shape).astype(np.float32), 0, 1) for v in ("left", "right")]
    return views, aif


def test_sparse_prior_steps_sharpen_beyond_the_wiener_estimate(rng):
    import dpfocus.classical as classical

    (left, right), aif = shapes_pair(rng, 5.0)
    coc = np.full(aif.shape[:2], 5.0, np.float32)
    cocs, bank_l, bank_r = kernel_bank(DPPSF(), 12.0)
    inner = (slice(10, -10), slice(10, -10))
    sparse = classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r)
    wiener = classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r, hqs_steps=0)
    blurred = (left + right) / 2
    assert psnr(wiener[inner], aif[inner]) > psnr(blurred[inner], aif[inner]) + 1.0
    assert psnr(sparse[inner], aif[inner]) > psnr(wiener[inner], aif[inner]) + 0.2


def test_deconvolving_pixel_clusters_apart_leaves_no_seams(rng, monkeypatch):
    import dpfocus.classical as classical

    (left, right), _ = shapes_pair(rng, 4.0, 128, 192)
    # patches at another depth, apart: their kernel's pixels form several clusters
    yy, xx = np.mgrid[:128, :192]
    coc = np.where(((yy // 40) % 2 == 0) & ((xx // 48) % 2 == 0), 4.0, 1.0).astype(np.float32)
    cocs, bank_l, bank_r = kernel_bank(DPPSF(), 10.0)
    monkeypatch.setattr(classical, "DECONV_BLOCK", 16)
    clusters = classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r)
    assert len(classical._regions(coc == 4.0, 16)) > 1
    monkeypatch.setattr(classical, "DECONV_BLOCK", 1024)  # one box per kernel
    whole = classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r)
    assert psnr(clusters, whole) > 45


def test_deconvolution_where_asked_matches_the_whole_and_leaves_the_rest(rng):
    import dpfocus.classical as classical

    (left, right), aif = shapes_pair(rng, 4.0, 128, 192)
    coc = np.full(aif.shape[:2], 4.0, np.float32)
    coc[:, 96:] = 1.0
    cocs, bank_l, bank_r = kernel_bank(DPPSF(), 10.0)
    whole = classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r)
    where = np.zeros(coc.shape, bool)
    where[20:100, 10:80] = True  # the 4 px part only: the 1 px kernel is not run at all
    part = classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r, where=where)
    assert np.all(part[~where] == 0)
    assert psnr(part[where], whole[where]) > 45
    assert np.all(classical.deconvolve_aif(left, right, coc, cocs, bank_l, bank_r, where=np.zeros_like(where)) == 0)


def test_the_network_backend_is_listed_without_importing_torch():
    import subprocess
    import sys

    from dpfocus.nn import WEIGHTS_PATH

    code = "import sys; from dpfocus.analysis import backends; print(backends()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[1] == "False"
    assert ("'network'" in out[0]) == WEIGHTS_PATH.is_file()


def test_noise_variance_map_recovers_poisson_gaussian_noise(rng):
    from dpfocus.classical import noise_variance_map

    # a smooth brightness ramp 0.002 .. 0.8 with some texture, noise var = a x + b in linear light
    ramp = np.linspace(0.002, 0.8, 384, dtype=np.float32)[None, :] * np.ones((256, 1), np.float32)
    clean = ramp * (0.9 + 0.2 * textured(rng, 256, 384, channels=1, sigma=4.0)[..., 0])
    a, b = 2e-3, 4e-6
    views = [clean + np.sqrt(a * clean + b) * rng.standard_normal(clean.shape).astype(np.float32) for _ in range(2)]
    var = noise_variance_map(*views)
    true = a * clean + b
    dark, bright = clean < 0.02, clean > 0.5
    assert 0.8 < np.median(var[dark] / true[dark]) < 1.25  # measured 1.02
    assert 0.8 < np.median(var[bright] / true[bright]) < 1.25  # measured 1.01
    assert np.median(var[bright]) > 20 * np.median(var[dark])  # shot noise: bright pixels are noisier


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: (f / "analysis.json").write_text("{not json"), "analysis.json: not readable JSON"),
        (lambda f: (f / "analysis.json").write_text("[1, 2]"), "analysis.json: not an analysis record"),
        (lambda f: (f / "coc.tif").write_bytes(b"II*\x00 truncated"), "coc.tif: "),
        (lambda f: save_image(f / "aif.png", np.zeros((10, 12, 3), np.float32)), "disparity.tif: is 96x64 but aif.png is 12x10"),
        (lambda f: (f / "kernels.npz").write_bytes(b"PK nope"), "kernels.npz: not a kernel bank"),
        (lambda f: (f / "kernel_index.tif").unlink(), "not an analysis folder (missing kernel_index.tif)"),
    ],
)
def test_a_damaged_analysis_folder_is_named_in_one_line(tmp_path, rng, damage, message):
    from dpfocus.io import DPPairError

    pair, _ = plane_pair(rng, 3.0, 64, 96)
    save_analysis(analyze(pair), tmp_path / "out")
    damage(tmp_path / "out")
    with pytest.raises(DPPairError) as err:
        load_analysis(tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_backdrop_plane_ranks_the_wall_and_the_renderer_follows_the_blur(tmp_path):
    from dataclasses import replace

    from scipy.stats import spearmanr

    scene = generate_scene(700015, SceneConfig(height=384, width=576))  # a wall spanning 0.2 px of CoC, three objects
    pair = DPPair.from_arrays(scene.left, scene.right, name="wall")
    a = analyze(pair)
    plane = a.meta["backdrop_plane"]
    assert plane["fraction"] > 0.8 and abs(plane["tilt_x_px"]) + abs(plane["tilt_y_px"]) < 1.5
    wall = scene.labels == 0
    assert spearmanr(a.disparity[wall], scene.disparity[wall]).correlation > 0.95
    np.testing.assert_allclose(a.coc, a.disparity * a.coc_per_disparity, rtol=1e-4, atol=1e-4)
    # the blur map keeps each object's spill onto the wall: the kernel index and the renderer use it
    assert a.blur_coc is not None and spearmanr(a.blur[wall], scene.disparity[wall]).correlation < 0.9
    np.testing.assert_allclose(a.blur_disparity * a.coc_per_disparity, a.blur_coc, rtol=1e-5, atol=1e-5)
    rendered_as_blur = replace(a, disparity=a.blur_disparity, coc=a.blur_coc, blur_coc=None, meta={})
    mask = scene.labels == scene.objects[0]["label"]
    d_trg = focus_disparity(a, mask=mask)
    assert d_trg == pytest.approx(focus_disparity(rendered_as_blur, mask=mask))
    np.testing.assert_allclose(render_refocus(a, d_trg, strength=1.5), render_refocus(rendered_as_blur, d_trg, strength=1.5), atol=1e-6)
    # and it travels with the analysis files
    save_analysis(a, tmp_path / "out")
    back = load_analysis(tmp_path / "out")
    np.testing.assert_allclose(back.blur_coc, a.blur_coc)
    (tmp_path / "out" / "blur_coc.tif").write_bytes(b"not a tiff")
    with pytest.raises(DPPairError, match="blur_coc.tif"):
        load_analysis(tmp_path / "out")


_FRESH_PROCESS_ALLOCATIONS = """
import contextlib, json, os, resource, sys
from pathlib import Path
import numpy as np
from dpfocus._memory import _glibc, reusing_freed_memory

def resident_mib():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

before = resident_mib()
with reusing_freed_memory() if sys.argv[1] == "kept" else contextlib.nullcontext():
    np.ones(24 << 18, np.float32)  # a 24 MiB temporary, touched and freed
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(24 << 18, np.float32)  # and a second one
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    during = resident_mib() - before
after = resident_mib() - before
print(json.dumps({"glibc": _glibc() is not None, "faults": faults, "during": during, "after": after}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_analysis_reuses_freed_memory_and_hands_it_back_after():
    import json
    import subprocess

    # fresh processes, as the CLI runs an analysis (a long-running one's heap may hold such blocks already)
    def allocations(mode: str) -> dict:
        run = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_ALLOCATIONS, mode], capture_output=True, text=True, check=True)
        return json.loads(run.stdout.strip().splitlines()[-1])

    default, kept = allocations("default"), allocations("kept")
    if not kept["glibc"]:
        pytest.skip("not glibc")
    # faults, not pages: transparent huge pages fault 2 MiB at a time
    assert default["faults"] > 10, f"control: by default the second temporary faults its pages in afresh ({default})"
    assert kept["faults"] < default["faults"] / 10, f"during an analysis the second temporary should reuse the first's pages ({kept}, default {default})"
    assert kept["during"] > 20, f"a freed block should stay resident while the analysis runs ({kept})"
    assert kept["after"] < 4, f"after the analysis the kept memory should go back to the system ({kept})"
