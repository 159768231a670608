import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dpfocus.io import DPPair, DPPairError, list_pairs, load_pair, read_image, save_image, save_map
from dpfocus.cli import main as cli_main


def views(rng, h=24, w=32, c=3):
    shape = (h, w, c) if c > 1 else (h, w)
    return rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)


def write_pair(folder: Path, left_name: str, right_name: str, rng, bits=16, **kw):
    l, r = views(rng, **kw)
    for name, img in ((left_name, l), (right_name, r)):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        save_image(folder / name, img, bits)
    return l, r


@pytest.mark.parametrize(
    "left_name,right_name,expected_name,layout",
    [
        ("scene_L.png", "scene_R.png", "scene", "suffix"),
        ("scene_left.png", "scene_right.png", "scene", "token"),
        ("result_pd_left_0007.png", "result_pd_right_0007.png", "result_pd_0007", "token"),
        ("test_l/source/1P0A1071.png", "test_r/source/1P0A1071.png", "1P0A1071", "dpdd"),
        ("left/frame3.png", "right/frame3.png", "frame3", "folders"),
    ],
)
def test_layouts_from_either_view(tmp_path, rng, left_name, right_name, expected_name, layout):
    l, r = write_pair(tmp_path, left_name, right_name, rng)
    for given in (left_name, right_name):
        pair = load_pair(tmp_path / given)
        assert pair.name == expected_name and pair.layout == layout
        assert pair.left_path.name == Path(left_name).name and pair.right_path == tmp_path / right_name
        np.testing.assert_allclose(pair.left, l, atol=1 / 65535)
        np.testing.assert_allclose(pair.right, r, atol=1 / 65535)
        assert pair.bit_depth == 16 and pair.channels == 3 and pair.left.dtype == np.float32


def test_two_files_and_folder(tmp_path, rng):
    l, r = write_pair(tmp_path, "a.png", "b.png", rng, bits=8)
    pair = load_pair(tmp_path / "a.png", tmp_path / "b.png")
    assert pair.bit_depth == 8 and pair.name == "a"
    np.testing.assert_allclose(pair.left, l, atol=1 / 255)
    sub = tmp_path / "one"
    sub.mkdir()
    write_pair(sub, "x_L.png", "x_R.png", rng)
    (sub / "notes.png").write_bytes(b"")  # an unrelated file without a view token is ignored
    assert load_pair(sub).name == "x"


def test_dpdd_tree_attaches_combined_and_target(tmp_path, rng):
    root = tmp_path / "dd_dp_dataset_png"
    l, r = write_pair(root, "test_l/source/s1.png", "test_r/source/s1.png", rng)
    write_pair(root, "test_l/source/s2.png", "test_r/source/s2.png", rng)
    save_image(root / "test_c/source/s1.png", (l + r) / 2)
    save_image(root / "test_c/target/s1.png", l)
    pair = load_pair(root / "test_l/source/s1.png")
    assert pair.combined is not None and pair.target is not None
    np.testing.assert_allclose(pair.target, l, atol=1 / 65535)
    assert [p[2] for p in list_pairs(root)] == ["s1", "s2"]
    with pytest.raises(DPPairError, match="holds 2 pairs"):
        load_pair(root)


def test_grey_16_bit_with_black_white_levels(tmp_path):
    raw = np.array([[64, 576], [1088, 4095]], np.uint16)
    tifffile.imwrite(tmp_path / "g_L.tif", raw)
    tifffile.imwrite(tmp_path / "g_R.tif", raw)
    pair = load_pair(tmp_path / "g_L.tif", black_level=64, white_level=1088)
    np.testing.assert_allclose(pair.left, [[0, 0.5], [1, 1]], atol=1e-6)
    assert pair.channels == 1 and pair.bit_depth == 16
    with pytest.raises(DPPairError, match="white level"):
        load_pair(tmp_path / "g_L.tif", black_level=100, white_level=50)


def test_float_tiff_and_writers_keep_bit_depth(tmp_path, rng):
    img = rng.random((10, 12, 3)).astype(np.float32)
    for bits in (8, 16):
        p = save_image(tmp_path / f"i{bits}.png", img, bits)
        back, b = read_image(p)
        assert b == bits
        np.testing.assert_allclose(back, img, atol=0.5 / (2**bits - 1) + 1e-6)
    d = (rng.random((10, 12)) * 20 - 10).astype(np.float32)
    save_map(tmp_path / "d.tif", d)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "d.tif"), d)
    tifffile.imwrite(tmp_path / "f_L.tif", img)
    tifffile.imwrite(tmp_path / "f_R.tif", img)
    assert load_pair(tmp_path / "f_L.tif").bit_depth == 32


def test_failed_write_leaves_no_partial_file(tmp_path):
    with pytest.raises(Exception):
        save_image(tmp_path / "bad.png", np.zeros((4, 4, 7), np.float32))
    assert list(tmp_path.iterdir()) == []


BAD = {
    "missing partner": (lambda d, rng: save_image(d / "lonely_L.png", np.zeros((4, 4))), "lonely_L.png", "partner view lonely_R.png is missing"),
    "no view token": (lambda d, rng: save_image(d / "plain.png", np.zeros((4, 4))), "plain.png", "cannot tell which view"),
    "not found": (lambda d, rng: None, "nope_L.png", "not found"),
    "mismatched sizes": (
        lambda d, rng: (save_image(d / "m_L.png", np.zeros((4, 4))), save_image(d / "m_R.png", np.zeros((4, 6)))),
        "m_L.png",
        "same size",
    ),
    "mismatched channels": (
        lambda d, rng: (save_image(d / "c_L.png", np.zeros((4, 4, 3))), save_image(d / "c_R.png", np.zeros((4, 4)))),
        "c_L.png",
        "same size and channels",
    ),
    "bit depths differ": (
        lambda d, rng: (save_image(d / "b_L.png", np.zeros((4, 4)), 8), save_image(d / "b_R.png", np.zeros((4, 4)), 16)),
        "b_L.png",
        "same bit depth",
    ),
    "unsupported dtype": (
        lambda d, rng: [tifffile.imwrite(d / f"t_{v}.tif", np.zeros((4, 4), np.int32)) for v in "LR"],
        "t_L.tif",
        "unsupported pixel type int32",
    ),
    "nan": (
        lambda d, rng: [tifffile.imwrite(d / f"n_{v}.tif", np.full((4, 4), np.nan, np.float32)) for v in "LR"],
        "n_L.tif",
        "NaN/Inf",
    ),
    "empty file": (lambda d, rng: [(d / f"e_{v}.png").write_bytes(b"") for v in "LR"], "e_L.png", "file is empty"),
    "corrupt file": (lambda d, rng: [(d / f"k_{v}.png").write_bytes(b"\x89PNG garbage") for v in "LR"], "k_L.png", "cannot decode"),
    "wrong type": (lambda d, rng: [(d / f"w_{v}.txt").write_text("x") for v in "LR"], "w_L.txt", "unsupported file type"),
    "empty folder": (lambda d, rng: (d / "sub").mkdir(), "sub", "no dual-pixel pair"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_name_the_file_and_the_fix(tmp_path, rng, case, capsys):
    make, given, message = BAD[case]
    make(tmp_path, rng)
    with pytest.raises(DPPairError, match=message) as err:
        load_pair(tmp_path / given)
    assert "\n" not in str(err.value)
    assert Path(given).name.split(".")[0].split("_")[0] in str(err.value)
    # the CLI turns the same problem into exit code 2 and one line, no traceback
    assert cli_main(["info", str(tmp_path / given)]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "Traceback" not in err_text


def test_same_file_twice_is_an_error(tmp_path, rng):
    write_pair(tmp_path, "s_L.png", "s_R.png", rng)
    with pytest.raises(DPPairError, match="same file"):
        load_pair(tmp_path / "s_L.png", tmp_path / "s_L.png")


def test_in_memory_pair_validated(rng):
    l, r = views(rng)
    assert DPPair.from_arrays(l, r).shape == l.shape
    with pytest.raises(DPPairError, match="same size"):
        DPPair.from_arrays(l, r[:, :-1])


def test_cli_info_prints_the_pair(tmp_path, rng, capsys):
    write_pair(tmp_path, "q_left.png", "q_right.png", rng)
    assert cli_main(["info", str(tmp_path / "q_right.png")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "q" and info["shape"] == [24, 32, 3] and info["bit_depth"] == 16


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    p = save_image(tmp_path / "perm.png", np.zeros((4, 4), np.float32))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
