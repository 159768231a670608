import numpy as np

from dpfocus.cli import main as cli_main
from dpfocus.io import read_image


def test_headless_demo_writes_pictures_and_a_real_screenshot(tmp_path, capsys):
    assert cli_main(["demo", "--headless", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("garden_left.png", "garden_right.png", "garden_anaglyph.png", "garden_disparity_gt.png", "garden_disparity.png",
                 "garden_kernel_index.png", "garden_aif.png", "garden_refocused.png", "garden_focus_sweep.png", "viewer.png"):
        assert (tmp_path / name).exists(), out
    shot, bits = read_image(tmp_path / "viewer.png")
    assert bits == 8 and shot.shape[0] >= 600 and shot.shape[1] >= 800
    assert shot.std() > 0.05  # a real window, not a blank frame
    # the focus sweep: six preview planes side by side, each as tall as the half-resolution preview
    strip, _ = read_image(tmp_path / "garden_focus_sweep.png")
    left, _ = read_image(tmp_path / "garden_left.png")
    assert strip.shape[0] == left.shape[0] // 2 and strip.shape[1] == 6 * (left.shape[1] // 2) + 5 * 4
    # the anaglyph differs between its red and cyan channels where there is disparity
    ana, _ = read_image(tmp_path / "garden_anaglyph.png")
    assert np.abs(ana[..., 0] - ana[..., 1]).mean() > 0.002


def test_demo_rejects_unknown_sample(tmp_path, capsys):
    assert cli_main(["demo", "--headless", "-o", str(tmp_path), "--sample", "nope"]) == 2
    assert "choose one of" in capsys.readouterr().err
