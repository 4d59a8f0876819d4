"""The "not sure" flag from a calibrated model through the engine, the timeline, the CSV export and
the window; readable model names in the selector, status bar, table and timeline header."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QSettings, Qt  # noqa: E402

from gui.app import build_window  # noqa: E402
from gui.model_names import ModelNames  # noqa: E402
from gui.widgets import UNCERTAIN_COLOUR  # noqa: E402
from models.labels import EMOTIONS  # noqa: E402
from realtime.timeline import CSV_COLUMNS, TimelineWriter, export_csv, load_timeline  # noqa: E402
from realtime.types import EmotionPrediction  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"


@pytest.fixture
def window(qtbot, tmp_path):
    window = build_window(lambda *a, **k: None, None, QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    return window


def flat_ish(start_s: float, model: str = "conformer-v1", threshold: float | None = 0.5) -> EmotionPrediction:
    return EmotionPrediction.from_probs(start_s, start_s + 1.0, np.array([0.3, 0.2, 0.15, 0.15, 0.1, 0.1]),
                                        model, 20.0, uncertain_below=threshold)


def test_a_prediction_is_uncertain_only_below_the_models_threshold():
    assert flat_ish(0.0, threshold=0.5).uncertain
    assert not flat_ish(0.0, threshold=0.3).uncertain          # 0.3 is not below 0.3
    assert not flat_ish(0.0, threshold=None).uncertain         # an uncalibrated model never says so
    assert flat_ish(0.0).probs["anger"] == pytest.approx(0.3)  # the probabilities are kept either way


def test_the_uncertain_flag_survives_a_timeline_round_trip_and_the_csv_export(tmp_path):
    path = tmp_path / "s.jsonl"
    with TimelineWriter(path, {"input": "test"}) as writer:
        writer.write_prediction(flat_ish(0.0, threshold=0.5))
        writer.write_prediction(flat_ish(2.0, threshold=None))
        writer.append({"type": "prediction", **{k: v for k, v in flat_ish(4.0).to_dict().items()
                                                if k != "uncertain"}})   # a line of an older VED
    session = load_timeline(path)
    assert [p.uncertain for p in session.predictions] == [True, False, False]
    assert session.predictions[0].probs == flat_ish(0.0).probs
    out = tmp_path / "s.csv"
    assert export_csv(session, out) == 3
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[-1] == "uncertain"
    assert [r["uncertain"] for r in rows] == ["1", "0", "0"]
    old_export = tmp_path / "old.csv"                       # an export from before the column: replaceable
    old_export.write_text(",".join(CSV_COLUMNS[:-1]) + "\n", encoding="utf-8")
    assert export_csv(session, old_export) == 3


def test_a_calibrated_model_marks_its_unsure_utterances_through_the_engine(tmp_path, emodb_dir):
    from models.bundle import copy_bundle
    from models.calibration import Calibration
    from models.loader import load_classifier
    from realtime.engine import Engine, EngineConfig
    from realtime.sources import FileSource
    from train.calibrate import write_calibration
    from train.corpora.emodb import load as load_emodb

    import soundfile as sf

    clips = [c for c in load_emodb(emodb_dir).clips if c.speaker == "03"][:4]
    audio, rate = [], 16000
    for clip in clips:
        wave, rate = sf.read(clip.path, dtype="float32")
        audio += [np.zeros(rate, np.float32), wave]
    replay = tmp_path / "four.wav"
    sf.write(replay, np.concatenate(audio + [np.zeros(rate, np.float32)]), rate)
    bundle = copy_bundle(DEFAULT_BUNDLE, tmp_path / "calibrated")
    # a threshold above any top probability T=1 can give here except a near-certain one
    write_calibration(bundle, Calibration(temperature=1.0, uncertain_below=0.999, fitted_on="test"))
    classifier = load_classifier(str(bundle), device="cpu")
    timeline = TimelineWriter(tmp_path / "s.jsonl", {"input": "four EmoDB clips"})
    engine = Engine(FileSource(replay, pace="fast"), classifier, EngineConfig(partials_enabled=False),
                    timeline=timeline)
    engine.start()
    assert engine.wait(120)
    engine.stop()
    utterances = load_timeline(tmp_path / "s.jsonl").utterances()
    assert len(utterances) >= 3
    assert all(p.uncertain == (p.confidence < 0.999) for p in utterances)
    assert any(p.uncertain for p in utterances)


def test_the_window_greys_an_uncertain_result_and_says_so(window):
    window.on_engine_event(flat_ish(0.0, threshold=0.5))
    assert window.current.uncertain and "uncertain" in window.current.detail.text()
    assert UNCERTAIN_COLOUR in window.current.label.styleSheet()
    assert window.table.item(0, 1).text() == "anger (uncertain)"
    assert window.table.item(0, 1).foreground().color().name() == UNCERTAIN_COLOUR
    assert "uncertain" in window.details.title.text()
    window.on_engine_event(flat_ish(2.0, threshold=0.2))
    assert not window.current.uncertain and "uncertain" not in window.current.detail.text()
    assert window.table.item(0, 1).text() == "anger"


# ---------------------------------------------------------------- readable names
def test_the_selector_shows_readable_names_with_the_id_as_tooltip(window):
    combo = window.controls.model_combo
    default = combo.findData("default")
    assert combo.itemText(default) == "Conformer (fast)"
    shipped = json.loads((DEFAULT_BUNDLE / "bundle.json").read_text())["model"]["name"]
    assert shipped in combo.itemData(default, Qt.ToolTipRole)
    window._apply_model_folders(str(REPO_ROOT / "models" / "primary"), "")
    primary = combo.findData("primary")
    assert combo.itemText(primary) == "Whisper ensemble"
    assert "whisper-ultimate" in combo.itemData(primary, Qt.ToolTipRole)


def test_the_timeline_header_records_ids_and_readable_names(tmp_path):
    from realtime.engine import EngineConfig
    from realtime.sources import FileSource
    from realtime.wiring import session_header

    import soundfile as sf

    sf.write(tmp_path / "x.wav", np.zeros(16000, np.float32), 16000)

    class Fast:   # only what session_header reads of the fast model
        name, checkpoint_hash, device = "conformer-v1", "abc", "cpu"

    header = session_header(FileSource(tmp_path / "x.wav"), Fast(), EngineConfig(),
                            REPO_ROOT / "models" / "primary", "cpu", DEFAULT_BUNDLE)
    assert header["model"]["name"] == "conformer-v1" and header["model"]["display_name"] == "Conformer (fast)"
    assert header["primary_model"]["display_name"] == "Whisper ensemble"
    names = ModelNames(header)
    assert names.readable("conformer-v1") == "Conformer (fast)"
    assert names.readable("whisper-ultimate-tiny.en+base-robust-js4-x10") == "Whisper ensemble"


def test_status_bar_and_table_name_the_model_readably_and_keep_the_id(window, tmp_path):
    header = {"model": {"name": "conformer-v1", "display_name": "Conformer (fast)"},
              "primary_model": {"bundle": "somewhere", "display_name": "Whisper ensemble"}}
    path = tmp_path / "s.jsonl"
    with TimelineWriter(path, header) as writer:
        writer.write_prediction(flat_ish(0.0, model="whisper-ultimate-x10", threshold=None))
    assert window.open_session(str(path))
    assert window.table.item(0, 3).text() == "Whisper ensemble"
    assert window.table.item(0, 3).toolTip() == "whisper-ultimate-x10"
    window._use_model_names(ModelNames(header))
    window.on_engine_event(flat_ish(1.0, model="conformer-v1", threshold=None))
    assert window.status.model.text() == "model: Conformer (fast)"
    assert window.status.model.toolTip() == "conformer-v1"


def test_an_older_timeline_without_names_reads_by_model_family():
    names = ModelNames({"model": {"name": "conformer-v1"}, "primary_model": {"bundle": "/gone"}})
    assert names.readable("conformer-v1") == "Conformer (fast)"
    assert names.readable("whisper-ultimate-tiny.en-x5") == "Whisper"
    assert ModelNames().readable("wavlm-ultimate-fold0") == "WavLM" and ModelNames().readable("") == "—"
    assert set(EMOTIONS) <= set(flat_ish(0.0).probs)
