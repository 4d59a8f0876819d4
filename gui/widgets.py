"""Small display widgets of the monitor: level meter, speech light, current emotion,
recent-utterance table and the probability panel used when reviewing a session.

All of them are fed from the GUI thread only (see gui/bridge.py).
"""
from __future__ import annotations

import math

from PyQt5.QtCore import QEvent, QObject, Qt
from PyQt5.QtGui import QBrush, QColor, QFont
from PyQt5.QtWidgets import (QAbstractItemView, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                             QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from gui.model_names import ModelNames
from gui.plots import EMOTION_COLOURS
from models.labels import EMOTIONS
from realtime.types import EmotionPrediction

METER_FLOOR_DBFS = -60
UNCERTAIN_COLOUR = "#9a9a9a"   # an "uncertain" top class is drawn greyed


class SpaceIsStartStop(QObject):
    """Event filter for text-entry widgets (spin boxes): they claim the space key to type a
    blank, which would swallow the window's Start/Stop shortcut; this hands space back."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:   # noqa: N802 (Qt API name)
        if event.type() == QEvent.ShortcutOverride and event.key() == Qt.Key_Space:
            event.ignore()
            return True
        return False


class LevelMeter(QWidget):
    """Input RMS level in dBFS on a -60..0 bar, with the number beside it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(METER_FLOOR_DBFS, 0)
        self.bar.setTextVisible(False)
        self.bar.setFixedWidth(110)
        self.bar.setToolTip("input level (RMS, dBFS)")
        self.text = QLabel()
        self.text.setMinimumWidth(56)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Level"))
        layout.addWidget(self.bar)
        layout.addWidget(self.text)
        # A fresh QProgressBar holds -1, which on a -60..0 range draws it nearly full.
        self.set_level(float("-inf"))

    def set_level(self, rms_dbfs: float) -> None:
        """rms_dbfs: -inf (digital silence, or no level yet) and NaN draw the bar empty."""
        known = math.isfinite(rms_dbfs) and rms_dbfs > -120
        self.bar.setValue(max(METER_FLOOR_DBFS, min(0, round(rms_dbfs))) if known else METER_FLOOR_DBFS)
        self.text.setText(f"{rms_dbfs:.0f} dB" if known else "-inf dB")

    @property
    def value(self) -> int:
        return self.bar.value()


class SpeechIndicator(QLabel):
    """A coloured light: green 'speech' while the VAD hears speech, grey otherwise."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignCenter)
        self.setMinimumWidth(90)
        self.speech = False
        self.set_speech(False)

    def set_speech(self, speech: bool) -> None:
        self.speech = speech
        colour, text = ("#2ca02c", "speech") if speech else ("#b0b0b0", "no speech")
        self.setText(f"● {text}")
        self.setStyleSheet(f"color: {colour}; font-weight: bold;")


class CurrentEmotionView(QWidget):
    """The latest emotion in large type with its confidence; partial results are marked live, and a
    result the model is not sure of (below its calibrated threshold) is greyed with "uncertain"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("—")
        font = QFont()
        font.setPointSize(30)
        font.setBold(True)
        self.label.setFont(font)
        self.label.setAlignment(Qt.AlignCenter)
        self.detail = QLabel("waiting for speech")
        self.detail.setAlignment(Qt.AlignCenter)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.detail)
        self.emotion = ""
        self.confidence = 0.0
        self.uncertain = False
        self.names = ModelNames()

    def show_prediction(self, prediction: EmotionPrediction) -> None:
        self.emotion = prediction.label
        self.confidence = prediction.confidence
        self.uncertain = prediction.uncertain
        colour = UNCERTAIN_COLOUR if prediction.uncertain else EMOTION_COLOURS.get(prediction.label, "#000")
        self.label.setText(f"{prediction.label.upper()}  {prediction.confidence:.0%}")
        self.label.setStyleSheet(f"color: {colour};")
        self.label.setToolTip("uncertain: the model's calibrated top probability is below the threshold "
                              "picked for it on held-out speakers" if prediction.uncertain else "")
        when = "live window" if prediction.kind == "partial" else "last utterance"
        fallback = ", fallback model" if prediction.fallback else ""
        self.detail.setText(("uncertain — " if prediction.uncertain else "")
                            + f"{when} {prediction.start_s:.1f}–{prediction.end_s:.1f} s "
                            f"({self.names.readable(prediction.model)}{fallback})")

    def reset(self) -> None:
        self.emotion, self.confidence, self.uncertain = "", 0.0, False
        self.label.setText("—")
        self.label.setStyleSheet("")
        self.detail.setText("waiting for speech")


class UtteranceTable(QTableWidget):
    """Recent final predictions, newest first: time, emotion, confidence, model, latency."""

    HEADERS = ("time (s)", "emotion", "confidence", "model", "latency (ms)")

    def __init__(self, max_rows: int = 500, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        self.max_rows = max_rows
        self.predictions: list[EmotionPrediction] = []
        self.names = ModelNames()
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeToContents)

    def add_prediction(self, prediction: EmotionPrediction) -> None:
        self.insertRow(0)
        self.predictions.insert(0, prediction)
        model = self.names.readable(prediction.model) + (" (fallback)" if prediction.fallback else "")
        cells = (f"{prediction.start_s:.1f}–{prediction.end_s:.1f}",
                 prediction.label + (" (uncertain)" if prediction.uncertain else ""),
                 f"{prediction.confidence:.0%}", model, f"{prediction.latency_ms:.0f}")
        colour = UNCERTAIN_COLOUR if prediction.uncertain else EMOTION_COLOURS.get(prediction.label, "#000")
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if column == 1:
                item.setForeground(QBrush(QColor(colour)))
            if column == 3:
                item.setToolTip(prediction.model)   # the internal id, as the timeline records it
            self.setItem(0, column, item)
        while self.rowCount() > self.max_rows:
            self.removeRow(self.rowCount() - 1)
            self.predictions.pop()

    def set_predictions(self, predictions: list[EmotionPrediction]) -> None:
        """Replace the contents (review mode): oldest at the bottom."""
        self.clear_rows()
        for prediction in predictions[-self.max_rows:]:
            self.add_prediction(prediction)

    def clear_rows(self) -> None:
        self.setRowCount(0)
        self.predictions.clear()

    def selected_prediction(self) -> EmotionPrediction | None:
        rows = self.selectionModel().selectedRows()
        return self.predictions[rows[0].row()] if rows else None


class ProbabilityPanel(QWidget):
    """All six probabilities of one selected utterance, as labelled bars."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Latest utterance; click one in the plot or the table to inspect it")
        self.title.setWordWrap(True)
        form = QFormLayout()
        self.bars: dict[str, QProgressBar] = {}
        for name in EMOTIONS:
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat("%p%")
            bar.setStyleSheet(f"QProgressBar::chunk {{ background-color: {EMOTION_COLOURS[name]}; }}")
            self.bars[name] = bar
            form.addRow(name, bar)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(form)
        layout.addStretch(1)
        self.prediction: EmotionPrediction | None = None
        self.names = ModelNames()

    def show_prediction(self, prediction: EmotionPrediction) -> None:
        self.prediction = prediction
        self.title.setText(f"{prediction.start_s:.2f}–{prediction.end_s:.2f} s: "
                           f"{prediction.label} ({prediction.confidence:.0%}"
                           + (", uncertain" if prediction.uncertain else "") + ")\n"
                           f"model {self.names.readable(prediction.model)}, latency {prediction.latency_ms:.0f} ms"
                           + (", fallback" if prediction.fallback else ""))
        for name, bar in self.bars.items():
            bar.setValue(int(round(1000 * prediction.probs.get(name, 0.0))))

    def value_of(self, name: str) -> float:
        return self.bars[name].value() / 1000.0
