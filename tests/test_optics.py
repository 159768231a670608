import math

import numpy as np
import pytest

from dpfocus.optics import (
    DPPSF,
    CalibratedPSF,
    Layer,
    coc_bin_centres,
    kernel_centroid_x,
    linear_to_srgb,
    render_layers,
    srgb_to_linear,
)
from conftest import horizontal_shift, textured

PSFS = [DPPSF(), DPPSF(split_softness=0.0, butterworth_order=math.inf), DPPSF(split_softness=0.35, butterworth_order=2, rim=0.5, falloff=0.4)]


@pytest.mark.parametrize("psf", PSFS)
@pytest.mark.parametrize("coc", [0.0, 0.4, 1.0, 3.3, 8.0, 25.0, -0.4, -6.0])
def test_kernels_mirror_and_normalised(psf, coc):
    kl, kr = psf.kernels(coc)
    assert kl.shape == kr.shape and kl.shape[0] % 2 == 1 and kl.shape[0] == kl.shape[1]
    assert kl.sum() == pytest.approx(1.0, abs=1e-5) and kr.sum() == pytest.approx(1.0, abs=1e-5)
    assert kl.min() >= 0
    np.testing.assert_allclose(kl, kr[:, ::-1], atol=1e-7)
    # round aperture: top-bottom symmetric
    np.testing.assert_allclose(kl, kl[::-1, :], atol=1e-6)


def test_sign_swaps_halves_and_disparity_sign():
    psf = DPPSF()
    kl_p, kr_p = psf.kernels(5.0)
    kl_n, kr_n = psf.kernels(-5.0)
    np.testing.assert_allclose(kl_p, kr_n)
    np.testing.assert_allclose(kr_p, kl_n)
    assert kernel_centroid_x(kr_p) > 0 > kernel_centroid_x(kl_p)
    assert psf.disparity(5.0) > 0 > psf.disparity(-5.0)
    assert psf.disparity(5.0) == pytest.approx(-psf.disparity(-5.0))


def test_hard_disk_factor_matches_theory():
    # half-disk centroid 4r/(3 pi): d = 8 r / (3 pi), so J = 3 pi / 8
    psf = DPPSF(split_softness=0.0, butterworth_order=math.inf)
    assert psf.coc_per_disparity == pytest.approx(3 * math.pi / 8, rel=2e-3)


@pytest.mark.parametrize("psf", PSFS)
def test_disparity_linear_in_radius_including_subpixel(psf):
    J = psf.coc_per_disparity
    for r in [0.25, 0.5, 1.0, 2.0, 5.0, 12.0, 20.0]:
        d = psf.disparity(r)
        assert d > 0
        assert r / d == pytest.approx(J, rel=0.12 if r < 1 else 0.03)
    radii = np.linspace(0.2, 20, 40)
    assert np.all(np.diff([psf.disparity(r) for r in radii]) > 0)


def test_calibrated_bank_without_an_in_focus_entry_images_the_focal_plane_as_a_point():
    base = DPPSF()
    radii = [2.0, 4.0]  # mirrored to -4, -2, 2, 4: nothing measured at focus
    bank = CalibratedPSF(radii, [base.kernels(r)[0] for r in radii], [base.kernels(r)[1] for r in radii])
    kl, kr = bank.kernels(0.0)
    assert kl.shape == kr.shape == (1, 1) and kl[0, 0] == kr[0, 0] == 1
    assert 0 < bank.disparity(1.0) < bank.disparity(2.0)  # blur grows from the point towards the bank


def test_softer_split_gives_less_disparity():
    assert DPPSF(split_softness=0.4).disparity(8) < DPPSF(split_softness=0.05).disparity(8)


def test_calibrated_bank_plugs_into_same_interface():
    base = DPPSF(split_softness=0.2)
    radii = [0.0, 2.0, 4.0, 8.0]
    bank = CalibratedPSF(radii, [base.kernels(r)[0] for r in radii], [base.kernels(r)[1] for r in radii])
    kl, kr = bank.kernels(4.0)
    ref = base.kernels(4.0)[0]
    pad = (kl.shape[0] - ref.shape[0]) // 2
    np.testing.assert_allclose(kl[pad : pad + ref.shape[0], pad : pad + ref.shape[0]], ref, atol=1e-6)
    # mirrored to negative CoC and interpolated in between
    assert bank.disparity(-4.0) == pytest.approx(-bank.disparity(4.0))
    assert bank.disparity(2.0) < bank.disparity(3.0) < bank.disparity(4.0)
    assert bank.coc_per_disparity == pytest.approx(base.coc_per_disparity, rel=0.05)
    with pytest.raises(ValueError, match="odd and square"):
        CalibratedPSF([1.0], [np.ones((4, 4))], [np.ones((4, 4))])
    with pytest.raises(ValueError, match="non-negative"):
        CalibratedPSF([1.0], [-np.ones((3, 3))], [np.ones((3, 3))])


def test_srgb_roundtrip():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)


def test_bins_symmetric_and_fine_near_focus():
    b = coc_bin_centres(25)
    np.testing.assert_allclose(b, -b[::-1])
    assert 0.0 in b and b.max() >= 25 and np.diff(b)[len(b) // 2] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- renderer


def test_in_focus_scene_reproduces_its_aif(rng):
    aif = textured(rng, 64, 80)
    out = render_layers([Layer(aif, np.ones((64, 80), np.float32), np.zeros((64, 80), np.float32))], DPPSF(), views=("left", "right", "combined"))
    for v in out.values():
        np.testing.assert_allclose(v, aif, atol=1e-5)


@pytest.mark.parametrize("coc", [-6.0, -2.0, 3.0, 8.0])
def test_views_are_shifted_by_the_model_disparity(rng, coc):
    psf = DPPSF()
    aif = textured(rng, 96, 160, sigma=2.0)
    out = render_layers([Layer(aif, np.ones((96, 160), np.float32), coc)], psf)
    shift = horizontal_shift(out["left"], out["right"])  # right(x) = left(x - d)
    assert shift == pytest.approx(psf.disparity(coc), abs=0.35)
    assert np.sign(shift) == np.sign(coc)


def test_blur_between_bins_follows_the_coc(rng):
    """A surface between two bins gets the interpolated blur, not the nearest bin's: the DP shift
    grows with the CoC inside a bin, and the picture is closer to the exact blur than the bin's."""
    psf = DPPSF()
    h, w = 96, 160
    aif = textured(rng, h, w, sigma=2.0)
    full = np.ones((h, w), np.float32)
    bins = np.array([3.0, 4.0, 5.0], np.float32)

    def views(coc, bins):
        return render_layers([Layer(aif, full, coc)], psf, bins=bins)

    shifts = [horizontal_shift(v["left"], v["right"]) for v in (views(c, bins) for c in (4.0, 4.3, 4.6))]
    assert shifts[0] < shifts[1] < shifts[2]
    exact = views(4.3, np.array([4.3], np.float32))["left"]
    between = views(4.3, bins)["left"]
    nearest = views(4.0, bins)["left"]
    assert np.abs(between - exact).mean() < 0.5 * np.abs(nearest - exact).mean()


def test_slanted_surface_has_no_seams_and_no_dark_borders():
    h, w = 80, 120
    grey = np.full((h, w, 3), 0.5, np.float32)
    ramp = np.linspace(-12, 12, w, dtype=np.float32)[None, :].repeat(h, 0)  # CoC varies across bins
    out = render_layers([Layer(grey, np.ones((h, w), np.float32), ramp)], DPPSF())
    for v in out.values():
        np.testing.assert_allclose(v, 0.5, atol=2e-3)  # a uniform surface stays uniform everywhere


def test_occlusion_blurred_foreground_spills_over_sharp_background():
    h, w = 60, 120
    back = np.zeros((h, w, 3), np.float32)
    fore = np.ones((h, w, 3), np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[:, :60] = 1
    layers = [Layer(back, np.ones((h, w), np.float32), 0.0), Layer(fore, mask, -8.0)]  # foreground: negative CoC
    out = render_layers(layers, DPPSF(), views=("combined",))["combined"][..., 0]
    row = out[h // 2]
    assert row[64] > 0.1  # foreground light spills onto the sharp background
    assert row[40] == pytest.approx(1.0, abs=1e-3)
    assert np.all(np.diff(row[45:75]) <= 1e-5)  # a smooth, monotone edge: no halo


def test_occlusion_sharp_foreground_over_blurred_background_has_no_halo():
    h, w = 60, 120
    back = np.zeros((h, w, 3), np.float32)
    back[:, 30:90] = 1.0  # bright background band behind the foreground edge
    fore = np.full((h, w, 3), 0.2, np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[:, 60:] = 1
    layers = [Layer(back, np.ones((h, w), np.float32), 8.0), Layer(fore, mask, 0.0)]
    out = render_layers(layers, DPPSF(), views=("combined",))["combined"][..., 0]
    # the in-focus foreground is exactly itself: blurred background never shows through it
    np.testing.assert_allclose(out[:, 60:85], 0.2, atol=1e-4)


def test_render_rejects_unknown_view(rng):
    with pytest.raises(ValueError, match="unknown view"):
        render_layers([Layer(textured(rng, 8, 8), np.ones((8, 8), np.float32), 0.0)], DPPSF(), views=("middle",))


def test_layers_sharing_a_bin_are_composited_far_to_near():
    """Two objects whose CoCs fall in one bin still occlude by depth, not by list order."""
    h, w = 40, 60
    near = np.full((h, w, 3), 0.9, np.float32)
    far = np.full((h, w, 3), 0.1, np.float32)
    full = np.ones((h, w), np.float32)
    bins = np.array([-1.0, 0.0, 1.0], np.float32)
    for order in ([Layer(near, full, 0.20), Layer(far, full, 0.45)], [Layer(far, full, 0.45), Layer(near, full, 0.20)]):
        out = render_layers(order, DPPSF(), views=("combined",), bins=bins)["combined"]
        np.testing.assert_allclose(out, 0.9, atol=1e-5)  # the nearer (smaller CoC) layer is seen


def test_blurred_foreground_rim_reveals_filled_background_not_itself():
    """One all-in-focus image with a per-pixel CoC: behind a foreground that becomes blurred, the
    renderer shows the surrounding background through the soft rim, not a ghost of the foreground."""
    h, w = 64, 128
    colour = np.zeros((h, w, 3), np.float32)
    coc = np.zeros((h, w), np.float32)
    colour[:, 64:] = 1.0  # a white foreground on the right, in front of a black, in-focus background
    coc[:, 64:] = -10.0
    layer = [Layer(colour, np.ones((h, w), np.float32), coc)]
    plain = render_layers(layer, DPPSF(), views=("combined",))["combined"][h // 2, :, 0]
    filled = render_layers(layer, DPPSF(), views=("combined",), fill_hidden=1)["combined"][h // 2, :, 0]
    # just inside the edge the foreground is half transparent: the background behind it is black
    assert filled[64] == pytest.approx(0.5, abs=0.1)
    assert plain[66] > filled[66] + 0.2  # without the fill the foreground showed through itself
    np.testing.assert_allclose(filled[:40], 0.0, atol=1e-3)  # far from the edge: untouched background
    np.testing.assert_allclose(filled[100:], 1.0, atol=1e-3)


@pytest.mark.parametrize("coc", [1.0, 2.0, 6.0])  # the first two run directly, the last through the FFT
def test_convolve_stack_matches_the_fft_convolution_of_a_padded_bank_kernel(rng, coc):
    from dpfocus.optics import convolve_stack, fft_convolve, trim_kernel

    kernel = DPPSF().combined_kernel(coc)
    padded = np.pad(kernel, 20)  # as a bank stores it
    trimmed = trim_kernel(padded)
    assert trimmed.shape == kernel.shape and trimmed.sum() == pytest.approx(kernel.sum())
    stack = rng.random((4, 40, 70)).astype(np.float32)  # colour and alpha, zero outside the frame
    direct = convolve_stack(stack, [padded])[0]
    assert direct.shape == stack.shape
    np.testing.assert_allclose(direct, fft_convolve(stack, [kernel])[0], atol=2e-6)


REAL_LENS_PSFS = [DPPSF(blades=6, butterworth_order=math.inf), DPPSF(split_offset=0.25), DPPSF(split_offset=-0.2, blades=7),
                  DPPSF(cat_eye=0.6, cat_eye_angle=math.pi / 2)]


@pytest.mark.parametrize("psf", REAL_LENS_PSFS)
def test_real_lens_shapes_keep_the_dp_geometry(psf):
    for coc in (3.0, 9.0):
        kl, kr = psf.kernels(coc)
        nl, nr = psf.kernels(-coc)
        assert kl.sum() == pytest.approx(1.0, abs=1e-5) and kr.sum() == pytest.approx(1.0, abs=1e-5) and kl.min() >= 0
        # in front of focus the aperture's image is turned by 180 degrees, view by view
        np.testing.assert_allclose(nl, kl[::-1, ::-1], atol=1e-7)
        np.testing.assert_allclose(nr, kr[::-1, ::-1], atol=1e-7)
        # the right view's kernel lies right of the left's behind focus, left of it in front
        assert kernel_centroid_x(kr) > kernel_centroid_x(kl) and psf.disparity(-coc) == pytest.approx(-psf.disparity(coc))
    radii = np.linspace(0.5, 20, 30)
    assert np.all(np.diff([psf.disparity(r) for r in radii]) > 0)


def test_unequal_halves_and_vignetting_break_the_mirror_symmetry():
    kl, kr = DPPSF(split_offset=0.25).kernels(9.0)
    assert not np.allclose(kl, kr[:, ::-1], atol=1e-3)
    assert (kr > 1e-4).sum() < 0.8 * (kl > 1e-4).sum()  # the split right of centre: a smaller right half
    kl, kr = DPPSF(cat_eye=0.6, cat_eye_angle=math.pi / 2).kernels(9.0)  # the barrel cuts from above
    ys = np.arange(kl.shape[0]) - kl.shape[0] // 2
    combined = kl + kr
    assert (combined.sum(1) * ys).sum() / combined.sum() > 1.0  # the lemon lies below the centre
    # a hexagonal stop: the combined kernel's top row of support is a flat edge, not a point
    def top_row_width(kernel):
        solid = kernel > 0.5 * kernel.max()
        return int(solid[np.nonzero(solid.any(axis=1))[0][0]].sum())

    hexagon = DPPSF(blades=6, butterworth_order=math.inf, split_softness=0.0).combined_kernel(10.0)
    disk = DPPSF(butterworth_order=math.inf, split_softness=0.0).combined_kernel(10.0)
    assert top_row_width(hexagon) >= 9 and top_row_width(hexagon) > top_row_width(disk)


def test_psf_settings_outside_their_range_are_refused():
    for bad in (dict(blades=2), dict(blades=40), dict(split_offset=0.7), dict(cat_eye=1.5)):
        with pytest.raises(ValueError):
            DPPSF(**bad)


def _wall_scene(rng, h=240, w=360, tilt=(0.3, -0.2), noise=0.8):
    """A wall whose CoC spans a fraction of a pixel, a nearer square object, a halo of the
    object's CoC spilled onto the wall around it, and noisy per-pixel evidence."""
    x = (np.arange(w) + 0.5) / w - 0.5
    y = (np.arange(h) + 0.5) / h - 0.5
    wall = (6.0 + tilt[0] * x[None, :] + tilt[1] * y[:, None]).astype(np.float32)
    obj = np.zeros((h, w), bool)
    obj[80:160, 120:200] = True
    halo = np.zeros((h, w), bool)
    halo[72:168, 112:208] = True
    halo &= ~obj
    truth = np.where(obj, 1.0, wall).astype(np.float32)
    estimate = np.where(obj | halo, 1.0, wall + rng.normal(0, 0.15, (h, w))).astype(np.float32)
    evidence = np.where(obj | halo, 1.0, wall + rng.normal(0, noise, (h, w))).astype(np.float32)
    image = np.where(obj[..., None], np.float32([0.8, 0.2, 0.2]), np.float32([0.2, 0.5, 0.3]))
    image = (image + rng.normal(0, 0.02, image.shape)).astype(np.float32)
    return truth, estimate, evidence, image, obj, halo


def test_backdrop_plane_ranks_a_wall_spanning_a_fraction_of_a_pixel(rng):
    from scipy.stats import spearmanr

    from dpfocus.optics import flatten_backdrop

    truth, estimate, evidence, image, obj, halo = _wall_scene(rng)
    wall = ~obj
    before = spearmanr(estimate[wall & ~halo], truth[wall & ~halo]).correlation
    flat, plane = flatten_backdrop(estimate, evidence, np.ones_like(estimate), image)
    after = spearmanr(flat[wall], truth[wall]).correlation
    assert before < 0.6 and after > 0.99
    assert plane.tilt_x == pytest.approx(0.3, abs=0.05) and plane.tilt_y == pytest.approx(-0.2, abs=0.05)
    # the object keeps its own CoC (its corner pixels, blurred half into the wall's colour, may
    # not); the halo around it has the wall's colour and joins the wall
    inner = np.zeros_like(obj)
    inner[81:159, 121:199] = True
    np.testing.assert_array_equal(flat[inner], estimate[inner])
    assert np.all(np.abs(flat[halo] - truth[halo]) < 0.05)
    # keep: part of each pixel's own difference from the plane stays
    kept, _ = flatten_backdrop(estimate, evidence, np.ones_like(estimate), image, keep=0.5)
    np.testing.assert_allclose(kept[wall & ~halo], (flat + 0.5 * (estimate - flat))[wall & ~halo], atol=1e-5)
    # a large map is examined at a reduced size and gets the same plane in its own px
    big = [np.kron(a, np.ones((4, 4), np.float32)) for a in (estimate, evidence)]
    big_flat, big_plane = flatten_backdrop(2 * big[0], 2 * big[1], np.ones_like(big[0]), np.kron(image, np.ones((4, 4, 1), np.float32)))
    assert big_flat.shape == big[0].shape and big_plane.tilt_x == pytest.approx(0.6, abs=0.1)


def test_backdrop_plane_leaves_ramps_and_scattered_maps_alone(rng):
    from dpfocus.optics import flatten_backdrop

    _, estimate, evidence, image, _, _ = _wall_scene(rng, tilt=(0.0, 4.0))  # a ground plane: its ramp ranks it
    same, plane = flatten_backdrop(estimate, evidence, np.ones_like(estimate), image)
    assert plane is None and same is estimate
    scattered = rng.uniform(-10, 10, (120, 160)).astype(np.float32)  # no value covers 15 % of the image
    same, plane = flatten_backdrop(scattered, scattered, np.ones_like(scattered), np.zeros((120, 160), np.float32))
    assert plane is None and same is scattered


def test_a_blurred_foreground_spills_its_coc_over_its_blur_radius_and_no_farther():
    from dpfocus.optics import foreground_spill

    h, w = 80, 120
    yy, xx = np.mgrid[0:h, 0:w]
    coc = np.full((h, w), 3.0, np.float32)  # a wall behind the focus
    disk = (yy - 40) ** 2 + (xx - 40) ** 2 <= 15**2
    coc[disk] = -6.0  # a blurred foreground disk: radius 6 px of blur
    spilled = foreground_spill(coc)
    dist = np.hypot(yy - 40, xx - 40) - 15
    assert np.all(spilled[disk] == -6.0)  # the surface keeps its own values
    assert np.all(spilled[(dist > 1) & (dist < 5)] == -6.0)  # the wall within its reach shows its blur
    assert np.all(spilled[dist > 7.5] == 3.0)  # beyond the blur radius the wall is left alone
    # an in-focus foreground spills nothing, and a farther surface never spills onto a nearer one
    sharp = np.where(disk, np.float32(0.2), coc)
    np.testing.assert_array_equal(foreground_spill(sharp), sharp)
    behind = np.where(disk, np.float32(12.0), np.float32(-2.0))
    spilled_behind = foreground_spill(behind)
    assert np.all(spilled_behind[~disk] == -2.0)
    # the nearer wall's 2 px blur reaches over the disk's rim, not into it
    assert np.all(spilled_behind[disk & (dist > -1)] == -2.0) and np.all(spilled_behind[disk & (dist < -3)] == 12.0)


def test_the_spill_map_is_the_same_when_worked_out_at_a_reduced_size():
    from dpfocus.optics import SPILL_WORK_SIZE, foreground_spill

    h, w = SPILL_WORK_SIZE, 2 * SPILL_WORK_SIZE  # worked out at half size
    yy, xx = np.mgrid[0:h, 0:w]
    coc = np.where((yy - 300) ** 2 + (xx - 500) ** 2 <= 100**2, np.float32(-10.0), np.float32(4.0))
    spilled = foreground_spill(coc)
    dist = np.hypot(yy - 300, xx - 500) - 100
    assert np.all(spilled[(dist > 2) & (dist < 8)] == -10.0)
    assert np.all(spilled[dist > 12] == 4.0)
