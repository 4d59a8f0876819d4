"""Scrolling plot of the six emotion probabilities over stream time.

Final (utterance) predictions are thick solid lines with dots at the middle of
each utterance; partial (live window) predictions are thin dashed lines at the
window end. With `set_smoothed(True)` the utterance trace shows the exponentially
smoothed probabilities (realtime.smoothing) instead of the raw ones. Utterance
spans are shaded by one BarGraphItem. Every curve is
created once; data lives in growable numpy buffers and is pushed to the curves
with setData() only from `refresh()`, which the window calls from a QTimer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import QVBoxLayout, QWidget

from models.labels import EMOTIONS
from realtime.smoothing import ProbabilitySmoother
from realtime.types import EmotionPrediction

EMOTION_COLOURS: dict[str, str] = {
    "anger": "#d62728", "disgust": "#2ca02c", "fear": "#9467bd",
    "happy": "#ff9f1c", "neutral": "#7f7f7f", "sad": "#1f77b4",
}
SPAN_BRUSH = (120, 160, 220, 45)
SELECTED_BRUSH = (255, 200, 0, 70)
PARTIAL_BREAK_GAP_S = 2.0
PARTIAL_LEGEND = "live window (partial)"


@dataclass(frozen=True)
class PlotConfig:
    """Plot behaviour.

    window_s: width of the live (following) time window in seconds.
    max_final_points / max_partial_points: buffer caps; beyond them the oldest
        half is discarded (live sessions can run for hours).
    """

    window_s: float = 60.0
    max_final_points: int = 50_000
    max_partial_points: int = 400_000

    def __post_init__(self) -> None:
        if not 1.0 <= self.window_s <= 3600.0:
            raise ValueError(f"window_s must be within 1..3600 s, got {self.window_s}")
        if self.max_final_points < 16 or self.max_partial_points < 16:
            raise ValueError("point caps must be at least 16")


class SeriesBuffer:
    """Append-only time series of probability vectors, grown by doubling.

    times: float64 [n]; values: float32 [n, 6] (columns in EMOTIONS order).
    A NaN row breaks the drawn line (curves use connect="finite").
    """

    def __init__(self, max_points: int, initial_capacity: int = 256) -> None:
        self.max_points = max_points
        self._times = np.empty(initial_capacity, dtype=np.float64)
        self._values = np.empty((initial_capacity, len(EMOTIONS)), dtype=np.float32)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        self._n = 0

    def append(self, time_s: float, values: np.ndarray) -> None:
        """values: float32 [6] (NaNs for a line break)."""
        if self._n == len(self._times):
            if self._n >= self.max_points:
                keep = self._n // 2
                self._times[:keep] = self._times[self._n - keep:self._n]
                self._values[:keep] = self._values[self._n - keep:self._n]
                self._n = keep
            else:
                capacity = min(2 * len(self._times), self.max_points)
                self._times = np.resize(self._times, capacity)
                self._values = np.resize(self._values, (capacity, len(EMOTIONS)))
        self._times[self._n] = time_s
        self._values[self._n] = values
        self._n += 1

    def break_line(self) -> None:
        """Append a NaN row so the next point starts a new line segment."""
        if self._n and np.isfinite(self._values[self._n - 1, 0]):
            self.append(self._times[self._n - 1], np.full(len(EMOTIONS), np.nan, np.float32))

    @property
    def times(self) -> np.ndarray:
        return self._times[:self._n]

    @property
    def values(self) -> np.ndarray:
        return self._values[:self._n]

    def finite_count(self) -> int:
        return int(np.isfinite(self.values[:, 0]).sum())


def probs_vector(prediction: EmotionPrediction) -> np.ndarray:
    """Probabilities in EMOTIONS order, float32 [6] (missing classes become 0)."""
    return np.array([prediction.probs.get(name, 0.0) for name in EMOTIONS], dtype=np.float32)


class EmotionPlot(QWidget):
    """Six probability curves (final + partial) with shaded utterance spans.

    Live mode follows the newest time over `window_s`; review mode shows the
    whole session with free zoom/scroll, and clicking inside an utterance
    emits `utterance_clicked(EmotionPrediction)`.
    """

    utterance_clicked = pyqtSignal(object)

    def __init__(self, config: PlotConfig = PlotConfig(), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self._window_s = config.window_s
        self._finals = SeriesBuffer(config.max_final_points)
        self._smoothed = SeriesBuffer(config.max_final_points)  # the same utterances, smoothed
        self._smoother = ProbabilitySmoother()
        self._show_smoothed = False
        self._partials = SeriesBuffer(config.max_partial_points)
        self._utterances: list[EmotionPrediction] = []
        self._span_starts: list[float] = []
        self._span_ends: list[float] = []
        self._latest_s = 0.0
        self._follow = True
        self._dirty = True

        # Legend in its own row above the axes so it never hides a trace.
        self.plot_widget = pg.GraphicsLayoutWidget()
        self.plot_widget.setBackground("w")
        self.plot_widget.setMinimumHeight(260)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self.plot_item = item = self.plot_widget.addPlot(row=1, col=0)
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setLabel("bottom", "time", units="s")
        item.setLabel("left", "probability")
        item.setYRange(0.0, 1.0, padding=0.02)
        item.setMouseEnabled(x=True, y=False)
        item.setClipToView(True)

        self._spans = pg.BarGraphItem(x0=[], x1=[], y0=[], height=[], brush=pg.mkBrush(*SPAN_BRUSH),
                                      pen=pg.mkPen(None))
        self._spans.setZValue(-10)
        item.addItem(self._spans)
        self._selection = pg.LinearRegionItem(values=(0, 0), movable=False,
                                              brush=pg.mkBrush(*SELECTED_BRUSH))
        self._selection.setZValue(-5)
        self._selection.hide()
        item.addItem(self._selection)

        self.final_curves: dict[str, pg.PlotDataItem] = {}
        self.partial_curves: dict[str, pg.PlotDataItem] = {}
        for name in EMOTIONS:
            colour = QColor(EMOTION_COLOURS[name])
            self.partial_curves[name] = item.plot(
                [], [], pen=pg.mkPen(colour, width=1.5, style=Qt.DashLine), connect="finite")
            self.final_curves[name] = item.plot(
                [], [], pen=pg.mkPen(colour, width=3), symbol="o", symbolSize=7,
                symbolBrush=colour, symbolPen=pg.mkPen(colour), connect="finite", name=name)
        self._build_legend(item)
        item.scene().sigMouseClicked.connect(self._on_scene_click)

    def _build_legend(self, item: pg.PlotItem) -> None:
        self.legend = pg.LegendItem(labelTextColor="k", labelTextSize="10pt")
        self.plot_widget.addItem(self.legend, row=0, col=0)
        for name in EMOTIONS:
            self.legend.addItem(self.final_curves[name], name)
        sample_partial = pg.PlotDataItem(pen=pg.mkPen("#333", width=1.5, style=Qt.DashLine))
        sample_final = pg.PlotDataItem(pen=pg.mkPen("#333", width=3), symbol="o", symbolSize=7,
                                       symbolBrush="#333", symbolPen=pg.mkPen("#333"))
        self._legend_samples = (sample_final, sample_partial)
        self.legend.addItem(sample_final, "utterance (final)")
        self.legend.addItem(sample_partial, PARTIAL_LEGEND)
        self.partial_model = ""   # the model that made the latest live window, named in the legend
        self.legend.setColumnCount(4)

    # ------------------------------------------------------------------ data in
    @property
    def window_s(self) -> float:
        return self._window_s

    def set_window_s(self, window_s: float) -> None:
        self._window_s = float(max(1.0, window_s))
        self._dirty = True

    @property
    def following(self) -> bool:
        return self._follow

    def set_following(self, follow: bool) -> None:
        """True: live mode (x range tracks the newest time); False: free review."""
        self._follow = follow
        self.plot_item.setMouseEnabled(x=True, y=False)
        self._dirty = True

    def note_time(self, time_s: float) -> None:
        """Advance the live window even when no prediction arrives (silence)."""
        if time_s > self._latest_s:
            self._latest_s = time_s
            self._dirty = True

    def add_prediction(self, prediction: EmotionPrediction) -> None:
        values = probs_vector(prediction)
        if prediction.kind == "partial":
            if len(self._partials) and prediction.end_s - self._partials.times[-1] > PARTIAL_BREAK_GAP_S:
                self._partials.break_line()
            self._partials.append(prediction.end_s, values)
            if prediction.model != self.partial_model:
                self.partial_model = prediction.model
                self._partial_label().setText(f"{PARTIAL_LEGEND}: {prediction.model}")
        else:
            middle_s = 0.5 * (prediction.start_s + prediction.end_s)
            self._finals.append(middle_s, values)
            smoothed = self._smoother.push(prediction)[0]
            self._smoothed.append(middle_s, np.array([smoothed.probs[name] for name in EMOTIONS], np.float32))
            self._partials.break_line()
            self._utterances.append(prediction)
            self._span_starts.append(prediction.start_s)
            self._span_ends.append(prediction.end_s)
        self.note_time(prediction.end_s)
        self._dirty = True

    @property
    def smoothed(self) -> bool:
        return self._show_smoothed

    def set_smoothed(self, on: bool) -> None:
        """True: the utterance trace shows smoothed probabilities; False: the raw ones."""
        self._show_smoothed = bool(on)
        self._dirty = True
        self.refresh()

    def _partial_label(self):
        """The legend's live-window label, looked up each time: holding the wrapper would keep it
        alive in Python after Qt deletes the plot, which pyqtgraph's resize handling trips over."""
        return self.legend.items[-1][1]

    def clear(self) -> None:
        self._finals.clear()
        self._smoothed.clear()
        self._smoother.reset()
        self._partials.clear()
        self.partial_model = ""
        self._partial_label().setText(PARTIAL_LEGEND)
        self._utterances.clear()
        self._span_starts.clear()
        self._span_ends.clear()
        self._latest_s = 0.0
        self._selection.hide()
        self._dirty = True
        self.refresh()

    def load_predictions(self, predictions: list[EmotionPrediction]) -> None:
        """Review mode: draw a whole session (in time order) and show all of it."""
        self.clear()
        for prediction in sorted(predictions, key=lambda p: (p.end_s, p.kind != "partial")):
            self.add_prediction(prediction)
        self.show_all()

    def show_all(self) -> None:
        """Stop following and show the whole session (free zoom/scroll from here on)."""
        self.set_following(False)
        self.refresh()
        self.plot_item.setXRange(0.0, max(self._latest_s, 1.0), padding=0.02)

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        """Push buffers to the curves; cheap when nothing changed (QTimer slot)."""
        if not self._dirty:
            return
        self._dirty = False
        final_t, final_v = self._visible(self._smoothed if self._show_smoothed else self._finals)
        partial_t, partial_v = self._visible(self._partials)
        for column, name in enumerate(EMOTIONS):
            self.final_curves[name].setData(final_t, final_v[:, column])
            self.partial_curves[name].setData(partial_t, partial_v[:, column])
        self._update_spans()
        if self._follow:
            right = max(self._latest_s, self._window_s)
            self.plot_item.setXRange(right - self._window_s, right, padding=0.0)

    def _visible(self, series: SeriesBuffer) -> tuple[np.ndarray, np.ndarray]:
        """Live mode: only the points inside the window (plus one before it, so the line
        enters from the left edge), keeping each refresh independent of session length.
        Review mode: everything. Times are appended in (nearly) increasing order."""
        times, values = series.times, series.values
        if not self._follow or not len(times):
            return times, values
        first = max(0, int(np.searchsorted(times, self._latest_s - self._window_s - 1.0)) - 1)
        return times[first:], values[first:]

    def _update_spans(self) -> None:
        starts = np.asarray(self._span_starts, dtype=np.float64)
        ends = np.asarray(self._span_ends, dtype=np.float64)
        if self._follow and len(starts):
            visible = ends >= self._latest_s - self._window_s - 1.0
            starts, ends = starts[visible], ends[visible]
        self._spans.setOpts(x0=starts, x1=ends, y0=np.zeros(len(starts)),
                            height=np.ones(len(starts)))

    # ------------------------------------------------------------------ review
    @property
    def utterances(self) -> list[EmotionPrediction]:
        return list(self._utterances)

    def point_counts(self) -> dict[str, int]:
        """Drawn (finite) points per curve kind, e.g. {"final": 4, "partial": 31}."""
        return {"final": self._finals.finite_count(), "partial": self._partials.finite_count()}

    def curve_lengths(self) -> dict[str, tuple[int, int]]:
        """Finite points actually handed to each emotion's (final, partial) curve."""
        lengths = {}
        for name in EMOTIONS:
            final_y = self.final_curves[name].yData
            partial_y = self.partial_curves[name].yData
            lengths[name] = (0 if final_y is None else int(np.isfinite(final_y).sum()),
                             0 if partial_y is None else int(np.isfinite(partial_y).sum()))
        return lengths

    def utterance_at(self, time_s: float) -> EmotionPrediction | None:
        """The utterance whose span contains time_s (nearest one within 0.25 s), or None."""
        best, best_gap = None, 0.25
        for prediction in self._utterances:
            if prediction.start_s <= time_s <= prediction.end_s:
                return prediction
            gap = min(abs(time_s - prediction.start_s), abs(time_s - prediction.end_s))
            if gap < best_gap:
                best, best_gap = prediction, gap
        return best

    def select_utterance(self, prediction: EmotionPrediction | None) -> None:
        """Highlight one utterance span (None hides the highlight)."""
        if prediction is None:
            self._selection.hide()
            return
        self._selection.setRegion((prediction.start_s, prediction.end_s))
        self._selection.show()

    def _on_scene_click(self, mouse_event) -> None:
        view_box = self.plot_item.vb
        if not view_box.sceneBoundingRect().contains(mouse_event.scenePos()):
            return
        time_s = view_box.mapSceneToView(mouse_event.scenePos()).x()
        prediction = self.utterance_at(time_s)
        if prediction is not None:
            self.select_utterance(prediction)
            self.utterance_clicked.emit(prediction)

    def export_png(self, path: str) -> None:
        """Write the plot (as shown) to a PNG file."""
        if not self.plot_widget.grab().save(path, "PNG"):
            raise OSError(f"could not write {path}")
