"""A refocus session: one analysis, the current focus target and controls, preview and full renders.

Qt-free, so the napari focus dock, scripts and tests drive the same object. The dock keeps the
latest-wins bookkeeping (a generation number per update) here too: a full render that finishes
after the user acted again is reported stale and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .analysis import Analysis
from .io import DPPair
from .refocus import FocusError, RefocusPreview, check_controls, focus_disparity, render_refocus

__all__ = ["FocusSession", "RENDERERS"]

#: full-quality renderers: the layered renderer on an analysis (refocus.render_refocus), or the
#: network's own reblur path on the pair (nn.backend.network_refocus)
RENDERERS = ("layered", "network")


@dataclass
class FocusSession:
    """Refocusing state for one analysed pair."""

    analysis: Analysis
    strength: float = 1.0
    tolerance: float = 0.0
    preview_scale: int = 2
    d_trg: float | None = None
    generation: int = 0
    renderer: str = "layered"
    #: the focus mask the target came from (the network's reblur path needs the region itself)
    mask: np.ndarray | None = field(default=None, repr=False)
    _preview: RefocusPreview | None = field(default=None, repr=False)

    @property
    def preview(self) -> RefocusPreview:
        if self._preview is None:
            self._preview = RefocusPreview(self.analysis, scale=self.preview_scale)
        return self._preview

    def set_mask(self, mask: np.ndarray) -> float:
        """Use a boolean mask as the focus target; returns ``d_trg``. Empty masks raise FocusError."""
        mask = np.asarray(mask) > 0
        self.d_trg = focus_disparity(self.analysis, mask=mask)
        self.mask = mask
        self.generation += 1
        return self.d_trg

    def set_disparity(self, d_trg: float) -> float:
        self.d_trg = focus_disparity(self.analysis, d_trg=d_trg)
        self.mask = None
        self.generation += 1
        return self.d_trg

    def set_controls(self, strength: float | None = None, tolerance: float | None = None) -> None:
        strength = self.strength if strength is None else float(strength)
        tolerance = self.tolerance if tolerance is None else float(tolerance)
        check_controls(strength, tolerance)
        self.strength, self.tolerance = strength, tolerance
        self.generation += 1

    def set_renderer(self, renderer: str) -> None:
        if renderer not in RENDERERS:
            raise FocusError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
        if renderer != self.renderer:
            self.renderer = renderer
            self.generation += 1

    def captured_focus(self) -> None:
        """Back to what the camera recorded: focus at zero disparity, strength 1."""
        self.strength = 1.0
        self.set_disparity(0.0)

    def all_in_focus(self) -> None:
        self.set_controls(strength=0.0)
        if self.d_trg is None:
            self.set_disparity(0.0)

    def _require_target(self) -> float:
        if self.d_trg is None:
            raise FocusError("no focus target yet: paint a mask, click, draw a box or type a prompt")
        return self.d_trg

    def render_preview(self) -> np.ndarray:
        """Preview image at 1/preview_scale resolution (display-encoded float32)."""
        return self.preview.render(self._require_target(), self.strength, self.tolerance)

    def render_full(self, analysis: Analysis | None = None, pair: DPPair | None = None) -> tuple[int, np.ndarray]:
        """``(generation, image)``: compare the generation with :attr:`generation` before showing it.

        ``analysis``: another backend's analysis of the same pair to render with (its all-in-focus
        image and kernels); the target and controls stay this session's. With the ``network``
        renderer, ``pair`` (the analysed views) is what the network's reblur path runs on.
        """
        generation = self.generation
        d_trg = self.check_full_render(pair)
        if self.renderer == "network":
            from .nn.backend import network_refocus

            return generation, network_refocus(pair, self.mask, self.strength, tolerance=self.tolerance)[1]
        analysis = analysis or self.analysis
        if analysis.shape != self.analysis.shape:
            raise FocusError("the analysis to render with belongs to a pair of another size")
        return generation, render_refocus(analysis, d_trg, self.strength, self.tolerance)

    def check_full_render(self, pair: DPPair | None = None) -> float:
        """``d_trg``, or FocusError if the full render cannot run (so a worker is never started for it)."""
        d_trg = self._require_target()
        if self.renderer == "network":
            if pair is None:
                raise FocusError("the network's reblur path runs on the pair's views; open the pair (its left and right images)")
            if pair.shape[:2] != self.analysis.shape:
                raise FocusError("the pair to render belongs to another size than the analysis")
            from .nn.backend import check_network_refocus

            check_network_refocus(pair, self.mask, self.strength, self.tolerance)
        return d_trg

    def is_current(self, generation: int) -> bool:
        return generation == self.generation

    def record(self) -> dict:
        """What reproduces the current image (`dpfocus refocus --record` or `--disparity ...`)."""
        return {
            "version": __version__,
            "backend": self.analysis.backend,
            "pair_id": self.analysis.meta.get("pair_id"),
            "left_path": self.analysis.meta.get("left_path"),
            "right_path": self.analysis.meta.get("right_path"),
            "d_trg": self.d_trg,
            "strength": self.strength,
            "tolerance": self.tolerance,
            "renderer": self.renderer,
        }
