"""The README's featureless-sky figure: the garden sample with its top third overexposed (flat
white in both views), analysed by earlier weights and by the shipped ones.

    python scripts/make_featureless_figure.py OLD_WEIGHTS.pt docs/images/featureless_sky.png

(the stage-6 weights are ``src/dpfocus/nn/weights/dpkernelnet.pt`` at commit 32daf70).
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dpfocus.io import DPPair  # noqa: E402
from dpfocus.nn.backend import WEIGHTS_PATH, network_backend  # noqa: E402
from dpfocus.samples import load_sample  # noqa: E402


def main(old_weights: str, out: str) -> None:
    garden = load_sample("garden")
    h = garden.left.shape[0] // 3
    left, right = garden.left.copy(), garden.right.copy()
    left[:h] = right[:h] = 1.0
    pair = DPPair.from_arrays(left, right, name="garden, overexposed sky")
    fig, ax = plt.subplots(1, 3, figsize=(16, 3.9))
    ax[0].imshow(np.clip((left + right) / 2, 0, 1))
    ax[0].set_title("garden sample, top third overexposed (flat white)")
    for a, (title, weights) in zip(ax[1:], [("stage-6 weights: disparity (px)", old_weights), ("shipped weights: disparity (px)", WEIGHTS_PATH)]):
        analysis = network_backend(pair, weights=weights)
        im = a.imshow(analysis.disparity, cmap="coolwarm", vmin=-16, vmax=16)
        a.set_title(title)
        plt.colorbar(im, ax=a, fraction=0.035)
        print(f"{title}: median disparity of the sky {np.median(analysis.disparity[: h - 20]):.2f} px")
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    plt.tight_layout()
    plt.savefig(out, dpi=80)


if __name__ == "__main__":
    main(*sys.argv[1:3])
