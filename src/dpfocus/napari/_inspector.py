"""The kernel inspector dock: the bank as an atlas, one pixel's kernel, kernel usage histograms.

Thin: the numbers come from :mod:`dpfocus.kernels`; this only draws them (matplotlib in the dock)
and wires clicks on the canvas and the index selector to the kernel-index layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from ..analysis import Analysis
from ..kernels import PixelKernels, crop_to_support, kernel_atlas, kernel_usage, pixel_kernels
from ..refocus import FocusError
from ._widgets import EVENTS, _bind, _guarded, _info, _notify, analysed_pairs, refill_pair_box, refresh_on_new_pair

HISTOGRAM_DELAY_MS = 300
FIGURE_BG, FIGURE_FG = "#262930", "#d1d2d4"  # napari's dark theme


class KernelInspectorWidget(QWidget):
    """What each kernel index means, which kernels a clicked pixel blends, and where each is used."""

    def __init__(self, napari_viewer) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__()
        self.viewer = napari_viewer
        self._alive = _guarded(self)
        self.pair = QComboBox()
        self.index = QSpinBox()
        self.index.setRange(-1, 0)
        self.index.setSpecialValueText("none")
        self.index.setValue(-1)
        self.index.setToolTip("Highlight the pixels that use this kernel index (Shift+K: the index under the last click)")
        self.pixel_label = QLabel("click a pixel in the canvas to see its kernel")
        self.pixel_label.setWordWrap(True)
        self.figure = Figure(figsize=(4.2, 7.2), dpi=90, layout="constrained", facecolor=FIGURE_BG)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(560)
        grid = self.figure.add_gridspec(3, 3, height_ratios=[2.2, 1.0, 1.3])
        self.ax_atlas = self.figure.add_subplot(grid[0, :])
        self.ax_kernels = [self.figure.add_subplot(grid[1, j]) for j in range(3)]
        self.ax_hist = self.figure.add_subplot(grid[2, :])
        for ax in (self.ax_atlas, *self.ax_kernels, self.ax_hist):
            ax.set_facecolor(FIGURE_BG)
        form = QFormLayout()
        form.addRow("pair", self.pair)
        form.addRow("highlight index", self.index)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.pixel_label)
        layout.addWidget(self.canvas)
        self.analysis: Analysis | None = None
        self.pair_id: str | None = None
        self.picked: PixelKernels | None = None
        self._analyses: dict[str, tuple[str, Analysis]] = {}
        self._hist_timer = QTimer(self)
        self._hist_timer.setSingleShot(True)
        self._hist_timer.setInterval(HISTOGRAM_DELAY_MS)
        self._hist_timer.timeout.connect(self.draw_histogram)
        self._mask_layer = None
        self.pair.currentTextChanged.connect(lambda _: self._use_current())
        self.index.valueChanged.connect(self.highlight)
        self.canvas.mpl_connect("button_press_event", self._on_figure_click)
        self.viewer.mouse_drag_callbacks.append(self._on_canvas_press)
        _bind(self.viewer, "Shift-K", lambda: self.picked is not None and self.index.setValue(self.picked.top[0][0]))
        EVENTS.analysis_ready.connect(self._analysis_ready)
        refresh_on_new_pair(self, self.viewer, self.refresh_pairs, lambda: {pid for pid, _ in self._analyses.values()})
        self.refresh_pairs()

    def _analysis_ready(self, analysis: Analysis) -> None:
        if not self._alive[0]:
            EVENTS.analysis_ready.disconnect(self._analysis_ready)
            return
        self.refresh_pairs(prefer=analysis.meta.get("pair_id"))

    def refresh_pairs(self, prefer: str | None = None) -> None:
        self._analyses = analysed_pairs(self.viewer)
        refill_pair_box(self.pair, self._analyses, prefer)
        self._use_current()

    def _use_current(self) -> None:
        chosen = self._analyses.get(self.pair.currentText())
        if chosen is None:
            return
        self.pair_id, self.analysis = chosen
        self.picked = None
        self.index.blockSignals(True)
        self.index.setRange(-1, len(self.analysis.kernel_cocs) - 1)
        self.index.setValue(-1)
        self.index.blockSignals(False)
        self._watch_mask()
        self.draw_atlas()
        self.draw_kernels()
        self.draw_histogram()

    def _layer(self, kind: str):
        for layer in self.viewer.layers:
            if _info(layer).get("kind") == kind and _info(layer).get("pair_id") == self.pair_id:
                return layer
        return None

    def _watch_mask(self) -> None:
        layer = self._layer("focus_mask")
        if layer is not None and layer is not self._mask_layer:
            for name in ("paint", "data", "set_data"):  # set_data: napari's undo and redo only redraw the layer
                getattr(layer.events, name).connect(lambda *_: self._alive[0] and self._hist_timer.start())
            self._mask_layer = layer

    # -- drawing
    def draw_atlas(self) -> None:
        ax = self.ax_atlas
        ax.clear()
        ax.set_axis_off()
        if self.analysis is None:
            return
        atlas = kernel_atlas(self.analysis)
        ax.imshow(atlas.image, cmap="magma", interpolation="nearest")
        selected = self.index.value()
        for i, y0, x0, h, w in atlas.boxes:
            ax.text(x0 + 1, y0 + 1, str(i), color="white", fontsize=6, va="top", ha="left")
            if i == selected:
                ax.add_patch(_rectangle(x0 - 1.5, y0 - 1.5, w + 2, h + 2))
        cocs = self.analysis.kernel_cocs
        ax.set_title(f"bank: {len(cocs)} kernels, CoC {cocs.min():+.1f}..{cocs.max():+.1f} px", fontsize=8, color=FIGURE_FG)
        self._atlas = atlas
        self.canvas.draw_idle()

    def draw_kernels(self) -> None:
        for ax, title in zip(self.ax_kernels, ("left", "right", "combined")):
            ax.clear()
            ax.set_axis_off()
            if self.picked is not None:
                k = crop_to_support(np.stack([self.picked.left, self.picked.right, self.picked.combined]), margin=2)
                ax.imshow(k[("left", "right", "combined").index(title)], cmap="magma", interpolation="nearest")
            ax.set_title(title, fontsize=8, color=FIGURE_FG)
        self.canvas.draw_idle()

    def draw_histogram(self) -> None:
        if not self._alive[0]:
            return
        ax = self.ax_hist
        ax.clear()
        if self.analysis is None:
            return
        n = len(self.analysis.kernel_cocs)
        whole = kernel_usage(self.analysis)
        ax.bar(np.arange(n), whole / max(whole.sum(), 1), color="0.6", label="image")
        mask_layer = self._layer("focus_mask")
        if mask_layer is not None and np.asarray(mask_layer.data).any():
            inside = kernel_usage(self.analysis, np.asarray(mask_layer.data) > 0)
            ax.bar(np.arange(n), inside / max(inside.sum(), 1), color="tab:orange", alpha=0.75, width=0.6, label="focus mask")
        used = np.flatnonzero(whole)
        if used.size:  # the bank spans more CoC than one image uses: show the indices in use
            ax.set_xlim(used.min() - 1.5, used.max() + 1.5)
        if self.index.value() >= 0:
            ax.plot([self.index.value()], [0], marker="^", markersize=9, color="tab:cyan", clip_on=False, zorder=5)
        ax.set_xlabel("kernel index", fontsize=8, color=FIGURE_FG)
        ax.set_ylabel("fraction of pixels", fontsize=8, color=FIGURE_FG)
        ax.tick_params(labelsize=7, colors=FIGURE_FG)
        for spine in ax.spines.values():
            spine.set_color(FIGURE_FG)
        ax.set_facecolor(FIGURE_BG)
        ax.legend(fontsize=7, loc="upper right")
        self.canvas.draw_idle()

    # -- interaction
    def inspect_pixel(self, y: float, x: float) -> PixelKernels | None:
        """Show pixel ``(y, x)``'s blended kernel and top-5 bank entries."""
        if self.analysis is None:
            _notify("run the analysis first (DP analysis dock)")
            return None
        try:
            self.picked = pixel_kernels(self.analysis, y, x)
        except FocusError as exc:
            _notify(str(exc))
            return None
        p = self.picked
        top = ", ".join(f"#{i} ({coc:+.1f} px) {w:.2f}" for i, w, coc in p.top)
        self.pixel_label.setText(f"pixel (x={p.x}, y={p.y}): disparity {p.disparity:+.2f} px, CoC {p.coc:+.2f} px\ntop kernels: {top}")
        self.draw_kernels()
        return p

    def _on_canvas_press(self, viewer, event) -> None:
        if not self._alive[0] or self.analysis is None or event.button != 1:
            return
        layer = self._layer("kernel_index")
        position = layer.world_to_data(event.position) if layer is not None else event.position
        y, x = position[-2:]
        h, w = self.analysis.shape
        if 0 <= y < h and 0 <= x < w:
            self.inspect_pixel(y, x)

    def _on_figure_click(self, event) -> None:
        if self.analysis is None or event.xdata is None:
            return
        if event.inaxes is self.ax_hist:
            self.index.setValue(int(np.clip(round(event.xdata), 0, len(self.analysis.kernel_cocs) - 1)))
        elif event.inaxes is self.ax_atlas:
            for i, y0, x0, h, w in self._atlas.boxes:
                if x0 <= event.xdata < x0 + w and y0 <= event.ydata < y0 + h:
                    self.index.setValue(i)

    def highlight(self, index: int) -> None:
        """Show only the pixels of one kernel index in the kernel-index layer (-1: all)."""
        layer = self._layer("kernel_index")
        if layer is not None:
            if index >= 0:
                layer.selected_label = index + 1  # labels are index + 1 (0 = none)
                layer.show_selected_label = True
                layer.visible = True
            else:
                layer.show_selected_label = False
        count = int((self.analysis.kernel_index == index).sum()) if self.analysis is not None and index >= 0 else 0
        if index >= 0 and self.analysis is not None:
            self.pixel_label.setText(f"kernel #{index} (CoC {float(self.analysis.kernel_cocs[index]):+.1f} px): {count} pixels")
        self.draw_atlas()
        self.draw_histogram()


def _rectangle(x: float, y: float, w: float, h: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor="cyan", linewidth=1.5)
