"""Reproducible screenshot of the monitor (docs/screenshot.png) running what `python main.py` runs.

Default (--speech crema): six shared CREMA-D clips (English, one per emotion, six actors) are played
through a private PulseAudio virtual microphone (tests/pulse_support.py) into the window built by
main.py's own GUI path (main.gui_launch: the primary, default models/primary/ when installed, with
the fast default model as its fallback), listening on PortAudio's 'pulse' input. The grab waits
until the playback has ended and every clip has its utterance result in the table (or --settle-s
more seconds have passed).

--speech emodb: the older variant, EmoDB clips replayed as a file at real-time pace for --seconds.

Run under a virtual X server (a real xcb window, not the offscreen platform):
    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py
    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py --primary RUN_DIR
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
# One clip per class, alternating speakers, so every trace moves.
EMODB_EMOTIONS = ("anger", "sadness", "happiness", "neutral", "fear", "disgust")
POLL_MS = 250


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", choices=("crema", "emodb"), default="crema",
                        help="crema: CREMA-D through the virtual microphone; emodb: EmoDB file replay "
                             "(default: %(default)s)")
    parser.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED,
                        help="folder holding crema-d/ and emodb/ (default: %(default)s)")
    parser.add_argument("--primary", metavar="FOLDER|none",
                        help="as main.py --primary (default: models/primary/ when installed)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help="fast model bundle folder, the primary's fallback (default: %(default)s)")
    parser.add_argument("--untrained-ok", action="store_true",
                        help="when --bundle is missing, use an untrained conformer-v3.2 (layout check only)")
    parser.add_argument("--seconds", type=float, default=13.0,
                        help="emodb: seconds of real-time replay before the grab (default: %(default)s s)")
    parser.add_argument("--settle-s", type=float, default=8.0,
                        help="crema: seconds to wait after playback for missing results (default: %(default)s s)")
    parser.add_argument("--gap-s", type=float, default=1.5,
                        help="silence between clips, in seconds (default: %(default)s s)")
    parser.add_argument("--window-s", type=float, default=30.0,
                        help="visible plot window, in seconds (default: %(default)s s)")
    parser.add_argument("--size", default="1400x860", help="window size WIDTHxHEIGHT in pixels")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshot.png",
                        help="PNG to write (default: %(default)s)")
    return parser.parse_args(argv)


def crema_clips(crema: Path) -> list[Path]:
    """The first clip (by name) of each emotion, each from a different actor (as the
    virtual-microphone end-to-end test picks them)."""
    manifest = crema / "flac_manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"error: {manifest} not found (give --shared-data)")
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    picked: list[dict] = []
    for emotion in CREMA_EMOTIONS:
        picked.append(next(r for r in rows if r["emotion"] == emotion
                           and r["actor"] not in {p["actor"] for p in picked}))
    return [crema / "AudioFLAC" / r["file"] for r in picked]


def emodb_clips(emodb: Path) -> list[Path]:
    """One clip per EMODB_EMOTIONS, speakers taken in turn."""
    labels = emodb / "labels.csv"
    if not labels.is_file():
        raise SystemExit(f"error: {labels} not found (give --shared-data)")
    rows = list(csv.DictReader(open(labels, encoding="utf-8")))
    speakers = sorted({r["speaker"] for r in rows})
    clips = []
    for i, emotion in enumerate(EMODB_EMOTIONS):
        speaker = speakers[i % len(speakers)]
        row = next((r for r in rows if r["emotion"] == emotion and r["speaker"] == speaker),
                   next(r for r in rows if r["emotion"] == emotion))
        clips.append(emodb / row["file"])
    return clips


def join_clips(clips: list[Path], gap_s: float, out: Path) -> Path:
    """One 16-bit WAV: gap, clip, gap, clip, ..., gap (all clips at one sample rate)."""
    parts, rates = [], set()
    for path in clips:
        audio, rate = sf.read(str(path), dtype="float32")
        rates.add(rate)
        parts.append(audio if audio.ndim == 1 else audio.mean(axis=1))
    if len(rates) != 1:
        raise SystemExit(f"error: clips have different sample rates {sorted(rates)}")
    rate = rates.pop()
    gap = np.zeros(int(gap_s * rate), np.float32)
    sf.write(str(out), np.concatenate([gap] + [x for clip in parts for x in (clip, gap)]), rate, subtype="PCM_16")
    return out


def demo_bundle(bundle: Path, untrained_ok: bool, scratch: Path) -> tuple[Path, str]:
    """The fast bundle folder to show, and a note naming it (an untrained one only on request)."""
    from models.bundle import holds_model

    if holds_model(bundle):
        return bundle, bundle.name
    if not untrained_ok:
        raise SystemExit(f"error: no model bundle at {bundle} (train one, give --bundle, or --untrained-ok)")
    import torch

    from models.bundle import save_bundle
    from models.registry import build_model

    torch.manual_seed(0)
    folder = save_bundle(scratch / "untrained", build_model("conformer-v3.2").eval(), "conformer-v3.2")
    return folder, "untrained conformer-v3.2"


def start_virtual_mic():
    """A private PulseAudio daemon; this process's environment then points PortAudio at it
    (set before sounddevice is first imported)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from pulse_support import VirtualMic

    mic = VirtualMic()
    reason = mic.start()
    if reason:
        mic.stop()
        raise SystemExit(f"error: no virtual microphone: {reason}")
    os.environ["XDG_RUNTIME_DIR"] = mic.env["XDG_RUNTIME_DIR"]
    os.environ["PULSE_SERVER"] = mic.env["PULSE_SERVER"]
    return mic


def main_argv(args: argparse.Namespace, bundle: Path, scratch: Path) -> list[str]:
    """The `python main.py` arguments this screenshot stands for."""
    argv = ["--model", str(bundle), "--compute", "cpu", "--plot-window-s", str(args.window_s),
            "--out", str(scratch / "sessions" / "session.jsonl")]
    if args.primary:
        argv += ["--primary", str(args.primary)]
    if args.speech == "crema":
        argv += ["--device", "pulse"]
    return argv


def window_size(text: str) -> tuple[int, int]:
    """"1400x860" -> (1400, 860); SystemExit (one line) otherwise."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --size must look like 1400x860, got {text!r}") from None
    return width, height


def run_window(args: argparse.Namespace, scratch: Path, mic) -> int:
    width, height = window_size(args.size)
    import torch

    torch.set_num_threads(2)
    from PyQt5.QtCore import QSettings, QTimer
    from PyQt5.QtWidgets import QApplication

    import main as ved_main
    from gui.app import build_window
    from realtime.wiring import resolve_primary

    clips = (crema_clips(args.shared_data / "crema-d") if args.speech == "crema"
             else emodb_clips(args.shared_data / "emodb"))
    audio_path = join_clips(clips, args.gap_s, scratch / "speech.wav")
    bundle, model_note = demo_bundle(args.bundle, args.untrained_ok, scratch)
    main_args = ved_main.build_parser().parse_args(main_argv(args, bundle, scratch))
    main_args.primary = resolve_primary(main_args.primary)
    factory, gui_args = ved_main.gui_launch(main_args)
    print(f"main.py {' '.join(main_argv(args, bundle, scratch))}\n  primary: {main_args.primary or 'none'}; "
          f"fast model: {model_note}; speech: {len(clips)} {args.speech} clips")

    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(scratch / "settings.ini"), QSettings.IniFormat)
    window = build_window(factory, gui_args, settings)
    window.resize(width, height)
    window.show()
    played = threading.Event()
    state = {"played_at": None, "exit": 0}

    def grab() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        window.plot.refresh()
        if not window.grab().save(str(args.out), "PNG"):
            print(f"error: could not write {args.out}", file=sys.stderr)
            state["exit"] = 1
        else:
            print(f"wrote {args.out} ({window.width()}x{window.height()}; selector: "
                  f"{window.controls.model_combo.currentText()}; status bar: {window.status.model.text()}; "
                  f"{window.table.rowCount()} utterance results for {len(clips)} clips)")
        window.close()
        app.exit(state["exit"])

    def poll() -> None:
        if played.is_set() and state["played_at"] is None:
            state["played_at"] = time.monotonic()
        if state["played_at"] is not None and (window.table.rowCount() >= len(clips)
                                               or time.monotonic() - state["played_at"] > args.settle_s):
            timer.stop()
            grab()

    def play() -> None:  # worker thread: paplay only, no widgets
        try:
            mic.play(audio_path, timeout_s=120.0)
        finally:
            played.set()

    def on_started(_path: str) -> None:
        if mic is None:  # file replay: grab after a fixed stretch of real time
            QTimer.singleShot(int(args.seconds * 1000), grab)
            return
        threading.Thread(target=play, name="screenshot-paplay", daemon=True).start()
        timer.start(POLL_MS)

    def failed(message: str) -> None:
        print(f"error: the session did not start: {message}", file=sys.stderr)
        app.exit(1)

    timer = QTimer(window)
    timer.timeout.connect(poll)
    window.session.started.connect(on_started)
    window.session.failed.connect(failed)
    if mic is None:
        window.start_session(str(audio_path))
    else:
        device = window.controls.selected_device()
        if device is None or device.name != "pulse":
            print(f"error: PortAudio lists no 'pulse' input (got {device.name if device else 'none'}); "
                  "is libasound2-plugins installed?", file=sys.stderr)
            return 1
        window.toggle_running()  # what the Start button does
    return int(app.exec_())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    window_size(args.size)  # a bad size fails before the sound server starts
    scratch = Path(tempfile.mkdtemp(prefix="ved-screenshot-"))
    mic = start_virtual_mic() if args.speech == "crema" else None
    try:
        return run_window(args, scratch, mic)
    finally:
        if mic is not None:
            mic.stop()


if __name__ == "__main__":
    raise SystemExit(main())
