"""Kernel inspection core and `dpfocus kernels` (the inspector dock's numbers, without a window)."""

import json

import numpy as np
import pytest

from dpfocus.analysis import analyze
from dpfocus.cli import main
from dpfocus.kernels import kernel_atlas, kernel_usage, pixel_kernels
from dpfocus.refocus import FocusError
from dpfocus.samples import load_sample, sample_dir


@pytest.fixture(scope="module")
def garden():
    return analyze(load_sample("garden"))


def test_atlas_has_one_labelled_tile_per_kernel_showing_that_kernel(garden):
    atlas = kernel_atlas(garden)
    n = len(garden.kernel_cocs)
    assert len(atlas.boxes) == len(atlas.labels) == n
    i, y0, x0, h, w = atlas.boxes[-1]
    tile = atlas.image[y0 : y0 + h, x0 : x0 + w]
    assert tile.max() == pytest.approx(1.0)
    # the largest-CoC kernel is a disk: its tile is lit over a wide area, the in-focus one is a dot
    focus = int(np.argmin(np.abs(garden.kernel_cocs)))
    _, fy, fx, fh, fw = atlas.boxes[focus]
    assert (tile > 0.2).sum() > 20 * (atlas.image[fy : fy + fh, fx : fx + fw] > 0.2).sum()
    assert f"CoC {garden.kernel_cocs[-1]:+.1f} px" in atlas.labels[-1] and "behind focus" in atlas.labels[-1]


def test_usage_counts_every_pixel_once_and_inside_a_mask(garden):
    usage = kernel_usage(garden)
    assert usage.sum() == garden.kernel_index.size and len(usage) == len(garden.kernel_cocs)
    mask = np.zeros(garden.shape, bool)
    mask[:50, :60] = True
    inside = kernel_usage(garden, mask)
    assert inside.sum() == 3000 and np.all(inside <= usage)
    with pytest.raises(FocusError, match="mask is"):
        kernel_usage(garden, mask[:-1])


def test_pixel_kernels_blend_the_top_entries(garden):
    p = pixel_kernels(garden, 10, 10)
    assert p.top[0][0] == garden.kernel_index[10, 10]
    blend = sum(w * (garden.kernels_left[i] + garden.kernels_right[i]) / 2 for i, w, _ in p.top)
    np.testing.assert_allclose(p.combined, blend, atol=1e-6)
    assert p.combined.sum() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(FocusError, match="outside"):
        pixel_kernels(garden, 10, 10_000)


def test_cli_kernels_writes_atlas_usage_and_pixel_kernels(tmp_path, capsys):
    left = sample_dir("garden") / "garden_L.png"
    out = tmp_path / "k"
    assert main(["kernels", str(left), "-o", str(out), "--point", "10", "10", "--point", "300", "200",
                 "--mask", str(sample_dir("garden") / "garden_labels.png")]) == 0
    report = json.loads((out / "kernels.json").read_text())
    assert (out / "atlas.png").is_file() and len(report["points"]) == 2
    assert sum(k["pixels"] for k in report["kernels"]) == 648 * 432
    assert all(k["pixels_in_mask"] <= k["pixels"] for k in report["kernels"])
    assert (out / report["points"][0]["image"]).is_file()
    assert main(["kernels", str(left), "-o", str(tmp_path / "bad"), "--point", "5000", "1"]) == 2
    assert "outside" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_cli_kernels_of_every_pair_of_a_folder(tmp_path, rng, capsys):
    from test_analysis import plane_pairs_folder

    pairs = plane_pairs_folder(tmp_path / "pairs", rng, (("near", 2.0), ("far", 6.0)), bit_depth=8)
    # pixels of one image make no sense for a folder: refused before anything runs
    assert main(["kernels", str(pairs), "-o", str(tmp_path / "k"), "--point", "5", "5"]) == 2
    assert "--mask and --point name pixels of one image" in capsys.readouterr().err and not (tmp_path / "k").exists()
    (pairs / "broken_L.png").write_bytes(b"not a png")
    (pairs / "broken_R.png").write_bytes(b"not a png")
    assert main(["kernels", str(pairs), "-o", str(tmp_path / "k")]) == 2
    assert "1 pair(s) skipped (broken)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["far", "near"]
    mode = {}
    for name in ("near", "far"):
        report = json.loads((tmp_path / "k" / name / "kernels.json").read_text())
        assert report["pair"]["left"].endswith(f"{name}_L.png") and (tmp_path / "k" / name / "atlas.png").is_file()
        assert sum(k["pixels"] for k in report["kernels"]) == 64 * 96
        mode[name] = max(report["kernels"], key=lambda k: k["pixels"])["coc_px"]
    # each pair's usage is its own: the farther plane mostly uses a larger-CoC kernel
    assert mode["far"] > mode["near"] + 2
