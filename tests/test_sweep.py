"""Focus sweep (a focal stack): core generator and ``dpfocus sweep``."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import textured
from dpfocus.analysis import Analysis
from dpfocus.classical import kernel_bank
from dpfocus.cli import main as cli_main
from dpfocus.io import read_image, save_image
from dpfocus.optics import DPPSF
from dpfocus.refocus import FocusError, RefocusPreview, focus_sweep, render_refocus, sweep_disparities

from test_analysis import plane_pair, plane_pairs_folder


def two_planes(rng, h=64, w=128):
    """Left half near (disparity -4 px), right half far (+4 px), a textured all-in-focus image."""
    aif = textured(rng, h, w, sigma=0.8)
    disparity = np.where(np.arange(w)[None, :] < w // 2, -4.0, 4.0).astype(np.float32).repeat(h, 0)
    J = DPPSF().coc_per_disparity
    cocs, left, right = kernel_bank(DPPSF(), 12)
    return Analysis(disparity, np.ones_like(disparity), disparity * J, np.zeros((h, w), np.uint16), cocs, left, right, aif, J, "synthetic")


def detail(img):
    return float(np.abs(np.diff(img, axis=1)).mean())


@pytest.mark.parametrize("quality", ["full", "preview"])
def test_sweep_moves_the_sharp_plane_from_near_to_far(rng, quality):
    a = two_planes(rng)
    ds = sweep_disparities(a, 5)
    np.testing.assert_allclose(ds, [-4, -2, 0, 2, 4])  # nearest to farthest surface by default
    frames = list(focus_sweep(a, ds, quality=quality))
    assert [d for d, _ in frames] == pytest.approx(list(ds))
    near = [detail(img[:, 4 : img.shape[1] // 2 - 8]) for _, img in frames]
    far = [detail(img[:, img.shape[1] // 2 + 8 : -4]) for _, img in frames]
    assert np.argmax(near) == 0 and np.argmin(near) == 4  # the near half is sharpest first, blurriest last
    assert np.argmax(far) == 4 and np.argmin(far) == 0
    assert np.all(np.diff(near) < 0) and np.all(np.diff(far) > 0)


def test_sweep_frames_are_the_renderers_own_images(rng):
    a = two_planes(rng)
    ds = sweep_disparities(a, 3, near=-1.0, far=3.0)
    np.testing.assert_allclose(ds, [-1, 1, 3])
    for d, img in focus_sweep(a, ds, strength=1.5, quality="full"):
        np.testing.assert_array_equal(img, render_refocus(a, d, strength=1.5))
    preview = RefocusPreview(a)
    for d, img in focus_sweep(a, ds, tolerance=0.5, quality="preview", preview=preview):
        np.testing.assert_array_equal(img, preview.render(d, tolerance=0.5))
        assert img.shape[:2] == preview.shape


def test_sweep_refuses_impossible_settings(rng):
    a = two_planes(rng)
    for steps in (1, 0, -3, 2.5, True):
        with pytest.raises(FocusError, match="at least 2 steps"):
            sweep_disparities(a, steps)
    with pytest.raises(FocusError, match="finite"):
        sweep_disparities(a, 4, near=float("nan"))
    flat = two_planes(rng)
    flat.disparity[:] = 1.5
    with pytest.raises(FocusError, match="spans only 0.000 px of disparity"):
        sweep_disparities(flat, 4)
    np.testing.assert_allclose(sweep_disparities(flat, 3, near=-1, far=3), [-1, 1, 3])  # with ends given it sweeps
    with pytest.raises(FocusError, match="finite"):
        next(focus_sweep(a, [0.0, float("inf")]))
    with pytest.raises(FocusError, match="strength"):
        next(focus_sweep(a, [0.0], strength=-1))
    with pytest.raises(FocusError, match="quality"):
        next(focus_sweep(a, [0.0], quality="best"))


def test_cli_sweep_writes_frames_record_and_animation(tmp_path, rng, capsys):
    pair, _ = plane_pair(rng, 3.0, 64, 96)
    save_image(tmp_path / "p_L.png", pair.left, 8)
    save_image(tmp_path / "p_R.png", pair.right, 8)
    out = tmp_path / "sweep"
    assert cli_main(["sweep", str(tmp_path / "p_L.png"), "-o", str(out), "--steps", "4", "--range", "-2", "4", "--gif", "--quality", "preview"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert [f["image"] for f in record["frames"]] == [f"sweep_{i}.png" for i in range(4)]
    assert [f["d_trg_px"] for f in record["frames"]] == pytest.approx([-2, 0, 2, 4])
    assert record["backend"] == "classical" and record["quality"] == "preview" and record["gif"] == "sweep.gif"
    for frame in record["frames"]:
        img, bits = read_image(out / frame["image"])
        assert bits == 8 and img.shape == (64, 96, 3)  # the input's size and bit depth, previews too
    with Image.open(out / "sweep.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (96, 64)
    # the plane is at CoC 3 px: the frame focused nearest its disparity is the sharpest
    sharpest = int(np.argmax([detail(read_image(out / f["image"])[0]) for f in record["frames"]]))
    plane_d = 3.0 / DPPSF().coc_per_disparity
    assert sharpest == int(np.argmin([abs(f["d_trg_px"] - plane_d) for f in record["frames"]]))
    # a second sweep into the same folder is refused: earlier frames are never overwritten
    capsys.readouterr()
    assert cli_main(["sweep", str(tmp_path / "p_L.png"), "-o", str(out), "--steps", "2"]) == 2
    assert "already holds a sweep" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--steps", "1"], "at least 2 steps"),
        (["--range", "nan", "2"], "two finite disparities"),
        (["--strength", "-1"], "strength must be a number >= 0"),
        (["--tolerance", "nan"], "tolerance must be a number of px >= 0"),
        (["--gif", "--frame-ms", "0"], "at least 10 ms"),
        (["--backend", "magic"], "unknown backend"),
        ([], "one depth"),  # one plane: every focus plane would look the same; the message names --range
    ],
)
def test_cli_sweep_bad_input_exits_2_and_writes_nothing(tmp_path, rng, capsys, extra, message):
    pair, _ = plane_pair(rng, 3.0, 64, 96)
    save_image(tmp_path / "p_L.png", pair.left)
    save_image(tmp_path / "p_R.png", pair.right)
    assert cli_main(["sweep", str(tmp_path / "p_L.png"), "-o", str(tmp_path / "out")] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    if not extra:
        assert "--range NEAR FAR" in err


def test_cli_info_refocus_and_sweep_every_pair_of_a_folder(tmp_path, rng, capsys):
    pairs = plane_pairs_folder(tmp_path / "pairs", rng, bit_depth=8)
    # a target that only fits one pair is refused before anything runs
    assert cli_main(["refocus", str(pairs), "-o", str(tmp_path / "r"), "--point", "5", "5"]) == 2
    assert "give a target that fits every pair" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert cli_main(["refocus", str(pairs), "-o", str(tmp_path / "r"), "--disparity", "0", "--strength", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["far.png", "near.png"]
    img, bits = read_image(tmp_path / "r" / "far.png")
    assert bits == 8 and img.shape == (64, 96, 3)
    # each pair is its own: twice the aperture at the captured focus blurs each plane further
    for n in ("near", "far"):
        assert detail(read_image(tmp_path / "r" / f"{n}.png")[0]) < detail(read_image(pairs / f"{n}_L.png")[0])
    # the depth words fit every pair too; an unreadable pair is named and skipped
    (pairs / "broken_L.png").write_bytes(b"not a png")
    (pairs / "broken_R.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert cli_main(["refocus", str(pairs), "-o", str(tmp_path / "t"), "--text", "background"]) == 2
    err = capsys.readouterr().err
    assert "skipped broken" in err and "1 pair(s) skipped (broken)" in err
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["far.png", "near.png"]
    (pairs / "broken_L.png").unlink()
    (pairs / "broken_R.png").unlink()
    # info on a folder: every pair checked, one JSON line each on stdout, the tally on stderr
    capsys.readouterr()
    assert cli_main(["info", str(pairs)]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [i["name"] for i in lines] == ["far", "near"] and all(i["shape"] == [64, 96, 3] and i["bit_depth"] == 8 for i in lines)
    assert lines[0]["layout"] == "suffix" and "2 of 2 pairs read from" in err
    # a sweep of a folder: one sub-folder per pair, each with its own frames and record
    assert cli_main(["sweep", str(pairs), "-o", str(tmp_path / "s"), "--steps", "3", "--quality", "preview", "--range", "-2", "4"]) == 0
    for name in ("near", "far"):
        record = json.loads((tmp_path / "s" / name / "sweep.json").read_text())
        assert record["pair"]["left"].endswith(f"{name}_L.png") and len(record["frames"]) == 3
    # again into the same folder: refused before any pair runs, nothing rewritten
    stamp = (tmp_path / "s" / "far" / "sweep_0.png").stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main(["sweep", str(pairs), "-o", str(tmp_path / "s"), "--steps", "3"]) == 2
    assert "already holds a sweep" in capsys.readouterr().err
    assert (tmp_path / "s" / "far" / "sweep_0.png").stat().st_mtime_ns == stamp
