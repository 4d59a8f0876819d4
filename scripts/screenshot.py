"""Reproducible screenshot of the monitor: replay real EmoDB speech through the real engine
at real-time pace, then grab the window into docs/screenshot.png.

Run under a virtual X server (a real xcb window, not the offscreen platform):
    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "emodb"
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
# One clip per class, alternating speakers, so every trace moves.
DEMO_EMOTIONS = ("anger", "sadness", "happiness", "neutral", "fear", "disgust")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emodb", type=Path, default=DEFAULT_DATA,
                        help="EmoDB folder with labels.csv (default: %(default)s)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="model bundle folder (default: %(default)s)")
    parser.add_argument("--untrained-ok", action="store_true",
                        help="when --bundle is missing, use an untrained conformer-v3.2 (layout check only)")
    parser.add_argument("--seconds", type=float, default=13.0,
                        help="seconds of real-time replay before the grab (default: %(default)s s)")
    parser.add_argument("--gap-s", type=float, default=0.8,
                        help="silence between clips, in seconds (default: %(default)s s)")
    parser.add_argument("--window-s", type=float, default=30.0,
                        help="visible plot window, in seconds (default: %(default)s s)")
    parser.add_argument("--size", default="1400x860", help="window size WIDTHxHEIGHT in pixels")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshot.png",
                        help="PNG to write (default: %(default)s)")
    return parser.parse_args(argv)


def build_demo_audio(emodb: Path, gap_s: float, out: Path) -> Path:
    """Join one clip per DEMO_EMOTIONS (speakers 03/08/...) with gap_s silences into out."""
    labels = emodb / "labels.csv"
    if not labels.is_file():
        raise SystemExit(f"error: {labels} not found (give --emodb)")
    rows = list(csv.DictReader(open(labels, encoding="utf-8")))
    speakers = sorted({r["speaker"] for r in rows})
    parts, rate = [], 22_050
    for i, emotion in enumerate(DEMO_EMOTIONS):
        speaker = speakers[i % len(speakers)]
        row = next((r for r in rows if r["emotion"] == emotion and r["speaker"] == speaker),
                   next(r for r in rows if r["emotion"] == emotion))
        audio, rate = sf.read(emodb / row["file"], dtype="float32")
        parts += [np.zeros(int(gap_s * rate), np.float32), audio]
    sf.write(out, np.concatenate(parts + [np.zeros(int(gap_s * rate), np.float32)]), rate)
    return out


def demo_bundle(bundle: Path, untrained_ok: bool, scratch: Path) -> tuple[Path, str]:
    """The bundle folder to show, and a note naming it (an untrained one only on request)."""
    if (bundle / "bundle.json").is_file() or (bundle / "ensemble.json").is_file():
        return bundle, bundle.name
    if not untrained_ok:
        raise SystemExit(f"error: no model bundle at {bundle} (train one, give --bundle, or --untrained-ok)")
    import torch

    from models.bundle import save_bundle
    from models.registry import build_model

    torch.manual_seed(0)
    folder = save_bundle(scratch / "untrained", build_model("conformer-v3.2").eval(), "conformer-v3.2")
    return folder, "untrained conformer-v3.2"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --size must look like 1400x860, got {args.size!r}") from None
    import torch

    torch.set_num_threads(2)
    from PyQt5.QtCore import QSettings, QTimer
    from PyQt5.QtWidgets import QApplication

    from gui.app import build_window
    from realtime.engine import EngineConfig
    from realtime.wiring import gui_engine_factory

    scratch = Path(tempfile.mkdtemp(prefix="ved-screenshot-"))
    audio_path = build_demo_audio(args.emodb, args.gap_s, scratch / "demo.wav")
    bundle, model_note = demo_bundle(args.bundle, args.untrained_ok, scratch)
    # The same factory main.py hands to the GUI: real-time file replay, real engine and model.
    factory = gui_engine_factory(EngineConfig(), str(bundle), "cpu")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(scratch / "settings.ini"), QSettings.IniFormat)
    window = build_window(factory, argparse.Namespace(sessions_dir=str(scratch / "sessions"),
                                                      window_s=args.window_s), settings)
    window.resize(width, height)
    window.show()
    window.start_session(str(audio_path))

    def grab() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        window.plot.refresh()
        if not window.grab().save(str(args.out), "PNG"):
            print(f"error: could not write {args.out}", file=sys.stderr)
        else:
            print(f"wrote {args.out} ({window.width()}x{window.height()}, model: {model_note}, "
                  f"{window.table.rowCount()} utterances shown)")
        window.close()
        app.quit()

    def failed(message: str) -> None:
        print(f"error: the session did not start: {message}", file=sys.stderr)
        app.exit(1)

    # Count the replay time from the moment the engine runs, not from window creation.
    window.session.started.connect(lambda _path: QTimer.singleShot(int(args.seconds * 1000), grab))
    window.session.failed.connect(failed)
    return int(app.exec_())


if __name__ == "__main__":
    raise SystemExit(main())
