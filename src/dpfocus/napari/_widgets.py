"""The analysis and focus docks: thin wiring of napari layers and controls to the Qt-free core."""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from ..analysis import Analysis, AnalysisCancelled, BackendError, analyze_steps, backend_tiles, backends
from ..io import DPPair, DPPairError, quantise
from ..refocus import FocusError, focus_sweep, sweep_disparities
from ..session import FocusSession
from ._layers import analysis_layer_data, focus_mask_layer_data, layer_name, refocused_layer_data, sweep_layer_data

#: analyses of this napari session, by (pair id, backend): switching back is instant
ANALYSES: dict[tuple[str, str], Analysis] = {}
FULL_RENDER_DELAY_MS = 350
POSITIVE_COLOR, NEGATIVE_COLOR = "yellow", "magenta"


class _Events:
    analysis_ready = Signal(object)  # an Analysis joined ANALYSES


EVENTS = _Events()


def register_analysis(analysis: Analysis) -> None:
    """Make an analysis made elsewhere (read from a folder) one of this session's: the docks list its
    pair once its layers are in the viewer (see :func:`refresh_on_new_pair`)."""
    ANALYSES[(analysis.meta["pair_id"], analysis.backend)] = analysis


def refresh_on_new_pair(widget: QWidget, viewer, refresh, listed) -> None:
    """Call ``refresh(prefer=pair_id)`` when a layer of an analysed pair that is not among ``listed()``
    (the pair ids the dock offers) is added: an analysis folder opened after the dock."""
    alive = _guarded(widget)
    pending: set[str] = set()

    def run(pair_id: str) -> None:
        pending.discard(pair_id)
        if alive[0] and pair_id not in listed():
            refresh(prefer=pair_id)

    def inserted(event: Any) -> None:
        if not alive[0]:
            viewer.layers.events.inserted.disconnect(inserted)
            return
        pair_id = _info(event.value).get("pair_id")
        if pair_id and pair_id not in pending and any(key[0] == pair_id for key in ANALYSES) and pair_id not in listed():
            # once the reader's other layers are in too, so the focus layers the dock adds go on top
            pending.add(pair_id)
            QTimer.singleShot(0, lambda: run(pair_id))

    viewer.layers.events.inserted.connect(inserted)


def _await_workers_at_exit() -> None:
    # a render still running when Python shuts down would emit into deleted Qt objects
    try:
        from superqt.utils._qthreading import WorkerBase

        WorkerBase.await_workers(msecs=30_000)
    except Exception:
        pass


atexit.register(_await_workers_at_exit)


#: the full-render choice that runs the network's own reblur path (session renderer "network")
NETWORK_REBLUR = "network reblur path"


def _notify(message: str, error: bool = True) -> None:
    from napari.utils.notifications import show_error, show_info

    (show_error if error else show_info)(f"DP Focus: {message}")


def _info(layer) -> dict:
    return (getattr(layer, "metadata", None) or {}).get("dpfocus", {})


def _guarded(widget: QWidget):
    """A flag that turns False when the Qt side of ``widget`` is deleted (late worker results)."""
    alive = [True]
    widget.destroyed.connect(lambda *_: alive.__setitem__(0, False))
    return alive


#: analysis maps shown with a colour bar (ticks follow the contrast limits) when first added
LEGEND_KINDS = ("disparity", "coc", "blur_coc", "confidence")


def upsert_layer(viewer, data: Any, kwargs: dict, kind: str, pair_id: str | None):
    """Update our own layer of that name in place, or add it. Layers the user made are never touched."""
    name = kwargs["name"]
    wanted = kwargs.get("metadata", {}).get("dpfocus", {}).get("kind")
    if name in viewer.layers:
        layer = viewer.layers[name]
        info = _info(layer)
        if info.get("kind") == wanted and info.get("pair_id") == pair_id and layer._type_string == kind:
            if "scale" in kwargs and not np.allclose(layer.scale[-len(kwargs["scale"]):], kwargs["scale"]):  # re-setting costs a re-slice
                layer.scale = kwargs["scale"]
            layer.data = data
            if "contrast_limits" in kwargs and kind == "image" and not kwargs.get("rgb"):
                layer.contrast_limits = kwargs["contrast_limits"]
            if "features" in kwargs:
                layer.features = kwargs["features"]
            layer.metadata = {**layer.metadata, "dpfocus": {**info, **kwargs["metadata"]["dpfocus"]}}
            return layer
        # a layer of that name that is not ours (or another pair's): ours goes beside it
        n = 2
        while f"{name} ({n})" in viewer.layers:
            n += 1
        kwargs = dict(kwargs, name=f"{name} ({n})")
    kwargs = dict(kwargs)
    kwargs.setdefault("metadata", {}).setdefault("dpfocus", {})["pair_id"] = pair_id
    active = viewer.layers.selection.active
    layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
    if active is not None:  # napari selects a new layer; the user's next stroke should still paint
        viewer.layers.selection.active = active
    return layer


def analysed_pairs(viewer, latest_only: bool = False) -> dict[str, tuple[str, Analysis]]:
    """``label -> (pair id, analysis)`` for the analysed pairs whose layers are in the viewer.

    ``latest_only``: one entry per pair (its latest backend run), else one per (pair, backend).
    """
    present = {_info(layer).get("pair_id") for layer in viewer.layers}
    by_key: dict[str, tuple[str, Analysis]] = {}
    for (pair_id, backend), analysis in ANALYSES.items():
        if pair_id in present:
            by_key[pair_id if latest_only else f"{pair_id}|{backend}"] = (pair_id, analysis)
    return {f"{a.meta.get('pair_name', pid)} ({a.backend})": (pid, a) for pid, a in by_key.values()}


def refill_pair_box(combo: QComboBox, choices: dict[str, tuple[str, Analysis]], prefer: str | None = None) -> None:
    """Refill a dock's pair box, keeping the current choice unless ``prefer`` (a pair id) is there."""
    current = combo.currentText()
    current = next((label for label, (pid, _) in choices.items() if pid == prefer), current)
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(choices))
    if current in choices:
        combo.setCurrentText(current)
    combo.blockSignals(False)


def _bind(viewer, key: str, action) -> None:
    try:
        viewer.bind_key(key, lambda _viewer: action(), overwrite=True)
    except Exception:  # another plugin owns the key: the button still works
        pass


class AnalysisWidget(QWidget):
    """Pick the two views, a backend and a tile size; Run analyses in a worker (Cancel stops it)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._alive = _guarded(self)
        self.left = QComboBox()
        self.right = QComboBox()
        self.backend = QComboBox()
        self.backend.addItems(backends())
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(128)
        self.tile.setSpecialValueText("default")
        self.backend.currentTextChanged.connect(self._tile_applies)
        self._tile_applies(self.backend.currentText())  # also sets the tile box's tooltip
        self.run_button = QPushButton("Run analysis")
        self.run_button.setToolTip("Analyse the selected pair (Shift+A)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running analysis")
        self.cancel_button.setEnabled(False)
        self.open_button = QPushButton("Open analysis...")
        self.open_button.setToolTip("Open a folder `dpfocus analyze -o` wrote, or an export folder: its maps (and an export's "
                                    "mask and focus) come back without running the analysis again")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("left view", self.left)
        form.addRow("right view", self.right)
        form.addRow("backend", self.backend)
        form.addRow("tile", self.tile)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # leave the height to the other docks
        self.worker = None
        self._cancels: list[threading.Event] = []  # one per run; closing the dock cancels them all
        self.destroyed.connect(lambda *_, cancels=self._cancels: [event.set() for event in cancels])
        self.last_analysis: Analysis | None = None
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button.clicked.connect(lambda: self.open_folder())
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_choices)
        self.viewer.layers.selection.events.active.connect(self._follow_active_layer)
        self._refresh_choices()
        _bind(self.viewer, "Shift-A", self.run)

    def open_folder(self, folder: str | Path | None = None) -> list:
        """Open an analysis or export folder through this plugin's reader; returns the added layers."""
        from ._reader import get_reader

        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Open an analysis folder (dpfocus analyze -o) or an export folder")
            if not folder:
                return []
        if get_reader(str(folder)) is None or not Path(folder).is_dir():
            _notify(f"{folder}: neither an analysis folder (analysis.json) nor an export folder (record.json and analysis/); "
                    "choose the folder `dpfocus analyze -o` or Export wrote")
            return []
        layers = self.viewer.open(str(folder), plugin="napari-dpfocus")
        if layers:
            self.status.setText(f"{Path(folder).name}: opened {len(layers)} layers")
        return layers

    def _tile_applies(self, backend: str) -> None:
        tiles = backend_tiles(backend)
        self.tile.setEnabled(tiles)
        self.tile.setToolTip(
            "Tile size (px) for the network backend; by default the whole image up to 2.5 MP, 768 px tiles beyond"
            if tiles
            else f"The {backend} backend works on the whole image: no tiles to size"
        )

    # -- layer choices, pre-filled from the reader's pair metadata
    def _image_layers(self) -> list:
        return [layer for layer in self.viewer.layers if layer._type_string == "image"]

    def _views_of(self, pair_id: str | None) -> dict[str, str]:
        return {
            _info(layer)["view"]: layer.name
            for layer in self._image_layers()
            if _info(layer).get("view") and (pair_id is None or _info(layer).get("pair_id") == pair_id)
        }

    def _select_pair(self, pair_id: str | None) -> None:
        views = self._views_of(pair_id)
        if "left" in views and "right" in views:
            self.left.setCurrentText(views["left"])
            self.right.setCurrentText(views["right"])

    def _refresh_choices(self, *_: Any) -> None:
        if not self._alive[0]:
            return
        names = [layer.name for layer in self._image_layers()]
        kept = []
        for combo in (self.left, self.right):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
                kept.append(current)
            combo.blockSignals(False)
        if len(kept) < 2:
            active = self.viewer.layers.selection.active
            self._select_pair(_info(active).get("pair_id") if active is not None else None)

    def _follow_active_layer(self, event: Any = None) -> None:
        if not self._alive[0]:
            return
        active = self.viewer.layers.selection.active
        if active is not None and _info(active).get("view"):
            self._select_pair(_info(active).get("pair_id"))

    def selected_pair(self) -> DPPair:
        if not self.left.currentText() or not self.right.currentText():
            raise DPPairError("open a DP pair first (File > Open, or File > Open Sample > DP Focus)")
        left = self.viewer.layers[self.left.currentText()]
        right = self.viewer.layers[self.right.currentText()]
        if left is right:
            raise DPPairError(f"{left.name}: chosen as both views; pick the left and the right view of one pair")
        info = _info(left)
        name = info.get("name") or left.name.replace(" [L]", "")
        pair = DPPair.from_arrays(np.asarray(left.data), np.asarray(right.data), name=name, bit_depth=int(info.get("bit_depth", 16)))
        for side, layer in (("left", left), ("right", right)):
            path = _info(layer).get(f"{side}_path")
            if path:
                setattr(pair, f"{side}_path", Path(path))
        pair.extra["pair_id"] = info.get("pair_id") or pair.pair_id
        return pair

    def run(self, blocking: bool = False) -> None:
        """Start the analysis in a worker thread (``blocking`` runs it here, for scripts and tests)."""
        if self.worker is not None:
            _notify("an analysis is already running; wait for it or press Cancel", error=False)
            return
        try:
            pair = self.selected_pair()
        except DPPairError as exc:
            _notify(str(exc))
            self.status.setText(str(exc))
            return
        pair_id = pair.extra["pair_id"]
        backend = self.backend.currentText()
        key = (pair_id, backend)
        if key in ANALYSES:
            self._show(ANALYSES[key], pair.name, pair_id)
            self.status.setText(f"{pair.name}: cached {backend} analysis")
            return
        options = {"tile": self.tile.value() or None}
        if blocking:
            steps = analyze_steps(pair, backend, **options)
            try:
                while True:
                    self._on_progress(next(steps))
            except StopIteration as stop:
                self._on_done(stop.value, pair.name, pair_id, backend)
            except Exception as exc:
                _notify(f"analysis of {pair.name} failed: {exc}")
            return
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        bar = progress(total=100, desc=f"DP analysis: {pair.name}")
        cancel = threading.Event()
        self._cancels[:] = [cancel]

        @thread_worker
        def work():
            try:
                result = yield from analyze_steps(pair, backend, cancel=cancel, **options)
            except AnalysisCancelled:
                return None
            return result

        def on_progress(update: tuple[float, str]) -> None:
            if cancel.is_set():
                return
            bar.n = int(100 * update[0])
            bar.set_description(f"DP analysis: {update[1]}")
            bar.refresh()
            if self._alive[0]:
                self._on_progress(update)

        def on_error(exc: BaseException) -> None:
            _notify(f"analysis of {pair.name} failed: {exc}")

        def on_finished() -> None:
            bar.close()
            if cancel.is_set() and self._alive[0]:
                self.status.setText(f"{pair.name}: cancelled")

        self.worker = work()
        self.worker.yielded.connect(on_progress)
        self.worker.returned.connect(lambda analysis: analysis is not None and self._alive[0]
                                     and self._on_done(analysis, pair.name, pair_id, backend))
        self.worker.errored.connect(on_error)
        self.worker.finished.connect(on_finished)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"analysing {pair.name} ({backend})...")
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            for event in self._cancels:  # the backend stops at its next progress report
                event.set()
            self.status.setText("cancelling...")

    def _on_progress(self, update: tuple[float, str]) -> None:
        fraction, message = update
        self.progress.setValue(int(100 * fraction))
        self.status.setText(message)

    def _on_finished(self) -> None:
        self.worker = None
        if self._alive[0]:
            self.run_button.setEnabled(True)
            self.cancel_button.setEnabled(False)

    def _on_done(self, analysis: Analysis, name: str, pair_id: str, backend: str) -> None:
        analysis.meta["pair_id"] = pair_id
        ANALYSES[(pair_id, backend)] = analysis
        self.progress.setValue(100)
        timings = analysis.meta.get("timings", {})
        note = analysis.backdrop_note()
        self.status.setText(f"{name}: {backend} analysis in {timings.get('total_s', 0):.1f} s" + (f"\n{note}" if note else ""))
        self._show(analysis, name, pair_id)

    def _show(self, analysis: Analysis, name: str, pair_id: str) -> None:
        self.last_analysis = analysis
        before = {id(layer) for layer in self.viewer.layers}
        for data, kwargs, kind in analysis_layer_data(analysis, name):
            layer = upsert_layer(self.viewer, data, kwargs, kind, pair_id)
            if id(layer) not in before and kwargs["metadata"]["dpfocus"]["kind"] in LEGEND_KINDS:
                layer.colorbar.visible = True  # a new map gets its value legend; a re-run keeps the user's choice
        EVENTS.analysis_ready.emit(analysis)


class FocusWidget(QWidget):
    """Paint, click, box or type a focus target; the refocused layer follows live."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._alive = _guarded(self)
        self.pair = QComboBox()
        self.strength = QLabeledDoubleSlider()
        self.strength.setRange(0.0, 3.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(1.0)
        self.strength.setToolTip("Aperture: 1 = as captured, 0 = all in focus, 2 = twice the blur")
        self.tolerance = QLabeledDoubleSlider()
        self.tolerance.setRange(0.0, 10.0)
        self.tolerance.setSingleStep(0.1)
        self.tolerance.setToolTip("Disparity band (px) around the target that stays sharp")
        self.d_label = QLabel("d_trg: -")
        self.full_backend = QComboBox()
        self.full_backend.addItems(["same as the preview"] + backends() + ([NETWORK_REBLUR] if "network" in backends() else []))
        self.full_backend.setToolTip("Whose all-in-focus image and kernels the full-quality render uses (that analysis must have run); "
                                     f"'{NETWORK_REBLUR}': the network's own refocus, its learned kernels on the pair's views (no tolerance)")
        self.negative = QCheckBox("next clicks exclude (negative)")
        self.negative.setToolTip("Clicks on the focus points layer cut regions out of the mask (Shift+N)")
        self.text = QLineEdit()
        self.text.setPlaceholderText("e.g. nearest object, background, left object")
        self.text.setToolTip("Describe the region to focus on; Enter applies")
        self.text_button = QPushButton("Focus on text")
        self.sam_path = QLineEdit(os.environ.get("DPFOCUS_SAM_CHECKPOINT", ""))
        self.sam_path.setPlaceholderText("Segment Anything checkpoint (.pth), optional")
        self.sam_browse = QPushButton("...")
        self.clip_path = QLineEdit(os.environ.get("DPFOCUS_CLIP_CHECKPOINT", ""))
        self.clip_path.setPlaceholderText("OpenCLIP checkpoint, optional (text ranking)")
        self.clip_browse = QPushButton("...")
        self.segmenter_label = QLabel("clicks/boxes: default (disparity + colour regions); text: depth/position vocabulary")
        self.segmenter_label.setWordWrap(True)
        self.aif_button = QPushButton("All in focus")
        self.aif_button.setToolTip("Everything sharp: strength 0 (Shift+F)")
        self.captured_button = QPushButton("Captured focus")
        self.captured_button.setToolTip("Back to the camera's focus and aperture (Shift+C)")
        self.clear_button = QPushButton("Clear mask")
        self.clear_button.setToolTip("Empty the focus mask, points and boxes (Shift+X)")
        self.sweep_steps = QSpinBox()
        self.sweep_steps.setRange(2, 64)
        self.sweep_steps.setValue(12)
        self.sweep_steps.setSuffix(" planes")
        self.sweep_steps.setToolTip("How many focus planes the sweep renders")
        self.sweep_button = QPushButton("Focus sweep")
        self.sweep_button.setToolTip("A stack of refocused previews from the nearest to the farthest surface, "
                                     "with the current strength and tolerance; the viewer's slider moves the focal plane")
        self.sweep_full = QCheckBox("full quality")
        self.sweep_full.setToolTip("Render the sweep at full resolution with the full-quality renderer, in the background "
                                   "(about a full render per plane); otherwise at preview resolution, at once")
        self.sweep_use = QPushButton("Focus on this plane")
        self.sweep_use.setToolTip("Make the sweep plane on screen the focus target")
        self.sweep_label = QLabel("")
        self.sweep_label.setWordWrap(True)
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip("Save refocused image, mask, maps and a reproducible record (Shift+E)")
        form = QFormLayout()
        form.addRow("pair", self.pair)
        form.addRow("strength", self.strength)
        form.addRow("tolerance (px)", self.tolerance)
        form.addRow(self.d_label)
        form.addRow("full render", self.full_backend)
        form.addRow(self.negative)
        text_row = QHBoxLayout()
        text_row.addWidget(self.text)
        text_row.addWidget(self.text_button)
        models = QFormLayout()
        for label, edit, browse in (("SAM", self.sam_path, self.sam_browse), ("CLIP", self.clip_path, self.clip_browse)):
            row = QHBoxLayout()
            row.addWidget(edit)
            row.addWidget(browse)
            models.addRow(label, row)
        shortcuts = QHBoxLayout()
        for button in (self.aif_button, self.captured_button, self.clear_button):
            shortcuts.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(text_row)
        layout.addLayout(models)
        layout.addWidget(self.segmenter_label)
        layout.addLayout(shortcuts)
        sweep_row = QHBoxLayout()
        sweep_row.addWidget(self.sweep_button, 1)
        sweep_row.addWidget(self.sweep_steps)
        sweep_row.addWidget(self.sweep_use, 1)
        # room for the text and napari's -/+ buttons, which the spin box's size hint leaves out
        self.sweep_steps.setMinimumWidth(self.sweep_steps.fontMetrics().horizontalAdvance("64 planes") + 64)
        layout.addLayout(sweep_row)
        sweep_info = QHBoxLayout()
        sweep_info.addWidget(self.sweep_full)
        sweep_info.addWidget(self.sweep_label, 1)
        layout.addLayout(sweep_info)
        layout.addWidget(self.export_button)
        hint = QLabel("Paint on the focus mask layer, click on the focus points layer, or draw a rectangle on the focus boxes layer.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        layout.addStretch(1)
        self.sessions: dict[str, FocusSession] = {}
        self._names: dict[str, str] = {}
        self._idle = QTimer(self)
        self._idle.setSingleShot(True)
        self._idle.setInterval(FULL_RENDER_DELAY_MS)
        self._idle.timeout.connect(self._start_full_render)
        self._full_worker = None
        self._full_pending = False
        self._writing_mask = False
        self._used_masks: dict[str, np.ndarray] = {}  # per pair: the mask the current target came from
        self._sweep_worker = None
        self.sam = None
        self.clip = None
        self._model_notes: list[str] = []
        self._prompt_generation = 0
        self._prompt_workers: set = set()
        self.last_export: dict[str, Path] | None = None
        self.pair.currentTextChanged.connect(lambda _: (self._attach(), self._embed_current_image()))
        self.full_backend.currentIndexChanged.connect(lambda _: self.session is not None and self.session.d_trg is not None and self._idle.start())
        self.strength.valueChanged.connect(self._controls_changed)
        self.tolerance.valueChanged.connect(self._controls_changed)
        self.negative.toggled.connect(self._negative_toggled)
        self.text_button.clicked.connect(self.focus_on_text)
        self.text.returnPressed.connect(self.focus_on_text)
        self.sam_browse.clicked.connect(lambda: self._browse(self.sam_path, "Segment Anything checkpoint"))
        self.clip_browse.clicked.connect(lambda: self._browse(self.clip_path, "OpenCLIP checkpoint"))
        self.sam_path.editingFinished.connect(self.load_models)
        self.clip_path.editingFinished.connect(self.load_models)
        self.aif_button.clicked.connect(self.all_in_focus)
        self.captured_button.clicked.connect(self.captured_focus)
        self.clear_button.clicked.connect(self.clear_mask)
        self.export_button.clicked.connect(lambda: self.export())
        self.sweep_button.clicked.connect(self.sweep)
        self.sweep_use.clicked.connect(self.focus_on_sweep_plane)
        self.viewer.dims.events.current_step.connect(self._show_sweep_plane)
        for key, action in (
            ("Shift-F", self.all_in_focus),
            ("Shift-C", self.captured_focus),
            ("Shift-X", self.clear_mask),
            ("Shift-E", self.export),
            ("Shift-N", lambda: self.negative.setChecked(not self.negative.isChecked())),
        ):
            _bind(self.viewer, key, action)
        EVENTS.analysis_ready.connect(self._analysis_ready)
        refresh_on_new_pair(self, self.viewer, self.refresh_pairs, lambda: set(self._names.values()))
        if self.sam_path.text() or self.clip_path.text():
            self.load_models()
        self.refresh_pairs()

    def _analysis_ready(self, analysis: Analysis) -> None:
        if not self._alive[0]:
            EVENTS.analysis_ready.disconnect(self._analysis_ready)
            return
        self.refresh_pairs(prefer=analysis.meta.get("pair_id"))
        self._embed_current_image()

    # -- which analysed pair we drive
    def refresh_pairs(self, prefer: str | None = None) -> None:
        choices = analysed_pairs(self.viewer, latest_only=True)
        self._names = {label: pair_id for label, (pair_id, _) in choices.items()}
        for pair_id, analysis in choices.values():
            if pair_id not in self.sessions or self.sessions[pair_id].analysis is not analysis:
                self.sessions[pair_id] = self._new_session(analysis)
        refill_pair_box(self.pair, choices, prefer)
        self._attach()

    @staticmethod
    def _new_session(analysis: Analysis) -> FocusSession:
        """A session for the analysis, starting from the focus an opened export recorded, if any."""
        session = FocusSession(analysis)
        restored = analysis.meta.get("restored_focus") or {}
        try:
            session.set_controls(strength=restored.get("strength"), tolerance=restored.get("tolerance"))
            if restored.get("d_trg") is not None:
                session.set_disparity(restored["d_trg"])
        except FocusError as exc:
            _notify(f"the export's focus settings were not used: {exc}", error=False)
        return session

    @property
    def session(self) -> FocusSession | None:
        pair_id = self._names.get(self.pair.currentText())
        return self.sessions.get(pair_id) if pair_id else None

    @property
    def stem(self) -> str:
        s = self.session
        return s.analysis.meta.get("pair_name", "pair") if s else "pair"

    def _attach(self) -> None:
        """Create (or find) the focus mask, points and boxes layers of the current pair."""
        s = self.session
        if s is None:
            return
        pair_id = s.analysis.meta.get("pair_id")
        if self._layer("mask") is None:
            data, kwargs, _ = focus_mask_layer_data(np.zeros(s.analysis.shape, np.uint8), self.stem, pair_id)
            self.viewer.add_labels(data, **kwargs)
        if self._layer("points") is None:
            self.viewer.add_points(np.zeros((0, 2)), name=f"{self.stem} focus points", size=12, face_color=POSITIVE_COLOR,
                                   border_color="black", features={"positive": np.zeros(0, bool)},
                                   metadata={"dpfocus": {"kind": "focus_points", "pair_id": pair_id}})
            self._negative_toggled(self.negative.isChecked())
        if self._layer("boxes") is None:
            self.viewer.add_shapes(name=f"{self.stem} focus boxes", edge_color=POSITIVE_COLOR, face_color="transparent", edge_width=2,
                                   metadata={"dpfocus": {"kind": "focus_boxes", "pair_id": pair_id}})
        # the mask as found is what the session's target stands on (an export's restored focus stays)
        self._used_masks.setdefault(pair_id, np.asarray(self._layer("mask").data) > 0)
        for slider, value in ((self.strength, s.strength), (self.tolerance, s.tolerance)):  # each pair keeps its own
            slider.blockSignals(True)
            slider.setValue(value)
            slider.blockSignals(False)
        for suffix, handler, events in (
            ("mask", self.mask_changed, ("paint", "data")),
            ("mask", self._mask_redrawn, ("set_data",)),
            ("points", self.points_changed, ("data",)),
            ("boxes", self.boxes_changed, ("data",)),
        ):
            layer = self._layer(suffix)
            flag = f"_dpfocus_{handler.__name__}_connected"
            if not getattr(layer, flag, False):
                for event_name in events:
                    getattr(layer.events, event_name).connect(handler)
                setattr(layer, flag, True)
        self._show_d_trg()

    def _layer(self, suffix: str):
        """The current pair's focus layer: ``"mask"``, ``"points"``, ``"boxes"`` or ``"sweep"`` (found by metadata)."""
        s = self.session
        if s is None:
            return None
        kind = {"mask": "focus_mask", "points": "focus_points", "boxes": "focus_boxes", "sweep": "focus_sweep"}[suffix]
        for layer in self.viewer.layers:
            info = _info(layer)
            if info.get("kind") == kind and info.get("pair_id") == s.analysis.meta.get("pair_id"):
                return layer
        return None

    def _negative_toggled(self, negative: bool) -> None:
        layer = self._layer("points")
        if layer is not None:
            layer.feature_defaults = {"positive": not negative}
            layer.current_face_color = NEGATIVE_COLOR if negative else POSITIVE_COLOR

    # -- optional models (SAM for clicks/boxes, CLIP for text)
    def _browse(self, edit: QLineEdit, title: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title, str(Path(edit.text()).parent) if edit.text() else "")
        if path:
            edit.setText(path)
            self.load_models()

    def load_models(self) -> None:
        """Load the SAM / CLIP checkpoints named in the dock; a bad one falls back to the default and says so."""
        from .. import prompts

        self._model_notes = []
        self.sam = self.clip = None
        for attr, edit, loader, what in (("sam", self.sam_path, prompts.load_sam, "SAM"), ("clip", self.clip_path, prompts.load_clip, "CLIP")):
            path = edit.text().strip()
            if not path:
                continue
            try:
                setattr(self, attr, loader(path))
            except FocusError as exc:
                _notify(f"{exc}; using the default segmentation instead")
                self._model_notes.append(f"{what} not loaded, see the notification")
        self.segmenter_label.setText(self._segmenter_text())
        self._embed_current_image()

    def _segmenter_text(self, busy: str = "") -> str:
        clicks = self.sam.describe() if self.sam is not None else "default (disparity + colour regions)"
        text = self.clip.describe() + " ranking regions" if self.clip is not None else "depth/position vocabulary"
        notes = f" ({'; '.join(self._model_notes)})" if self._model_notes else ""
        return f"clicks/boxes: {clicks}; text: {text}{notes}" + (f" - {busy}" if busy else "")

    # -- prompts land in the focus mask, where the brush can correct them
    def _write_mask(self, mask: np.ndarray) -> None:
        """Replace the focus mask as one undoable edit: Ctrl+Z in the mask layer brings back what was
        painted before a prompt or Clear mask."""
        layer = self._layer("mask")
        new = (np.asarray(mask) > 0).astype(layer.data.dtype)
        changed = np.nonzero((np.asarray(layer.data) > 0) != new.astype(bool))
        self._writing_mask = True
        try:
            with layer.block_history():
                layer.data_setitem(changed, new[changed])
        finally:
            self._writing_mask = False
        self.mask_changed()

    def _prompt(self, make_mask) -> None:
        """Run a prompt into the focus mask: here for the default path, in a worker with SAM/CLIP."""
        s = self.session
        if s is None:
            _notify("run the analysis first (DP analysis dock)")
            return
        self._prompt_generation += 1
        if self.sam is None and self.clip is None:
            try:
                self._write_mask(make_mask(s.analysis))
            except FocusError as exc:
                _notify(str(exc))
            return
        from napari.qt.threading import thread_worker

        generation = self._prompt_generation
        worker = thread_worker(make_mask)(s.analysis)
        # latest wins: a prompt answered after a newer one was given is dropped
        worker.returned.connect(lambda mask: self._alive[0] and generation == self._prompt_generation
                                and s is self.session and self._write_mask(mask))
        worker.errored.connect(lambda exc: _notify(str(exc)))
        self._prompt_workers.add(worker)
        worker.finished.connect(lambda: self._prompt_workers.discard(worker))
        self.segmenter_label.setText(self._segmenter_text("segmenting..."))
        worker.finished.connect(lambda: self._alive[0] and self.segmenter_label.setText(self._segmenter_text()))
        worker.start()

    def _embed_current_image(self) -> None:
        """Compute SAM's image embedding for the current pair in a worker (cached by image hash)."""
        s = self.session
        if self.sam is None or s is None:
            return
        from napari.qt.threading import thread_worker

        worker = thread_worker(self.sam.set_image)(s.analysis)
        self.segmenter_label.setText(self._segmenter_text("computing the image embedding..."))
        worker.errored.connect(lambda exc: _notify(f"SAM could not embed the image: {exc}"))
        worker.finished.connect(lambda: self._alive[0] and self.segmenter_label.setText(self._segmenter_text()))
        self._prompt_workers.add(worker)
        worker.finished.connect(lambda: self._prompt_workers.discard(worker))
        worker.start()

    def points_changed(self, *_: Any) -> None:
        from ..prompts import mask_from_points

        layer = self._layer("points")
        if layer is None or len(layer.data) == 0:
            return
        signs = np.asarray(layer.features["positive"], bool) if "positive" in layer.features else np.ones(len(layer.data), bool)
        yx = [tuple(map(float, p[-2:])) for p in layer.data]
        positive = [p for p, keep in zip(yx, signs) if keep]
        negative = [p for p, keep in zip(yx, signs) if not keep]
        self._prompt(lambda a: mask_from_points(a, positive, negative, sam=self.sam))

    def boxes_changed(self, *_: Any) -> None:
        from ..prompts import mask_from_box

        layer = self._layer("boxes")
        if layer is None or len(layer.data) == 0:
            return
        corners = np.asarray(layer.data[-1])[:, -2:]
        (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
        self._prompt(lambda a: mask_from_box(a, (x0, y0, x1, y1), sam=self.sam))

    def focus_on_text(self) -> None:
        from ..prompts import mask_from_text

        text = self.text.text()
        self._prompt(lambda a: mask_from_text(a, text, sam=self.sam, clip=self.clip))

    def clear_mask(self) -> None:
        for suffix in ("points", "boxes"):
            layer = self._layer(suffix)
            if layer is not None and len(layer.data):
                layer.events.data.disconnect(self.points_changed if suffix == "points" else self.boxes_changed)
                try:
                    layer.data = np.zeros((0, 2)) if suffix == "points" else []
                finally:
                    layer.events.data.connect(self.points_changed if suffix == "points" else self.boxes_changed)
        if self._layer("mask") is not None:
            self._write_mask(np.zeros(self._layer("mask").data.shape, bool))

    def _mask_redrawn(self, *_: Any) -> None:
        """napari's undo and redo only redraw the layer: refocus if the mask is not the one last used."""
        s, layer = self.session, self._layer("mask")
        if s is None or layer is None or self._writing_mask:
            return
        last = self._used_masks.get(s.analysis.meta.get("pair_id"))
        if last is None or last.shape != layer.data.shape or not np.array_equal(last, np.asarray(layer.data) > 0):
            self.mask_changed()

    def mask_changed(self, *_: Any) -> None:
        s, layer = self.session, self._layer("mask")
        if s is None or layer is None or self._writing_mask:
            return
        mask = np.asarray(layer.data) > 0
        self._used_masks[s.analysis.meta.get("pair_id")] = mask
        if not mask.any():
            self.d_label.setText("d_trg: - (the focus mask is empty: paint, click, draw a box or type)")
            return
        try:
            s.set_mask(mask)
        except FocusError as exc:
            _notify(str(exc))
            return
        self.update_preview()

    def _controls_changed(self, *_: Any) -> None:
        s = self.session
        if s is None:
            return
        s.set_controls(strength=self.strength.value(), tolerance=self.tolerance.value())
        if s.d_trg is not None:
            self.update_preview()

    def all_in_focus(self) -> None:
        if self.session is None:
            _notify("run the analysis first (DP analysis dock)")
            return
        if self.session.d_trg is None:
            self.session.set_disparity(0.0)
        self.strength.setValue(0.0)

    def captured_focus(self) -> None:
        s = self.session
        if s is None:
            _notify("run the analysis first (DP analysis dock)")
            return
        self.strength.blockSignals(True)
        self.strength.setValue(1.0)
        self.strength.blockSignals(False)
        s.captured_focus()
        self.update_preview()

    # -- rendering: preview now, full quality after a short idle (latest wins)
    def update_preview(self) -> None:
        s = self.session
        img = s.render_preview()
        scale = s.analysis.shape[0] / img.shape[0]
        self._show(img, scale, preview=True)
        self._idle.start()

    def _show_d_trg(self, quality: str | None = None) -> None:
        s = self.session
        if s is None or s.d_trg is None:
            self.d_label.setText("d_trg: -")
            return
        coc = s.analysis.coc_per_disparity * s.d_trg
        self.d_label.setText(f"d_trg: {s.d_trg:+.3f} px (captured CoC there {coc:+.2f} px)" + (f", {quality}" if quality else ""))

    def _show(self, img: np.ndarray, scale: float, preview: bool) -> None:
        s = self.session
        data, kwargs, kind = refocused_layer_data(img, self.stem, s.d_trg, s.strength, scale)
        kwargs["metadata"]["dpfocus"].update(tolerance=s.tolerance, quality="preview" if preview else "full",
                                             renderer="preview" if preview else s.renderer)
        layer = upsert_layer(self.viewer, data, kwargs, kind, s.analysis.meta.get("pair_id"))
        self._below_focus_layers(layer)
        self._show_d_trg("preview" if preview else NETWORK_REBLUR if s.renderer == "network" else "full quality")

    def _below_focus_layers(self, layer) -> None:
        """Keep the mask, points and boxes drawable above a result layer."""
        mask_layer = self._layer("mask")
        if mask_layer is not None:
            below = self.viewer.layers.index(mask_layer)
            if self.viewer.layers.index(layer) > below:
                self.viewer.layers.move(self.viewer.layers.index(layer), below)

    # -- focus sweep: a stack layer whose slider moves the focal plane
    def sweep(self) -> Any:
        """Render the focus sweep into the ``focus sweep`` stack layer. Preview quality renders here and
        returns the layer; full quality renders in a worker (one plane per full render, the dock
        counting them) and returns None, the layer following when it is done. Pressing again while a
        full sweep runs stops it."""
        if self._sweep_worker is not None:
            self._sweep_worker.quit()
            return None
        s = self.session
        if s is None:
            _notify("run the analysis first (DP analysis dock)")
            return None
        try:
            disparities = sweep_disparities(s.analysis, self.sweep_steps.value())
            controls = (s.strength, s.tolerance)
            if self.sweep_full.isChecked():
                self._start_full_sweep(s, disparities, controls)
                return None
            # the session's own preview: its blur stack is prepared once per analysis, and a few
            # dozen lookups take well under a second, so this runs here rather than racing the live
            # preview's buffers from a worker; 8-bit planes, as that stack is (64 planes of a
            # 1120x1680 pair take 90 MB, not 360)
            frames = [quantise(img, 8) for _, img in focus_sweep(s.analysis, disparities, *controls, preview=s.preview)]
        except FocusError as exc:
            _notify(str(exc))
            return None
        return self._show_sweep(s, np.stack(frames), disparities, controls, "preview")

    def _start_full_sweep(self, s: FocusSession, disparities: np.ndarray, controls: tuple[float, float]) -> None:
        from napari.qt.threading import thread_worker

        @thread_worker
        def work():
            frames = []
            for i, (_, img) in enumerate(focus_sweep(s.analysis, disparities, *controls, quality="full")):
                frames.append(quantise(img, 8))
                yield i + 1
            return np.stack(frames)

        worker = work()
        n = len(disparities)
        worker.yielded.connect(lambda done: self._alive[0] and self.sweep_label.setText(f"full-quality sweep: {done} of {n} planes rendered"))
        worker.returned.connect(lambda stack: self._alive[0] and s is self.session and self._show_sweep(s, stack, disparities, controls, "full"))
        worker.errored.connect(lambda exc: _notify(f"the full-quality sweep failed: {exc}"))
        worker.finished.connect(self._sweep_finished)
        self._sweep_worker = worker
        self.sweep_button.setText("Stop sweep")
        self.sweep_label.setText(f"full-quality sweep: 0 of {n} planes rendered")
        worker.start()

    def _sweep_finished(self) -> None:
        self._sweep_worker = None
        if self._alive[0]:
            self.sweep_button.setText("Focus sweep")
            self._show_sweep_plane()  # the plane on screen again, not the stopped sweep's count

    def _show_sweep(self, s: FocusSession, stack: np.ndarray, disparities: np.ndarray, controls: tuple[float, float], quality: str):
        scale = s.analysis.shape[0] / stack.shape[1]
        data, kwargs, kind = sweep_layer_data(stack, self.stem, disparities, *controls, scale)
        kwargs["metadata"]["dpfocus"]["quality"] = quality
        layer = upsert_layer(self.viewer, data, kwargs, kind, s.analysis.meta.get("pair_id"))
        layer.visible = True
        self._below_focus_layers(layer)
        dims = self.viewer.dims
        if dims.ndim == 3 and sum(lyr.ndim == 3 for lyr in self.viewer.layers) == 1:  # the sweep owns the slider
            dims.axis_labels = ("focus plane", *dims.axis_labels[1:])
        dims.set_point(0, 0.0)  # start at the nearest plane
        self._show_sweep_plane()
        return layer

    def sweep_plane(self) -> tuple[int, float] | None:
        """``(index, d_trg)`` of the sweep plane the viewer's slider shows, or None without a sweep."""
        layer = self._layer("sweep")
        if layer is None:
            return None
        disparities = _info(layer).get("d_trg", [])
        if not disparities:
            return None
        index = int(np.clip(round(float(layer.world_to_data(self.viewer.dims.point)[0])), 0, len(disparities) - 1))
        return index, float(disparities[index])

    def _show_sweep_plane(self, *_: Any) -> None:
        if not self._alive[0]:
            return
        plane = self.sweep_plane()
        if plane is None:
            self.sweep_label.setText("")
            return
        index, d = plane
        n = len(_info(self._layer("sweep")).get("d_trg", []))
        coc = self.session.analysis.coc_per_disparity * d
        self.sweep_label.setText(f"sweep plane {index + 1} of {n}: d_trg {d:+.3f} px (captured CoC there {coc:+.2f} px)")

    def focus_on_sweep_plane(self) -> None:
        """The plane the sweep shows becomes the focus target (the refocused layer follows)."""
        plane = self.sweep_plane()
        if plane is None:
            _notify("no focus sweep yet: press Focus sweep, then move the slider to the plane you want")
            return
        self.session.set_disparity(plane[1])
        self.update_preview()

    def _start_full_render(self) -> None:
        s = self.session
        if s is None or s.d_trg is None or not self._alive[0]:
            return
        if self._full_worker is not None:  # one render at a time; the newest target follows it
            self._full_pending = True
            return
        from napari.qt.threading import thread_worker

        try:
            render_with, pair = self._full_render_inputs(s)
            s.check_full_render(pair)
        except FocusError as exc:
            _notify(f"full-quality render: {exc}")
            return

        @thread_worker
        def work():
            return s.render_full(render_with, pair)

        worker = work()
        worker.returned.connect(lambda result: self._alive[0] and self._full_done(s, result))
        worker.errored.connect(lambda exc: _notify(f"full-quality render failed: {exc}"))
        worker.finished.connect(self._full_finished)
        self._full_worker = worker
        worker.start()

    def _full_render_inputs(self, s: FocusSession) -> tuple[Analysis, DPPair | None]:
        """The analysis and, for the network's reblur path, the pair the full render uses (the choice
        sets the session's renderer, so its record names it)."""
        if self.full_backend.currentText() != NETWORK_REBLUR:
            s.set_renderer("layered")
            return self._full_render_analysis(s), None
        s.set_renderer("network")
        return s.analysis, DPPair.from_arrays(*self._view_data(), name=self.stem)

    def _view_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The pair's left and right views from their layers."""
        try:
            return tuple(np.asarray(self.viewer.layers[layer_name(self.stem, v)].data) for v in ("left", "right"))
        except KeyError:
            raise FocusError(f"{self.stem}'s left and right views are not open; open the pair's images") from None

    def _full_render_analysis(self, s: FocusSession) -> Analysis:
        """The analysis the full render uses: the chosen backend's for this pair, when it has run."""
        choice = self.full_backend.currentText()
        if self.full_backend.currentIndex() == 0 or choice == s.analysis.backend:
            return s.analysis
        other = ANALYSES.get((s.analysis.meta.get("pair_id"), choice))
        if other is None:
            _notify(f"no {choice} analysis of {self.stem} yet: run it in the DP analysis dock; rendering with {s.analysis.backend}", error=False)
            return s.analysis
        return other

    def _full_finished(self) -> None:
        self._full_worker = None
        if self._full_pending and self._alive[0]:
            self._full_pending = False
            self._start_full_render()

    def _full_done(self, session: FocusSession, result: tuple[int, np.ndarray]) -> None:
        generation, img = result
        if session is self.session and session.is_current(generation):  # never show a stale frame
            self._show(img, 1.0, preview=False)

    def render_full_now(self) -> np.ndarray | None:
        """Render full quality in this thread and show it (scripts, the demo, export)."""
        s = self.session
        if s is None or s.d_trg is None:
            return None
        self._idle.stop()
        result = s.render_full(*self._full_render_inputs(s))
        self._full_done(s, result)
        return result[1]

    # -- export and reproduce
    def export(self, parent: str | Path | None = None) -> dict[str, Path] | None:
        """Save the refocused image, mask, maps and ``record.json`` into a new folder under ``parent``."""
        from ..export import export_refocus, next_export_folder

        s = self.session
        if s is None or s.d_trg is None:
            _notify("nothing to export yet: run the analysis and set a focus target")
            return None
        if parent is None:
            parent = QFileDialog.getExistingDirectory(self, "Export the refocused image into a new folder under")
            if not parent:
                return None
        mask_layer = self._layer("mask")
        try:
            views = None if s.analysis.meta.get("left_path") else self._view_data()
            render_with, pair = self._full_render_inputs(s)
            image = s.render_full(render_with, pair)[1] if s.renderer == "network" else None
            folder = next_export_folder(parent, self.stem)
            self.last_export = export_refocus(folder, s, mask=None if mask_layer is None else mask_layer.data, image=image, views=views)
        except (FocusError, DPPairError, BackendError, OSError) as exc:
            _notify(f"export failed: {exc}")
            return None
        _notify(f"exported to {folder} (reproduce: dpfocus refocus --record {folder / 'record.json'} -o OUT.png)", error=False)
        return self.last_export
