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
from .refocus import FocusError, RefocusPreview, check_controls, focus_disparity, render_refocus

__all__ = ["FocusSession"]


@dataclass
class FocusSession:
    """Refocusing state for one analysed pair."""

    analysis: Analysis
    strength: float = 1.0
    tolerance: float = 0.0
    preview_scale: int = 2
    d_trg: float | None = None
    generation: int = 0
    _preview: RefocusPreview | None = field(default=None, repr=False)

    @property
    def preview(self) -> RefocusPreview:
        if self._preview is None:
            self._preview = RefocusPreview(self.analysis, scale=self.preview_scale)
        return self._preview

    def set_mask(self, mask: np.ndarray) -> float:
        """Use a boolean mask as the focus target; returns ``d_trg``. Empty masks raise FocusError."""
        self.d_trg = focus_disparity(self.analysis, mask=np.asarray(mask) > 0)
        self.generation += 1
        return self.d_trg

    def set_disparity(self, d_trg: float) -> float:
        self.d_trg = focus_disparity(self.analysis, d_trg=d_trg)
        self.generation += 1
        return self.d_trg

    def set_controls(self, strength: float | None = None, tolerance: float | None = None) -> None:
        strength = self.strength if strength is None else float(strength)
        tolerance = self.tolerance if tolerance is None else float(tolerance)
        check_controls(strength, tolerance)
        self.strength, self.tolerance = strength, tolerance
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

    def render_full(self, analysis: Analysis | None = None) -> tuple[int, np.ndarray]:
        """``(generation, image)``: compare the generation with :attr:`generation` before showing it.

        ``analysis``: another backend's analysis of the same pair to render with (its all-in-focus
        image and kernels); the target and controls stay this session's.
        """
        generation = self.generation
        analysis = analysis or self.analysis
        if analysis.shape != self.analysis.shape:
            raise FocusError("the analysis to render with belongs to a pair of another size")
        return generation, render_refocus(analysis, self._require_target(), self.strength, self.tolerance)

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
        }
