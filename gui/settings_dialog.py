"""Model folders dialog: where the primary model lives and, for WavLM / Wav2Vec2 heads, their backbone.

The folder checks are in gui/model_folders.py (JSON only). The dialog refuses OK while a
folder it needs is given but incomplete, naming exactly what is missing; it asks for a
backbone folder only when the primary's members record one (a Whisper ensemble needs none).
"""
from __future__ import annotations

from PyQt5.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QGridLayout, QLabel, QLineEdit,
                             QPushButton, QVBoxLayout, QWidget)

from gui.model_folders import (FolderCheck, check_backbone_folder, check_primary_folder, effective_backbone_dir,
                               needs_backbone, primary_title, primary_usable)
from models.bundle import BUNDLE_JSON, ENSEMBLE_JSON


class ModelFoldersDialog(QDialog):
    """Choose the primary folder (ensemble or bundle) and, when its members need one, the backbone
    folder. An empty primary folder = primary switched off."""

    def __init__(self, primary_dir: str = "", backbone_dir: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model folders")
        self.setMinimumWidth(760)
        self.primary_edit = QLineEdit(primary_dir)
        self.backbone_edit = QLineEdit(backbone_dir)
        self.primary_status = QLabel()
        self.backbone_status = QLabel()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        grid = QGridLayout()
        rows = ((f"Primary model folder ({ENSEMBLE_JSON} + member bundles, or one {BUNDLE_JSON})",
                 self.primary_edit, self.primary_status),
                ("Backbone folder, only for WavLM / Wav2Vec2 heads (config.json, weights, "
                 "preprocessor_config.json)", self.backbone_edit, self.backbone_status))
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
    def primary_dir(self) -> str:
        return self.primary_edit.text().strip()

    @property
    def backbone_dir(self) -> str:
        return self.backbone_edit.text().strip()

    @property
    def primary_enabled(self) -> bool:
        """True when the primary folder passes its checks, and its backbone too when it needs one."""
        return primary_usable(self.primary_dir, self.backbone_dir)

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose folder", edit.text())
        if folder:
            edit.setText(folder)

    def _checks(self) -> tuple[FolderCheck | None, FolderCheck | None, bool]:
        """(primary check, backbone check, whether a backbone is needed); None = folder not set."""
        primary = check_primary_folder(self.primary_dir) if self.primary_dir else None
        needed = needs_backbone(self.primary_dir) if primary is not None and primary.ok else False
        backbone_dir = effective_backbone_dir(self.primary_dir, self.backbone_dir)
        backbone = check_backbone_folder(backbone_dir) if backbone_dir and needed else None
        return primary, backbone, needed

    def _update_status(self) -> None:
        primary, backbone, needed = self._checks()
        if primary is None:
            self.primary_status.setText("not set (the primary is off; the fast default model runs)")
            self.primary_status.setStyleSheet("color: #666;")
        else:
            title = primary_title(self.primary_dir) if primary.ok else ""
            self.primary_status.setText(f"OK: {title}" if title else primary.text())
            self.primary_status.setStyleSheet("color: #2e7d32;" if primary.ok else "color: #b00020;")
        if not needed:
            self.backbone_status.setText("not needed: its encoder comes with an installed package (e.g. Whisper)"
                                         if primary is not None and primary.ok else
                                         "only asked for when the primary's members record a backbone")
            self.backbone_status.setStyleSheet("color: #666;")
        elif backbone is None:
            self.backbone_status.setText("not set: the primary's members need a backbone folder")
            self.backbone_status.setStyleSheet("color: #b00020;")
        else:
            recorded = not self.backbone_dir
            self.backbone_status.setText(("recorded at training time: " if recorded else "") + backbone.text())
            self.backbone_status.setStyleSheet("color: #2e7d32;" if backbone.ok else "color: #b00020;")

    def validation_error(self) -> str:
        """'' when OK may close the dialog, else one line saying what is wrong."""
        primary, backbone, needed = self._checks()
        if primary is None:
            return "primary folder: not set (a backbone alone is of no use)" if self.backbone_dir else ""
        problems = []
        if not primary.ok:
            problems.append(f"primary folder: {primary.text()}")
        if needed and backbone is None:
            problems.append("backbone folder: not set (the primary's members need one)")
        elif needed and not backbone.ok:
            problems.append(f"backbone folder: {backbone.text()}")
        return " | ".join(problems)

    def accept(self) -> None:
        error = self.validation_error()
        if error:
            self.message.setText(error)
            return
        self.message.setText("")
        super().accept()
