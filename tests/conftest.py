import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def textured(rng, h, w, channels=3, sigma=1.5):
    """A smooth random texture in [0.1, 0.9] (enough structure for shift estimates)."""
    from scipy import ndimage

    t = ndimage.gaussian_filter(rng.random((h, w, channels)).astype(np.float32), (sigma, sigma, 0))
    t = (t - t.min()) / (t.max() - t.min())
    return (0.1 + 0.8 * t).astype(np.float32)


def horizontal_shift(a, b, max_shift=20):
    """Sub-pixel s such that b(x) ~= a(x - s), from the 1-D cross-correlation peak."""
    a = (a - a.mean()).mean(axis=2) if a.ndim == 3 else a - a.mean()
    b = (b - b.mean()).mean(axis=2) if b.ndim == 3 else b - b.mean()
    shifts = np.arange(-max_shift, max_shift + 1)
    score = np.array([(np.roll(a, s, axis=1) * b)[:, max_shift:-max_shift].sum() for s in shifts])
    i = int(score.argmax())
    if 0 < i < len(shifts) - 1:
        l, c, r = score[i - 1 : i + 2]
        return shifts[i] + 0.5 * (l - r) / (l - 2 * c + r)
    return float(shifts[i])
