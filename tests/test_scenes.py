import numpy as np
import pytest

from dpfocus.scenes import SceneConfig, generate_scene
from conftest import horizontal_shift

SMALL = dict(height=160, width=240)


def test_same_seed_same_scene():
    a = generate_scene(5, SceneConfig(**SMALL, with_refocus=False))
    b = generate_scene(5, SceneConfig(**SMALL, with_refocus=False))
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.disparity, b.disparity)


@pytest.mark.parametrize("focus", ["front", "on", "behind"])
def test_ground_truth_is_consistent(focus):
    s = generate_scene(3, SceneConfig(**SMALL, focus=focus))
    h, w = SMALL["height"], SMALL["width"]
    assert s.left.shape == s.right.shape == s.combined.shape == s.aif.shape == (h, w, 3)
    assert s.disparity.shape == s.coc.shape == s.labels.shape == (h, w)
    for img in (s.left, s.right, s.combined, s.aif):
        assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    np.testing.assert_allclose(s.coc, s.disparity * s.coc_per_disparity, rtol=1e-5, atol=1e-5)
    if focus == "front":
        assert min(o["coc"] for o in s.objects) > 0  # every object behind the focal plane
    if focus == "behind":
        assert max(o["coc"] for o in s.objects) < 0
    if focus == "on":
        assert min(abs(o["coc"]) for o in s.objects) < 1e-6
    # one refocused image per object; focused on an object, that object's CoC is zero
    assert set(s.refocused) == {o["label"] for o in s.objects}
    # 16-bit quantisation
    np.testing.assert_allclose(s.left * 65535, np.round(s.left * 65535), atol=1e-2)


def test_backdrop_shift_matches_ground_truth_sign_and_size():
    s = generate_scene(7, SceneConfig(height=200, width=300, focus="front", n_objects=(0, 0), ground_probability=0.0, noise_shot=(1e-6, 1e-6), noise_read=(1e-9, 1e-9), vignetting=(0, 0)))
    d = float(np.median(s.disparity))
    assert d > 0.5
    assert horizontal_shift(s.left, s.right) == pytest.approx(d, abs=0.4)


def test_grey_scene_and_8_bit():
    s = generate_scene(2, SceneConfig(**SMALL, grey_probability=1.0, bit_depth=8, with_refocus=False))
    assert s.left.ndim == 2
    np.testing.assert_allclose(s.left * 255, np.round(s.left * 255), atol=1e-3)


def test_featureless_surfaces_carry_only_shading_and_sensor_noise():
    # a backdrop alone, noise-free: with every surface featureless, its sharp image is one colour
    # with gentle shading; with the default (0), the same seed keeps its texture
    quiet = dict(height=96, width=128, n_objects=(0, 0), ground_probability=0.0, noise_shot=(1e-9, 1e-9), noise_read=(1e-12, 1e-12), with_refocus=False)
    plain = generate_scene(4, SceneConfig(**quiet, featureless_probability=1.0))
    textured = generate_scene(4, SceneConfig(**quiet))
    fine = lambda img: float(np.abs(np.diff(img, axis=1)).max())  # noqa: E731
    assert fine(plain.aif) < 0.01 and fine(plain.left) < 0.01
    assert fine(textured.aif) > 0.05
    with pytest.raises(ValueError, match="featureless_probability"):
        SceneConfig(featureless_probability=1.5)


def test_bad_config():
    with pytest.raises(ValueError, match="focus"):
        SceneConfig(focus="sideways")


def test_psf_variety_draws_real_lens_shapes_and_leaves_default_scenes_alone():
    from dpfocus.scenes import random_psf

    shaped = [random_psf(np.random.default_rng(seed), variety=1.0) for seed in range(40)]
    assert any(p.blades for p in shaped) and any(p.cat_eye for p in shaped) and all(p.split_offset != 0 for p in shaped)
    plain = [random_psf(np.random.default_rng(seed)) for seed in range(40)]
    assert not any(p.blades or p.split_offset or p.cat_eye for p in plain)
    # variety 0 draws no extra numbers: the same seed gives the same scene as before the option
    a = generate_scene(11, SceneConfig(height=64, width=96, with_refocus=False))
    b = generate_scene(11, SceneConfig(height=64, width=96, with_refocus=False, psf_variety=0.0))
    np.testing.assert_array_equal(a.left, b.left)
    varied = generate_scene(11, SceneConfig(height=64, width=96, with_refocus=False, psf_variety=1.0))
    assert varied.meta["psf"]["split_offset"] != 0
    # the views still show the ground truth's sign of disparity under an asymmetric PSF
    assert np.sign(np.median(varied.disparity)) == np.sign(horizontal_shift(varied.left, varied.right))
    with pytest.raises(ValueError, match="psf_variety"):
        SceneConfig(psf_variety=2.0)
