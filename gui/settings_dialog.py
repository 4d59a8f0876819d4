"""Model folders dialog: where the WavLM ensemble and its pretrained backbone live.

The checks are plain functions (testable without a window). The dialog refuses
OK while a folder is given but incomplete, naming exactly what is missing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PyQt5.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QGridLayout, QLabel, QLineEdit,
                             QPushButton, QVBoxLayout, QWidget)

BACKBONE_REQUIRED = ("config.json", "preprocessor_config.json")
BACKBONE_WEIGHTS = ("pytorch_model.bin", "model.safetensors")


@dataclass(frozen=True)
class FolderCheck:
    """Result of checking one folder: ok, or the list of problems (missing files first)."""

    folder: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        return "OK" if self.ok else "; ".join(self.problems)


def check_backbone_folder(folder: str) -> FolderCheck:
    """A Hugging Face backbone folder needs config.json, preprocessor_config.json and
    pytorch_model.bin or model.safetensors."""
    path = Path(folder)
    if not folder or not path.is_dir():
        return FolderCheck(folder, (f"folder not found: {folder or '(empty)'}",))
    missing = [name for name in BACKBONE_REQUIRED if not (path / name).is_file()]
    if not any((path / name).is_file() for name in BACKBONE_WEIGHTS):
        missing.append(" or ".join(BACKBONE_WEIGHTS))
    return FolderCheck(folder, (f"missing {', '.join(missing)}",) if missing else ())


def check_ensemble_folder(folder: str) -> FolderCheck:
    """An ensemble folder needs ensemble.json (kind "ensemble") and every member folder it lists."""
    path = Path(folder)
    if not folder or not path.is_dir():
        return FolderCheck(folder, (f"folder not found: {folder or '(empty)'}",))
    manifest = path / "ensemble.json"
    if not manifest.is_file():
        return FolderCheck(folder, ("missing ensemble.json",))
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return FolderCheck(folder, (f"ensemble.json is unreadable: {exc}",))
    if not isinstance(data, dict) or data.get("kind") != "ensemble":
        return FolderCheck(folder, ('ensemble.json is not an ensemble manifest (kind != "ensemble")',))
    members = data.get("members") or []
    absent = [str(m) for m in members if not (path / str(m) / "bundle.json").is_file()]
    problems = []
    if not members:
        problems.append("ensemble.json lists no members")
    if absent:
        problems.append(f"member bundles missing: {', '.join(absent)}")
    return FolderCheck(folder, tuple(problems))


def recorded_backbone_dir(ensemble_dir: str) -> str:
    """The backbone folder ensemble.json recorded at training time ('' when none/unreadable)."""
    try:
        data = json.loads((Path(ensemble_dir) / "ensemble.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    value = data.get("backbone_dir") if isinstance(data, dict) else None
    return str(value) if value else ""


def effective_backbone_dir(ensemble_dir: str, backbone_dir: str) -> str:
    """The user's backbone folder, else the one recorded in ensemble.json."""
    return backbone_dir or (recorded_backbone_dir(ensemble_dir) if ensemble_dir else "")


def ensemble_usable(ensemble_dir: str, backbone_dir: str) -> bool:
    """True when the WavLM ensemble can be offered: both folders present and complete."""
    backbone = effective_backbone_dir(ensemble_dir, backbone_dir)
    return bool(ensemble_dir and backbone) and check_ensemble_folder(ensemble_dir).ok \
        and check_backbone_folder(backbone).ok


class ModelFoldersDialog(QDialog):
    """Choose the ensemble and backbone folders. Both empty = ensemble disabled."""

    def __init__(self, ensemble_dir: str = "", backbone_dir: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model folders")
        self.setMinimumWidth(760)
        self.ensemble_edit = QLineEdit(ensemble_dir)
        self.backbone_edit = QLineEdit(backbone_dir)
        self.ensemble_status = QLabel()
        self.backbone_status = QLabel()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        grid = QGridLayout()
        rows = (("WavLM ensemble folder (ensemble.json)", self.ensemble_edit, self.ensemble_status),
                ("WavLM backbone folder (config.json, weights, preprocessor_config.json)",
                 self.backbone_edit, self.backbone_status))
        for row, (title, edit, status) in enumerate(rows):
            browse = QPushButton("Browse…")
            browse.clicked.connect(lambda _checked=False, e=edit: self._browse(e))
            edit.textChanged.connect(self._update_status)
            status.setWordWrap(True)
            grid.addWidget(QLabel(title), 3 * row, 0, 1, 2)
            grid.addWidget(edit, 3 * row + 1, 0)
            grid.addWidget(browse, 3 * row + 1, 1)
            grid.addWidget(status, 3 * row + 2, 0, 1, 2)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self._update_status()

    @property
    def ensemble_dir(self) -> str:
        return self.ensemble_edit.text().strip()

    @property
    def backbone_dir(self) -> str:
        return self.backbone_edit.text().strip()

    @property
    def ensemble_enabled(self) -> bool:
        """True when both folders (the backbone may come from ensemble.json) pass their checks."""
        return ensemble_usable(self.ensemble_dir, self.backbone_dir)

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose folder", edit.text())
        if folder:
            edit.setText(folder)

    def _checks(self) -> tuple[FolderCheck | None, FolderCheck | None]:
        ensemble = check_ensemble_folder(self.ensemble_dir) if self.ensemble_dir else None
        backbone_dir = effective_backbone_dir(self.ensemble_dir, self.backbone_dir)
        backbone = check_backbone_folder(backbone_dir) if backbone_dir else None
        return ensemble, backbone

    def _update_status(self) -> None:
        ensemble, backbone = self._checks()
        for label, check in ((self.ensemble_status, ensemble), (self.backbone_status, backbone)):
            if check is None:
                label.setText("not set (the backbone may also be recorded in ensemble.json)"
                              if label is self.backbone_status else "not set")
                label.setStyleSheet("color: #666;")
            else:
                recorded = label is self.backbone_status and not self.backbone_dir
                label.setText(("from ensemble.json: " if recorded else "") + check.text())
                label.setStyleSheet("color: #2e7d32;" if check.ok else "color: #b00020;")

    def validation_error(self) -> str:
        """'' when OK may close the dialog, else one line saying what is wrong."""
        ensemble, backbone = self._checks()
        if ensemble is None and backbone is None:
            return ""
        problems = []
        if ensemble is None:
            problems.append("ensemble folder: not set")
        elif not ensemble.ok:
            problems.append(f"ensemble folder: {ensemble.text()}")
        if backbone is None:
            problems.append("backbone folder: not set")
        elif not backbone.ok:
            problems.append(f"backbone folder: {backbone.text()}")
        return " | ".join(problems)

    def accept(self) -> None:
        error = self.validation_error()
        if error:
            self.message.setText(error)
            return
        self.message.setText("")
        super().accept()
