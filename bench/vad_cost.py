"""CPU cost of the audio front end per second of audio: resampling 22.05 kHz -> 16 kHz,
VAD segmentation, and VAD + partial windows (StreamSegmenter), on real EmoDB clips.

    python -m bench.vad_cost [--seconds 60] [--block-ms 30]

Figures are milliseconds of CPU time (this thread) per second of audio: 1000 would
mean the stage alone uses one core in real time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.report import finish_cli, markdown_table
from realtime.resample import StreamResampler, float_to_int16
from realtime.vad import Segmenter
from realtime.windows import StreamSegmenter

DEFAULT_DATA = Path(os.environ.get("VED_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _load_emodb(seconds: float, data_dir: Path) -> tuple[np.ndarray, int]:
    """EmoDB clips at their native rate (22,050 Hz), joined with 0.5 s gaps: float32 [n]."""
    files = sorted((data_dir / "emodb" / "wav").glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no EmoDB clips under {data_dir / 'emodb' / 'wav'} (set VED_SHARED_DATA)")
    parts: list[np.ndarray] = []
    rate, total, i = 0, 0, 0
    while total < seconds * 22_050:
        audio, rate = sf.read(str(files[i % len(files)]), dtype="float32")
        gap = np.zeros(rate // 2, np.float32)
        parts += [audio, gap]
        total += len(audio) + len(gap)
        i += 1
    return np.concatenate(parts)[: int(seconds * rate)], rate


def _cpu_ms(fn) -> float:
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) * 1000.0


def run(seconds: float = 60.0, block_ms: int = 30, data_dir: Path = DEFAULT_DATA) -> dict:
    """Measure each stage on `seconds` of EmoDB audio fed in `block_ms` blocks.

    Returns {"audio_s", "block_ms", "rows": [{"stage", "cpu_ms", "ms_per_audio_s", "realtime_factor"}],
    "utterances"}.
    """
    audio, rate = _load_emodb(seconds, data_dir)
    in_block = max(1, rate * block_ms // 1000)
    blocks = [audio[i:i + in_block] for i in range(0, len(audio), in_block)]
    resampled: list[np.ndarray] = []

    def resample() -> None:
        stream = StreamResampler(rate)
        resampled.extend(float_to_int16(stream.push(b)) for b in blocks)
        resampled.append(float_to_int16(stream.flush()))

    utterances = [0]

    def vad() -> None:
        seg = Segmenter()
        events = [e for b in resampled for e in seg.push(b)] + seg.flush()
        utterances[0] = sum(type(e).__name__ == "Utterance" for e in events)

    def vad_and_windows() -> None:
        seg = StreamSegmenter()
        for b in resampled:
            seg.push(b)
        seg.flush()

    audio_s = len(audio) / rate
    rows = []
    for stage, fn in (("resample 22.05->16 kHz", resample), ("VAD segmenter", vad),
                      ("VAD + partial windows", vad_and_windows)):
        ms = _cpu_ms(fn)
        rows.append({"stage": stage, "cpu_ms": round(ms, 1), "ms_per_audio_s": round(ms / audio_s, 3),
                     "realtime_factor": round(ms / 1000.0 / audio_s, 5)})
    total = rows[0]["cpu_ms"] + rows[2]["cpu_ms"]
    rows.append({"stage": "front end total", "cpu_ms": round(total, 1),
                 "ms_per_audio_s": round(total / audio_s, 3), "realtime_factor": round(total / 1000.0 / audio_s, 5)})
    return {"audio_s": round(audio_s, 2), "block_ms": block_ms, "rows": rows, "utterances": utterances[0]}


def table(result: dict) -> str:
    """Markdown table of run()'s result."""
    rows = [(row["stage"], str(row["cpu_ms"]), str(row["ms_per_audio_s"]), str(row["realtime_factor"]))
            for row in result["rows"]]
    return (f"VAD/resampling cost on {result['audio_s']} s of EmoDB audio in {result['block_ms']} ms blocks "
            f"({result['utterances']} utterances found)\n\n"
            + markdown_table(("stage", "CPU ms", "CPU ms per s of audio", "real-time factor"), rows, align="lrrr"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of audio to process (default 60)")
    parser.add_argument("--block-ms", type=int, default=30, help="input block length in milliseconds (default 30)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.block_ms <= 0:
        print("error: --seconds and --block-ms must be positive", file=sys.stderr)
        return 2
    return finish_cli(lambda: run(args.seconds, args.block_ms), table, None, errors=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
