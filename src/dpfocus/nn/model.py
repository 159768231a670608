"""A compact disparity-aware kernel-estimation network for DP deblurring (K3DN-style).

Data flow (all convolutions small; the heavy parts run at 1/4 resolution):

* **Encoder.** A shared feature extractor on each view (1/4 res) for matching, and a pair encoder
  on ``[L, R]`` (a skip at 1/2 res, features ``F`` at 1/4 res) for restoration; full resolution is
  only pixel-(un)shuffled, every convolution runs at 1/2 or 1/4 resolution.
* **Disparity.** Two cost volumes at 1/2 res over horizontal shifts ``s`` (``f_L(x)`` against
  ``f_R(x + s)``, since ``B_R(x) = B_L(x - d)``): windowed normalised cross-correlation of the
  high-passed views, and cosine similarity of learned features; pooled to 1/4 res, a head gives
  ``F_G`` and shift logits added to the tempered correlation; the signed disparity (px, full res) is the soft-argmax
  refined by a residual. The normalised disparity feature
  is ``F_D = 2 tanh(Norm(F_G) / rho) - 1`` (Norm per pixel over channels); CoC features ``F_init = J F_D`` are fused with ``F_G``.
* **Kernel set.** N trainable left kernels; ``K_R = flip_x(K_L)`` by construction, ``K = (K_L + K_R)/2``
  (so every entry is left/right symmetric). Entries start as DP kernels at evenly spaced signed CoC.
* **Retrieval.** Per pixel, softmax over the N entries of ``-(C - c_n)^2 / (2 s^2) + h_n(F_D, F_init)``
  with ``C = J d`` and ``c_n`` each entry's own CoC (from its centroid separation): argmax is the
  kernel index, the weights feed the inspector.
* **PSF block.** ``F`` is deblurred with each entry's regularised Fourier inverse
  ``F^-1(conj(F(K)) / (|F(K)|^2 + eps |F(grad)|^2))`` as a depthwise convolution, blended by the weights.
* **SRP block.** A local attention gate over a 3x3 neighbourhood of ``[F, F_deblurred, F_D]`` keeps
  regions that were already sharp from being over-sharpened.
* **Decoder** to a residual on the combined photo ``(L + R) / 2``: the all-in-focus image.
* **Reblur path** (no parameters of its own): the same kernels, applied forward to the features of
  a sharp image with the retrieval weights of a (possibly shifted) CoC map, decoded by the same
  decoder. In training it re-creates the blurred photo from the sharp target; at test time, with
  ``F_D - mean_mask(F_D)`` and ``d - d_trg``, it renders the refocused image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NetConfig", "DPKernelNet", "NetOutput"]


@dataclass(frozen=True)
class NetConfig:
    """Architecture and ablation switches (stored with the weights)."""

    width: int = 32  # feature channels at 1/4 resolution
    match_width: int = 24  # matching features
    max_shift: int = 16  # cost volume range at 1/2 res (+-32 px at full res)
    n_kernels: int = 10
    kernel_size: int = 13  # at 1/4 res
    max_coc: float = 24.0  # the initial bank spans +-max_coc px (full res)
    rho: float = 1.0
    psf_block: bool = True
    context: bool = True  # encoder-decoder over the disparity features (1/4 -> 1/16 -> 1/4)
    srp_block: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


#: NCC peak (over all shifts) below which a pixel has no DP evidence of its own, and above which it has
#: full evidence. Noise alone peaks at about 0.2-0.3 (the best of 65 shifts); a flat or clipped sky
#: at 0. Garden sample with a flat white sky: confidence there 0.58 -> 0.00, elsewhere 0.64 -> 0.59;
#: tuning Spearman (the confidence weights the surface smoothing) 0.8564 -> 0.8559
NCC_EVIDENCE = (0.1, 0.3)
#: px of CoC: refocusing retrieves target kernels by the target CoC alone, a Gaussian of this width
#: around each entry's CoC (the shipped entries lie 2.5-5 px apart). The learned retrieval term
#: reads the captured blur from the features and outweighs the CoC prior at any width: with it, a
#: refocus that shifted F_D by its mean over the mask re-rendered the captured blur (0.34 px more
#: d_trg moved no pixel by more than 0.0006), 28.7 dB on the benchmark, below doing nothing. Tuning
#: (seeds 500000-500011 / 700000-700011): 26.52 / 29.43 -> 31.05 / 32.86 dB (doing nothing 29.52 /
#: 31.76); widths of 1, 1.5 and 3 px gave 31.09 / 32.55, 31.13 / 32.79 and 30.82 / 32.75 dB
REFOCUS_SIGMA = 2.0


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalise over channels at each pixel (no image statistics: tiles give the same result)."""
    mean = x.mean(1, keepdim=True)
    return (x - mean) / (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.1, inplace=True))


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, 1, 1)
        self.b = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.leaky_relu(self.a(x), 0.1))


class _Context(nn.Module):
    """Encoder-decoder over the disparity features, 1/4 -> 1/8 -> 1/16 and back with skips: lets
    weakly textured regions take their depth from what surrounds them (a wide receptive field at
    little cost, since it runs at low resolution)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.down8 = nn.Sequential(_conv(c, c, 2), _Res(c))
        self.down16 = nn.Sequential(_conv(c, c, 2), _Res(c))
        self.up8 = _conv(2 * c, c)
        self.up4 = nn.Conv2d(2 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x8 = self.down8(x)
        x16 = self.down16(x8)
        u8 = self.up8(torch.cat([F.interpolate(x16, size=x8.shape[-2:], mode="bilinear", align_corners=False), x8], 1))
        return x + self.up4(torch.cat([F.interpolate(u8, size=x.shape[-2:], mode="bilinear", align_corners=False), x], 1))


@dataclass
class NetOutput:
    aif: torch.Tensor  # N x 3 x H x W
    disparity: torch.Tensor  # N x 1 x H x W, px (full res)
    coc: torch.Tensor  # J * disparity
    weights: torch.Tensor  # N x K x H/4 x W/4 retrieval weights
    confidence: torch.Tensor  # N x 1 x H/4 x W/4 in [0, 1]: shift certainty where the views show detail
    f_d: torch.Tensor  # normalised disparity feature (1/4 res)
    feats: dict  # what the reblur path and the training loss reuse


def _dp_kernel_init(n: int, size: int, max_coc: float) -> tuple[np.ndarray, np.ndarray]:
    """Left DP kernels at evenly spaced signed CoC (at 1/4 res), and those CoCs (full res px)."""
    from ..optics import DPPSF

    psf = DPPSF(split_softness=0.15)
    cocs = np.linspace(-max_coc, max_coc, n).astype(np.float32)
    out = np.zeros((n, size, size), np.float32)
    for i, c in enumerate(cocs):
        kl, _ = psf.kernels(float(c) / 4)
        s = kl.shape[0]
        if s > size:
            lo = (s - size) // 2
            kl = kl[lo : lo + size, lo : lo + size]
        lo = (size - kl.shape[0]) // 2
        out[i, lo : lo + kl.shape[0], lo : lo + kl.shape[1]] = kl
        out[i] /= out[i].sum()
    return out, cocs


class DPKernelNet(nn.Module):
    """See the module docstring. ``forward(left, right)`` takes N x 3 x H x W in [0, 1], H, W % 4 == 0."""

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or NetConfig()
        w, m = c.width, c.match_width
        # full resolution is only ever touched by (un)shuffling pixels: the convolutions start at 1/2
        self.match = nn.Sequential(nn.PixelUnshuffle(2), _conv(12, m), nn.Conv2d(m, m, 3, 1, 1))  # 1/2 res
        self.enc2 = nn.Sequential(nn.PixelUnshuffle(2), _conv(24, 24))
        self.enc4 = nn.Sequential(_conv(24, w, 2), _Res(w))
        n_shift = 2 * c.max_shift + 1
        self.disp_head = nn.Sequential(_conv(2 * n_shift + m, w, k=1), _conv(w, w), _Context(w) if c.context else _Res(w))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))  # the raw matching cost votes too
        self.shift_logits = nn.Conv2d(w, n_shift, 3, 1, 1)
        self.disp_residual = nn.Conv2d(w, 1, 3, 1, 1)
        self.fuse = nn.Sequential(_conv(2 * w, w), nn.Conv2d(w, w, 3, 1, 1))
        self.retrieval = nn.Sequential(_conv(w, w // 2), nn.Conv2d(w // 2, c.n_kernels, 3, 1, 1))
        init, cocs = _dp_kernel_init(c.n_kernels, c.kernel_size, c.max_coc)
        self.kernel_logits = nn.Parameter(torch.from_numpy(np.log(init + 1e-4)))
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(2.0 * (cocs[1] - cocs[0]))))
        self.log_eps = nn.Parameter(torch.tensor(math.log(1e-2)))
        self.J = nn.Parameter(torch.tensor(1.0))  # CoC per disparity, fitted in training
        self.srp = nn.Sequential(_conv(3 * w, w // 2), nn.Conv2d(w // 2, w, 1))
        self.post = _Res(w)
        self.dec2 = nn.Sequential(_conv(w + 24, 24), nn.Conv2d(24, 12, 3, 1, 1), nn.PixelShuffle(2))

    # -- kernels
    def kernels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left, right and combined kernels (N x S x S at 1/4 res), each summing to one."""
        kl = torch.softmax(self.kernel_logits.flatten(1), dim=1).view_as(self.kernel_logits)
        kr = torch.flip(kl, dims=[-1])  # K_R = flip_x(K_L): symmetric by construction
        return kl, kr, (kl + kr) / 2

    def kernel_cocs(self) -> torch.Tensor:
        """Each entry's signed CoC (full-res px): J times its left/right centroid separation."""
        kl, kr, _ = self.kernels()
        x = torch.arange(kl.shape[-1], dtype=kl.dtype, device=kl.device)
        cx_l = (kl.sum(1) * x).sum(-1)
        cx_r = (kr.sum(1) * x).sum(-1)
        return self.J.detach() * 4 * (cx_r - cx_l)

    def inverse_kernels(self, k: torch.Tensor) -> torch.Tensor:
        """Regularised Fourier inverses of the combined kernels (N x S x S).

        ``conj(F(K)) / (|F(K)|^2 + eps |F(grad)|^2)`` (a gradient prior keeps the inverse compact),
        cropped to S x S with a Hann window and rescaled to unit DC gain.
        """
        n, s, _ = k.shape
        size = 4 * s
        padded = torch.zeros(n, size, size, dtype=k.dtype, device=k.device)
        padded[:, :s, :s] = k
        padded = torch.roll(padded, shifts=(-(s // 2), -(s // 2)), dims=(1, 2))
        fk = torch.fft.rfft2(padded)
        fy = torch.fft.fftfreq(size, dtype=k.dtype, device=k.device).view(-1, 1)
        fx = torch.fft.rfftfreq(size, dtype=k.dtype, device=k.device).view(1, -1)
        grad2 = 4 * torch.sin(math.pi * fy) ** 2 + 4 * torch.sin(math.pi * fx) ** 2
        inv = torch.fft.irfft2(torch.conj(fk) / (fk.abs() ** 2 + self.log_eps.exp() * grad2), s=(size, size))
        inv = torch.roll(inv, shifts=(s // 2, s // 2), dims=(1, 2))[:, :s, :s]
        hann = torch.hann_window(s + 2, periodic=False, dtype=k.dtype, device=k.device)[1:-1]
        inv = inv * (hann[:, None] * hann[None, :])
        return inv / inv.sum((1, 2), keepdim=True)

    @staticmethod
    def _apply_bank(feat: torch.Tensor, bank: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_n weights_n * (feat * bank_n)``: a spatially varying kernel per pixel.

        With gradients, one grouped convolution with every entry, then the weighted sum (a blended
        kernel per pixel is the same by linearity, but its unfolded patches take 17x the memory and
        4x the time); without (inference), one depthwise convolution per entry accumulated in place
        (the least memory). Same result.
        """
        n_b, c, h, w = feat.shape
        k, s = bank.shape[0], bank.shape[-1]
        padded = F.pad(feat, (s // 2,) * 4, mode="replicate")
        if torch.is_grad_enabled():
            every = F.conv2d(padded, bank[None].expand(c, k, s, s).reshape(c * k, 1, s, s), groups=c)
            return (every.view(n_b, c, k, h, w) * weights[:, None]).sum(2)
        out = torch.zeros_like(feat)
        for i in range(bank.shape[0]):
            out += weights[:, i : i + 1] * F.conv2d(padded, bank[i].expand(c, 1, s, s), groups=c)
        return out

    # -- disparity
    def _cost_volume(self, fl: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
        s = self.config.max_shift
        padded = F.pad(fr, (s, s, 0, 0), mode="replicate")
        w = fl.shape[-1]
        costs = [(fl * padded[..., s + k : s + k + w]).sum(1, keepdim=True) for k in range(-s, s + 1)]  # cosine
        return torch.cat(costs, 1)

    def _ncc_volume(self, left: torch.Tensor, right: torch.Tensor, window: int = 7) -> torch.Tensor:
        """Windowed normalised cross-correlation of high-passed grey views at 1/2 res, pooled to 1/4."""
        def high_pass(img: torch.Tensor) -> torch.Tensor:
            g = F.avg_pool2d(img.mean(1, keepdim=True), 2)
            return g - F.avg_pool2d(F.pad(g, (2, 2, 2, 2), mode="replicate"), 5, 1)

        box = lambda t: F.avg_pool2d(F.pad(t, (window // 2,) * 4, mode="replicate"), window, 1)  # noqa: E731
        hl, hr = high_pass(left), high_pass(right)
        s = self.config.max_shift
        padded = F.pad(hr, (s, s, 0, 0), mode="replicate")
        w = hl.shape[-1]
        energy_l = box(hl * hl)
        costs = []
        for k in range(-s, s + 1):
            shifted = padded[..., s + k : s + k + w]
            costs.append(box(hl * shifted) / (energy_l * box(shifted * shifted) + 1e-10).sqrt())
        return F.avg_pool2d(torch.cat(costs, 1), 2)

    def retrieval_logits(self, coc4: torch.Tensor, f_d: torch.Tensor, f_g: torch.Tensor) -> torch.Tensor:
        """The retrieval's logits from a CoC map (1/4 res) and the disparity features: the CoC
        prior plus the learned term; their softmax over the entries is the retrieval weights."""
        f_init = self.J * f_d  # CoC features
        fused = self.fuse(torch.cat([f_g, f_init], 1))
        centres = self.kernel_cocs().view(1, -1, 1, 1)
        prior = -((coc4 - centres) ** 2) / (2 * self.log_sharpness.exp() ** 2)
        return prior + self.retrieval(fused)

    def disparity_stage(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The matching half of ``forward``: ``(disp4, confidence, f_g)`` at 1/4 res, disparity in
        full-res px. About three quarters of a forward pass's time on a CPU (the correlation volumes);
        callers that need only the disparity stop here."""
        c = self.config
        fl, fr = self.match(left), self.match(right)  # 1/2 res
        learned = F.avg_pool2d(self._cost_volume(F.normalize(fl, dim=1), F.normalize(fr, dim=1)), 2)  # 1/4 res
        ncc = self._ncc_volume(left, right)
        f_g = self.disp_head(torch.cat([ncc, learned, F.avg_pool2d(fl, 2)], 1))
        logits = self.log_temperature.exp() * ncc + self.shift_logits(f_g)
        prob = torch.softmax(logits, 1)
        shifts = torch.arange(-c.max_shift, c.max_shift + 1, dtype=left.dtype, device=left.device).view(1, -1, 1, 1)
        disp4 = 2 * (prob * shifts).sum(1, keepdim=True) + self.disp_residual(f_g)  # shifts are 1/2-res px
        # the softmax is certain even where the views are featureless (it has learned to fill those
        # from context), so its peak counts only where the correlation itself finds the match
        evidence = ((ncc.max(1, keepdim=True).values - NCC_EVIDENCE[0]) / (NCC_EVIDENCE[1] - NCC_EVIDENCE[0])).clamp(0, 1)
        confidence = prob.max(1, keepdim=True).values * evidence
        return disp4, confidence, f_g

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> NetOutput:
        return self.restoration_stage(left, right, *self.disparity_stage(left, right))

    def restoration_stage(self, left: torch.Tensor, right: torch.Tensor, disp4: torch.Tensor, confidence: torch.Tensor,
                          f_g: torch.Tensor) -> NetOutput:
        """The rest of ``forward``, given ``disparity_stage``'s outputs for the same views."""
        f_d = 2 * torch.tanh(_pixel_norm(f_g) / self.config.rho) - 1
        coc4 = self.J * disp4
        logits = self.retrieval_logits(coc4, f_d, f_g)
        weights = torch.softmax(logits, dim=1)
        # restoration
        combined = (left + right) / 2
        e2 = self.enc2(torch.cat([left, right], 1))
        feat = self.enc4(e2)
        aif = self._decode(self._restore(feat, weights, f_d), e2, combined)
        disparity = upsample_disparity(disp4)
        return NetOutput(aif, disparity, self.J * disparity, weights, confidence, f_d,
                         {"f_g": f_g, "disp4": disp4, "retrieval_logits": logits})

    def _restore(self, feat: torch.Tensor, weights: torch.Tensor, f_d: torch.Tensor) -> torch.Tensor:
        if self.config.psf_block:
            _, _, k = self.kernels()
            deblurred = self._apply_bank(feat, self.inverse_kernels(k), weights)
        else:
            deblurred = feat
        if self.config.srp_block:
            gate = torch.sigmoid(self.srp(torch.cat([feat, deblurred, f_d], 1)))
            deblurred = gate * deblurred + (1 - gate) * feat
        return self.post(deblurred)

    def _decode(self, feat: torch.Tensor, e2: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        up2 = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
        return base + self.dec2(torch.cat([up2, e2], 1))

    def reblur(self, sharp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The reblur path: blur a sharp image's features with the same kernels, decode (no new parameters)."""
        e2 = self.enc2(torch.cat([sharp, sharp], 1))
        feat = self.enc4(e2)
        _, _, k = self.kernels()
        blurred = self._apply_bank(feat, k, weights)
        return self._decode(self.post(blurred), e2, _blur_image(sharp, k, weights, self.kernel_cocs()))

    def target_weights(self, coc4: torch.Tensor) -> torch.Tensor:
        """Target-kernel weights for a wanted signed CoC map (N x 1 x H/4 x W/4, full-res px): each
        entry by the distance of its CoC from the wanted one (a Gaussian of ``REFOCUS_SIGMA``)."""
        centres = self.kernel_cocs().view(1, -1, 1, 1)
        return torch.softmax(-((coc4 - centres) ** 2) / (2 * REFOCUS_SIGMA**2), dim=1)


def upsample_disparity(disp4: torch.Tensor) -> torch.Tensor:
    """1/4-res disparity to full res (bilinear; the values are already full-res px)."""
    return F.interpolate(disp4, scale_factor=4, mode="bilinear", align_corners=False)


def _blur_image(img: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, cocs: torch.Tensor) -> torch.Tensor:
    """Image-space blur by the bank at 1/4 res; detail above that scale survives only where in focus."""
    low = F.avg_pool2d(img, 4)
    up = lambda t: F.interpolate(t, size=img.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
    detail = img - up(low)
    sharp_weight = (weights * torch.exp(-((cocs.view(1, -1, 1, 1) / 4) ** 2))).sum(1, keepdim=True)
    return up(DPKernelNet._apply_bank(low, k, weights)) + detail * up(sharp_weight)
