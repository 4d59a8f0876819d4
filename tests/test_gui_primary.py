"""The GUI's model choice (offscreen Qt, JSON-only fixtures): the selector names both models by
what they are, a Whisper ensemble needs no backbone folder while a WavLM one does, the old saved
key still selects the primary, the model-folders dialog names what a backbone folder lacks, and
main.py hands the resolved --primary to the window."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QSettings, Qt  # noqa: E402
from PyQt5.QtWidgets import QDialog  # noqa: E402

import main as ved_main  # noqa: E402
from gui.app import build_window  # noqa: E402
from gui.model_folders import (PRIMARY_UNSET_TITLE, check_backbone_folder, check_primary_folder,  # noqa: E402
                                needs_backbone, primary_title, primary_usable)
from gui.settings_dialog import ModelFoldersDialog  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PRIMARY = Path(__file__).resolve().parent.parent / "models" / "primary"
WHISPER_TITLE = "whisper-ultimate tiny.en ×5 (primary)"
# A WavLM head's bundle.json as far as the GUI reads it: its model args record a backbone folder.
WAVLM_MEMBER = json.dumps({"model": {"name": "wavlm-ultimate", "args": {"backbone_dir": "/elsewhere/wavlm-base-plus"}}})


def member_json(name: str, args: dict) -> dict:
    """What the GUI reads of a member's bundle.json (the loader reads much more)."""
    return {"format_version": 2, "kind": "torch", "model": {"name": name, "args": args},
            "labels": ["anger", "disgust", "fear", "happy", "neutral", "sad"]}


def write_ensemble(folder: Path, member: dict, members: int = 5, **manifest) -> Path:
    folder.mkdir(parents=True)
    names = [f"fold{i}" for i in range(members)]
    for name in names:
        (folder / name).mkdir()
        (folder / name / "bundle.json").write_text(json.dumps(member))
    (folder / "ensemble.json").write_text(json.dumps({"format_version": 1, "kind": "ensemble", "members": names,
                                                      "shared_backbone": True, **manifest}))
    return folder


@pytest.fixture
def settings(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "ved-settings.ini"), QSettings.IniFormat)


@pytest.fixture
def whisper_dir(tmp_path) -> Path:
    args = {"encoder": "tiny.en", "encoder_sha256": "1a5a" * 16, "layer_pooling": "weighted", "num_classes": 6}
    return write_ensemble(tmp_path / "whisper-ens", member_json("whisper-ultimate", args), backbone_dir=None)


@pytest.fixture
def wavlm_dir(tmp_path) -> Path:
    args = {"backbone_dir": str(tmp_path / "gone" / "wavlm-base-plus"), "backbone_kind": "wavlm", "num_classes": 6}
    return write_ensemble(tmp_path / "wavlm-ens", member_json("wavlm-ultimate", args))


def complete_backbone(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    return folder


def combo_titles(window) -> dict[str, str]:
    """The selector's technical titles (each entry's tooltip; the entry itself shows a readable name)."""
    combo = window.controls.model_combo
    return {combo.itemData(row): combo.itemData(row, Qt.ToolTipRole) for row in range(combo.count())}


def readable_titles(window) -> dict[str, str]:
    combo = window.controls.model_combo
    return {combo.itemData(row): combo.itemText(row) for row in range(combo.count())}


def test_selector_lists_the_fast_model_and_the_primary_by_what_they_are(qtbot, settings, tmp_path, whisper_dir):
    calls = []

    def recording_factory(source, model_choice, listener, **options):
        calls.append((source, model_choice, options))
        raise ValueError("recorded only")

    window = build_window(recording_factory, argparse.Namespace(model="primary", primary_dir=str(whisper_dir)),
                          settings)
    window.sessions_dir = str(tmp_path / "sessions")
    qtbot.addWidget(window)
    shipped = json.loads((REPO_ROOT / "models" / "default" / "bundle.json").read_text())["model"]["name"]
    assert combo_titles(window) == {"default": f"{shipped} (default)", "primary": WHISPER_TITLE}
    assert readable_titles(window) == {"default": "Conformer (fast)", "primary": "Whisper ensemble"}
    assert window.controls.primary_available() and window.controls.model_choice() == "primary"  # preselected
    assert window.controls.model_combo.currentText() == "Whisper ensemble"
    assert window.status.error.text() == ""
    window.start_session("talk.wav")
    qtbot.waitUntil(lambda: window.phase == "idle" and len(calls) == 1, timeout=5_000)
    assert calls[0][:2] == ("talk.wav", "primary")
    assert calls[0][2]["primary_dir"] == str(whisper_dir)
    assert calls[0][2]["backbone_dir"] is None  # no backbone asked for


def test_without_a_primary_the_entry_is_disabled_and_says_where_to_set_it(qtbot, settings, tmp_path):
    window = build_window(lambda *a, **k: None, argparse.Namespace(model="primary"), settings)
    qtbot.addWidget(window)
    assert combo_titles(window)["primary"] == PRIMARY_UNSET_TITLE
    assert not window.controls.primary_available() and window.controls.model_choice() == "default"
    assert "not available" in window.status.error.text() and "Model folders" in window.status.error.text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ensemble.json").write_text("{not json")
    assert primary_title(str(broken)) == PRIMARY_UNSET_TITLE and not primary_usable(str(broken), "")


def test_single_bundle_primary_is_titled_without_a_count(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "bundle.json").write_text(json.dumps(member_json("whisper-ultimate", {"encoder": "base"})))
    assert primary_title(str(folder)) == "whisper-ultimate base (primary)"
    assert primary_usable(str(folder), "") and not needs_backbone(str(folder))


def test_whisper_ensemble_with_no_backbone_is_accepted_by_the_dialog(qtbot, whisper_dir):
    assert not needs_backbone(str(whisper_dir)) and primary_usable(str(whisper_dir), "")
    dialog = ModelFoldersDialog(str(whisper_dir), "")
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.primary_status.text() == f"OK: {WHISPER_TITLE}"
    assert dialog.backbone_status.text().startswith("not needed")
    assert dialog.validation_error() == ""
    dialog.accept()
    assert dialog.result() == QDialog.Accepted and dialog.primary_enabled
    (whisper_dir / "fold3" / "bundle.json").unlink()  # an incomplete ensemble is still refused
    dialog = ModelFoldersDialog(str(whisper_dir), "")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.accept()
    assert dialog.result() != QDialog.Accepted and "member bundles missing: fold3" in dialog.message.text()


def test_wavlm_ensemble_without_its_backbone_is_not_usable(qtbot, settings, tmp_path, wavlm_dir):
    assert needs_backbone(str(wavlm_dir))
    assert not primary_usable(str(wavlm_dir), "")  # recorded backbone folder does not exist here
    dialog = ModelFoldersDialog(str(wavlm_dir), "")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.accept()
    assert dialog.result() != QDialog.Accepted
    assert "backbone folder" in dialog.message.text() and "folder not found" in dialog.message.text()
    window = build_window(lambda *a, **k: None, argparse.Namespace(primary_dir=str(wavlm_dir)), settings)
    qtbot.addWidget(window)
    assert combo_titles(window)["primary"] == "wavlm-ultimate wavlm-base-plus ×5 (primary)"
    assert readable_titles(window)["primary"] == "WavLM ensemble"
    assert not window.controls.primary_available()
    backbone = complete_backbone(tmp_path / "mine" / "wavlm-base-plus")
    assert primary_usable(str(wavlm_dir), str(backbone))  # the user's copy
    window._apply_model_folders(str(wavlm_dir), str(backbone))
    assert window.controls.primary_available()
    complete_backbone(tmp_path / "gone" / "wavlm-base-plus")  # the folder recorded at training time
    assert primary_usable(str(wavlm_dir), "")


def test_the_old_saved_key_and_folder_still_select_the_primary(qtbot, settings, whisper_dir):
    settings.setValue("models/choice", "wavlm-ensemble")  # saved by an older VED
    settings.setValue("models/ensemble_dir", str(whisper_dir))
    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    assert window.controls.model_choice() == "primary" and window.primary_dir == str(whisper_dir)
    window.controls.select_model("default")
    window.controls.select_model("wavlm-ensemble")  # --model given the old key
    assert window.controls.model_choice() == "primary"
    window.save_settings()
    assert settings.value("models/choice") == "primary" and settings.value("models/primary_dir") == str(whisper_dir)


@pytest.mark.parametrize("given", ["installed", "folder", "none"])
def test_main_hands_the_resolved_primary_to_the_window(qtbot, settings, monkeypatch, tmp_path, whisper_dir, given):
    import gui.app
    import realtime.wiring

    handed = {}
    monkeypatch.delenv("VED_PRIMARY", raising=False)  # conftest sets it to none for the other tests
    monkeypatch.setattr(realtime.wiring, "DEFAULT_PRIMARY_DIR", whisper_dir)  # as if models/primary/ held it
    monkeypatch.setattr(gui.app, "run_gui", lambda factory, args: handed.update(factory=factory, args=args) or 0)
    other = write_ensemble(tmp_path / "other", member_json("whisper-ultimate", {"encoder": "base"}), members=3)
    argv = {"installed": [], "folder": ["--primary", str(other)], "none": ["--primary", "none"]}[given]
    assert ved_main.main(argv) == 0
    args = handed["args"]
    expected = {"installed": str(whisper_dir), "folder": str(other), "none": None}[given]
    assert args.primary_dir == expected and args.model == ("default" if given == "none" else "primary")
    window = build_window(handed["factory"], args, settings)
    qtbot.addWidget(window)
    title = {"installed": WHISPER_TITLE, "folder": "whisper-ultimate base ×3 (primary)", "none": PRIMARY_UNSET_TITLE}
    assert combo_titles(window)["primary"] == title[given]
    assert window.controls.model_choice() == ("default" if given == "none" else "primary")


def test_a_fused_primary_names_every_encoder(tmp_path):
    tiny = member_json("whisper-ultimate", {"encoder": "tiny.en", "num_classes": 6})
    base = member_json("whisper-ultimate", {"encoder": "base", "num_classes": 6})
    folder = write_ensemble(tmp_path / "fused", tiny, members=2)
    for k in range(2):  # members fold{k}/<run>, as `python -m train fuse` writes them
        (folder / f"fold{k}" / "base-run").mkdir()
        (folder / f"fold{k}" / "base-run" / "bundle.json").write_text(json.dumps(base))
    manifest = json.loads((folder / "ensemble.json").read_text())
    manifest["members"] += ["fold0/base-run", "fold1/base-run"]
    (folder / "ensemble.json").write_text(json.dumps(manifest))
    assert primary_title(str(folder)) == "whisper-ultimate tiny.en + base ×4 (primary)"
    assert check_primary_folder(str(folder)).ok


def test_main_without_a_display_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setattr(ved_main.sys, "platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    assert ved_main.main(["--primary", "none"]) == ved_main.EXIT_USER
    err = capsys.readouterr().err
    assert err.startswith("error: no display found") and "xvfb-run" in err and len(err.splitlines()) == 1


def test_the_shipped_primary_is_a_usable_primary_without_a_backbone():
    assert primary_title(str(SHIPPED_PRIMARY)) == "whisper-ultimate tiny.en + base ×10 (primary)"
    assert primary_usable(str(SHIPPED_PRIMARY), "") and not needs_backbone(str(SHIPPED_PRIMARY))


def test_settings_dialog_rejects_incomplete_backbone_naming_missing_files(qtbot, tmp_path):
    ensemble = tmp_path / "ensemble"
    (ensemble / "fold0").mkdir(parents=True)
    (ensemble / "ensemble.json").write_text(json.dumps({"format_version": 1, "kind": "ensemble",
                                                        "members": ["fold0"]}))
    (ensemble / "fold0" / "bundle.json").write_text(WAVLM_MEMBER)
    backbone = tmp_path / "wavlm-base-plus"
    backbone.mkdir()
    (backbone / "config.json").write_text("{}")
    dialog = ModelFoldersDialog(str(ensemble), str(backbone))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.accept()
    assert dialog.isVisible() and dialog.result() != QDialog.Accepted
    message = dialog.message.text()
    assert "preprocessor_config.json" in message and "pytorch_model.bin or model.safetensors" in message
    assert "config.json," not in message.replace("preprocessor_config.json", "")
    (backbone / "preprocessor_config.json").write_text("{}")
    (backbone / "model.safetensors").write_bytes(b"x")
    assert check_backbone_folder(str(backbone)).ok
    dialog.accept()
    assert dialog.result() == QDialog.Accepted and dialog.primary_enabled


def test_wavlm_primary_entry_enabled_only_with_valid_folders_and_settings_remembered(qtbot, settings, tmp_path):
    ensemble, backbone = tmp_path / "ens", tmp_path / "bb"
    ensemble.mkdir()
    backbone.mkdir()
    calls = []

    def recording_factory(source, model_choice, listener, **options):
        calls.append((source, model_choice, options))
        raise ValueError("recorded only")

    window = build_window(recording_factory, None, settings)
    window.sessions_dir = str(tmp_path / "sessions")
    qtbot.addWidget(window)
    window._apply_model_folders(str(ensemble), str(backbone))
    assert not window.controls.primary_available()
    (ensemble / "m").mkdir()
    (ensemble / "m" / "bundle.json").write_text(WAVLM_MEMBER)
    (ensemble / "ensemble.json").write_text(json.dumps({"kind": "ensemble", "members": ["m"]}))
    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"):
        (backbone / name).write_text("{}")
    window._apply_model_folders(str(ensemble), str(backbone))
    assert window.controls.primary_available()
    window._apply_model_folders(str(ensemble), "")  # no backbone chosen and none recorded
    assert not window.controls.primary_available()
    (ensemble / "ensemble.json").write_text(json.dumps({"kind": "ensemble", "members": ["m"],
                                                        "backbone_dir": str(backbone)}))
    window._apply_model_folders(str(ensemble), "")  # the one recorded at training time is complete
    assert window.controls.primary_available()
    window.controls.select_model("primary")
    window.start_session("talk.wav")
    qtbot.waitUntil(lambda: window.phase == "idle" and len(calls) == 1, timeout=5_000)
    assert calls[0][:2] == ("talk.wav", "primary")
    assert calls[0][2]["primary_dir"] == str(ensemble) and calls[0][2]["backbone_dir"] is None
    assert window.status.error.text() == "ValueError: recorded only"
    window.controls.window_spin.setValue(120)
    window.save_settings()
    again = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(again)
    assert again.controls.model_choice() == "primary"
    assert again.controls.window_spin.value() == 120 and again.plot.window_s == 120


def test_model_selector_titles_and_the_old_saved_key(qtbot, settings, tmp_path):
    from gui.controls import model_choices

    bundle_json = tmp_path / "bundle.json"
    bundle_json.write_text(json.dumps({"model": {"name": "conformer-v3.2", "args": {}}}))
    assert model_choices(tmp_path)[0] == ("default", "conformer-v3.2 (default)")
    assert model_choices(tmp_path / "missing")[0] == ("default", "default model (models/default)")
    settings.setValue("models/choice", "conformer")  # saved by an older VED
    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    assert window.controls.model_choice() == "default"
