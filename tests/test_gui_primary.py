"""The GUI's primary model (offscreen Qt, JSON-only fixtures): the selector names both models by
what they are, a Whisper ensemble needs no backbone folder while a WavLM one does, the old saved
key still selects the primary, and main.py hands the resolved --primary to the window."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QSettings  # noqa: E402
from PyQt5.QtWidgets import QDialog  # noqa: E402

import main as ved_main  # noqa: E402
from gui.app import build_window  # noqa: E402
from gui.model_folders import PRIMARY_UNSET_TITLE, check_primary_folder, needs_backbone, primary_title, primary_usable  # noqa: E402
from gui.settings_dialog import ModelFoldersDialog  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PRIMARY = Path(__file__).resolve().parent.parent / "models" / "primary"
WHISPER_TITLE = "whisper-ultimate tiny.en ×5 (primary)"


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
    assert window.controls.primary_available() and window.controls.model_choice() == "primary"  # preselected
    assert window.controls.model_combo.currentText() == WHISPER_TITLE
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
