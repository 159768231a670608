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


# a randomly initialised tiny Segment Anything, built from segment-anything's own modules
def _tiny_sam_config():
    from dpfocus.prompts import SamConfig

    return SamConfig(
        img_size=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, qkv_bias=True, window_size=4,
        global_attn_indexes=(1,), out_chans=32, prompt_embed_dim=32, mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64,
        decoder_num_heads=8, decoder_downsample_rate=2, num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=32,
    )


TINY_SAM = _tiny_sam_config()


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny SAM with a fixed seed."""
    import torch

    torch.manual_seed(0)
    return TINY_SAM.build().eval()


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_model, tmp_path_factory):
    """Its weights on disk, under an official checkpoint's name: detection must come from the weights."""
    import torch

    path = tmp_path_factory.mktemp("sam") / "sam_vit_h_4b8939.pth"
    torch.save(tiny_model.state_dict(), path)
    return path
