"""VED - Voice Emotion Detective: real-time speech emotion monitor.

    python main.py                         # desktop monitor (GUI)
    python main.py --headless              # default microphone, results in the terminal
    python main.py --headless --input talk.wav --pace fast --out session.jsonl
    python main.py --list-devices
    python main.py --export-csv session.jsonl [session.csv]

Exit codes: 0 ok, 1 unexpected internal error, 2 user error (bad file, device, model folder,
output path or option value; also an input file that could not be read to its end: the session
stops there, its timeline is kept, and stderr says where), 130 interrupted before the session started.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


class UsageError(Exception):
    """A bad command line (option value, argument count); one line for the user, exit 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """A bad option is one `error: ...` line and exit 2, like every other user error."""

    def error(self, message: str):
        self.exit(EXIT_USER, f"error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from realtime.vad import SegmenterConfig

    parser = OneLineErrorParser(
        prog="main.py", description="VED: live speech emotion recognition (6 classes: anger, disgust, "
        "fear, happy, neutral, sad) from a microphone or an audio file.",
        epilog="Times are in milliseconds unless the option name says otherwise. Timelines are JSON Lines "
               "files, one record per line, written and synced as results arrive.")
    mode = parser.add_argument_group("mode")
    mode.add_argument("--headless", action="store_true", help="no window: print results in the terminal")
    mode.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    mode.add_argument("--export-csv", nargs="+", metavar=("TIMELINE", "CSV"),
                      help="export a session timeline (.jsonl) to CSV (default: same name, .csv) and exit; "
                           "replaces only an earlier CSV export, never the timeline or another file")
    mode.add_argument("--review", metavar="TIMELINE", help="GUI: open a recorded session for review")
    src = parser.add_argument_group("input")
    src.add_argument("--input", metavar="FILE", help="replay an audio file (wav, flac, ogg; any rate) "
                     "instead of the microphone")
    src.add_argument("--pace", choices=("realtime", "fast"), default="realtime",
                     help="file replay speed: realtime (like a live microphone; default) or fast (as fast as "
                          "the models allow, nothing dropped)")
    src.add_argument("--device", metavar="INDEX|NAME", help="input device: index or part of its name "
                     "(see --list-devices); default: the system's default input")
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="PATH", help="timeline file, which must not exist yet: a recorded session "
                     "is never overwritten (default: $XDG_DATA_HOME/ved/sessions/ved-YYYYmmdd-HHMMSS.jsonl, "
                     "i.e. ~/.local/share/ved/sessions)")
    out.add_argument("--show-partials", action="store_true",
                     help="headless: also print the live partial-window results")
    models = parser.add_argument_group("models")
    models.add_argument("--model", metavar="FOLDER|NAME", help="fast model: bundle folder or registry name "
                        "(default: models/default/, the trained log-mel model)")
    models.add_argument("--primary", metavar="FOLDER|none", default=os.environ.get("VED_PRIMARY"),
                        help="accurate model: an ensemble or bundle folder (default: $VED_PRIMARY if set, else "
                        "models/primary/, the Whisper-encoder ensemble, when it is installed); the fast model takes "
                        "over whenever it misses the latency budget; 'none' runs on the fast model alone")
    models.add_argument("--backbone", "--backbone-dir", dest="backbone_dir", metavar="FOLDER|HUB_ID",
                        help="pretrained backbone for --primary (overrides the one recorded in the ensemble): "
                        "a local folder, or a hub id such as microsoft/wavlm-base-plus read from the Hugging Face "
                        "cache (downloaded once only when missing and HF_HUB_OFFLINE is unset)")
    models.add_argument("--compute", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where models run (auto: CUDA when available)")
    models.add_argument("--latency-budget-ms", type=float, default=300.0,
                        help="p95 end-of-utterance-to-result latency the primary must keep (ms; default 300)")
    win = parser.add_argument_group("live windows and voice activity detection")
    win.add_argument("--hop-ms", type=int, default=500, help="longest gap between live partial-window updates "
                     "while someone speaks (ms; default 500); windows are cut early enough for their results to "
                     "arrive within it")
    win.add_argument("--window-ms", type=int, default=2000, help="length of a live partial window (ms; "
                     "default 2000)")
    win.add_argument("--no-partials", action="store_true", help="classify whole utterances only")
    vad = SegmenterConfig  # defaults tuned on real speech live in one place: realtime/vad.py
    win.add_argument("--vad-aggressiveness", type=int, default=vad.aggressiveness, choices=(0, 1, 2, 3),
                     help="WebRTC VAD aggressiveness, 0 (keeps most) to 3 (strictest); "
                          f"default {vad.aggressiveness}")
    win.add_argument("--hangover-ms", type=int, default=vad.hangover_ms,
                     help=f"silence that ends an utterance (ms; default {vad.hangover_ms})")
    win.add_argument("--min-utterance-ms", type=int, default=vad.min_utterance_ms,
                     help=f"shorter utterances are ignored (ms; default {vad.min_utterance_ms})")
    win.add_argument("--max-utterance-ms", type=int, default=vad.max_utterance_ms,
                     help=f"longer speech is cut into pieces of this length (ms; default {vad.max_utterance_ms})")
    gui = parser.add_argument_group("window")
    gui.add_argument("--plot-window-s", type=float, help="GUI: seconds of history in the live plot")
    return parser


def engine_config(args: argparse.Namespace):
    """Frozen configs from the arguments; UsageError (one line) for values their
    __post_init__ validation refuses."""
    from realtime.engine import EngineConfig
    from realtime.vad import SegmenterConfig

    try:
        vad = SegmenterConfig(aggressiveness=args.vad_aggressiveness, hangover_ms=args.hangover_ms,
                              tail_ms=min(SegmenterConfig.tail_ms, max(args.hangover_ms, 0)),
                              min_utterance_ms=args.min_utterance_ms, max_utterance_ms=args.max_utterance_ms)
        return EngineConfig(hop_ms=args.hop_ms, window_ms=args.window_ms,
                            min_window_ms=min(EngineConfig.min_window_ms, max(args.window_ms, 0)),
                            partials_enabled=not args.no_partials, latency_budget_ms=args.latency_budget_ms,
                            compute_device=args.compute, vad=vad)
    except (ValueError, OverflowError) as exc:
        raise UsageError(str(exc)) from None


def export_csv_command(paths: list[str]) -> int:
    """Export a timeline; never writes onto it (see realtime.timeline.export_csv). Lines that
    cannot be read or formatted are skipped and counted, the rest is exported."""
    from realtime.files import is_locked
    from realtime.timeline import export_csv, load_timeline

    if len(paths) > 2:
        raise UsageError("--export-csv takes a timeline and optionally a CSV path")
    source = Path(paths[0])
    if len(paths) == 2:
        target = Path(paths[1])   # export_csv refuses the timeline itself or a file that is not an export
    elif source.suffix.lower() == ".csv":   # a timeline saved as x.csv: write beside it
        target = source.with_name(f"{source.stem}-export.csv")
    else:
        target = source.with_suffix(".csv")
    session = load_timeline(source)
    rows = export_csv(session, target)
    skipped = session.torn_lines + len(session.predictions) - rows
    notes = []
    if is_locked(source):
        notes.append("the session is still recording; exported what was recorded so far")
    elif not session.complete:
        notes.append("session did not end cleanly; exported what was recorded")
    if skipped:
        notes.append(f"skipped {skipped} unreadable or malformed line{'s' if skipped != 1 else ''}")
    print(f"wrote {rows} predictions to {target}" + (f" ({'; '.join(notes)})" if notes else ""))
    return EXIT_OK


def run_headless(args: argparse.Namespace) -> int:
    from realtime.console import ConsolePrinter
    from realtime.timeline import check_writable, default_timeline_path
    from realtime.wiring import build_engine, load_model, open_source, resolve_bundle_dir

    cfg = engine_config(args)
    # Cheap checks first: a bad file, device or output path is reported before models load.
    source = open_source(args.input, args.device, pace=args.pace)
    args.out = args.out or str(default_timeline_path())
    check_writable(Path(args.out))
    fallback = load_model(args.model, args.compute)
    printer = ConsolePrinter(show_partials=args.show_partials)
    engine = build_engine(source, fallback, cfg, args.out, printer, primary_dir=args.primary,
                          backbone_dir=args.backbone_dir, compute=args.compute,
                          fallback_dir=resolve_bundle_dir(args.model))
    print(f"timeline: {engine.timeline.path}", file=sys.stderr, flush=True)
    interrupted = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: interrupted.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        engine.start()
        while not interrupted.is_set() and not engine.wait(0.2):
            pass
    finally:
        summary = engine.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    printer.print_summary(summary)
    if engine.failure is not None:   # an engine thread died: the session ended, the timeline is whole
        print(f"error: {engine.failure}", file=sys.stderr)
        return EXIT_USER if is_user_error(engine.failure.cause) else EXIT_INTERNAL
    if interrupted.is_set():
        print("stopped by signal; timeline complete", file=sys.stderr)
    cut_short = source.cut_short
    if cut_short and not interrupted.is_set():
        # The warning is already in the console and the timeline; the exit code must say it too.
        raise UsageError(f"input cut short: {cut_short}; the timeline {engine.timeline.path} keeps "
                         "everything before that point")
    return EXIT_OK


def gui_launch(args: argparse.Namespace) -> tuple[Callable[..., Any], argparse.Namespace]:
    """(engine factory, window args) for gui/app.py from parsed args whose --primary is resolved;
    also used by scripts/screenshot.py, so the README screenshot shows what `python main.py` runs."""
    from realtime.wiring import gui_engine_factory

    gui_args = argparse.Namespace(
        device=args.device, file=args.input, model="primary" if args.primary else "default",
        window_s=args.plot_window_s, sessions_dir=str(Path(args.out).parent) if args.out else None, out=args.out,
        primary_dir=str(args.primary) if args.primary else None, backbone_dir=args.backbone_dir,
        session=args.review)
    return gui_engine_factory(engine_config(args), args.model, args.compute), gui_args


def run_gui_mode(args: argparse.Namespace) -> int:
    try:
        from gui.app import check_display, run_gui
    except ImportError as err:
        raise UsageError(f"the desktop window is unavailable ({err}); use --headless") from None
    try:
        check_display()
    except ValueError as err:  # no display: a user's set-up problem, one line, not a traceback
        raise UsageError(str(err)) from None
    if args.out:   # --out names the window's first session as it names the headless one
        from realtime.timeline import check_writable

        check_writable(Path(args.out))
    return run_gui(*gui_launch(args))


# The project's own exception types for a user mistake or unusable input (one-line message,
# exit 2). Looked up only in modules already imported: an error of a module's type implies it
# was loaded (no torch import just to report a typo). Any other exception, a plain ValueError
# included, is an internal bug: exit 1 with its traceback.
USER_ERRORS = (("models.bundle", "BundleError"), ("models.registry", "UnknownModelError"),
               ("realtime.engine", "EngineError"), ("realtime.timeline", "TimelineError"),
               ("realtime.sources", "AudioFileError"), ("realtime.devices", "DeviceError"),
               ("models.backbone", "BackboneError"))


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, UsageError):
        return True
    for module_name, class_name in USER_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    # A path the user gave that the OS refuses (name too long, permission, not a folder...).
    return isinstance(exc, OSError) and exc.filename is not None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list_devices:
            from realtime.sources import format_device_table

            print(format_device_table())
            return EXIT_OK
        if args.export_csv:
            return export_csv_command(args.export_csv)
        if args.backbone_dir:
            from models.hub import resolve_backbone  # a folder, or a hub id through the HF cache

            args.backbone_dir = str(resolve_backbone(args.backbone_dir))
        from realtime.wiring import resolve_primary

        args.primary = resolve_primary(args.primary)
        return run_headless(args) if args.headless else run_gui_mode(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if is_user_error(exc):
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            return EXIT_USER
        raise


if __name__ == "__main__":
    sys.exit(main())
