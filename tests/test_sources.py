"""FileSource: streaming, pacing, nothing lost in fast mode, bad files; device listing helpers."""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import sine
from realtime.devices import DeviceError, InputDevice, format_device_table, resolve_input_device
from realtime.source import END_OF_STREAM
from realtime.sources import AudioFileError, FileSource, FileSourceConfig

RATE = 16_000


def collect(source: FileSource, maxsize: int = 1_000, consumer_delay_s: float = 0.0):
    """Run the source to the end; returns (blocks, wall seconds)."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    t0 = time.monotonic()
    source.start(q, stop)
    blocks = []
    while True:
        item = q.get(timeout=20)
        if item is END_OF_STREAM:
            break
        blocks.append(item)
        if consumer_delay_s:
            time.sleep(consumer_delay_s)
    wall = time.monotonic() - t0
    source.stop()
    return blocks, wall


def peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * RATE / len(audio))


def write(path: Path, audio: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


def test_fast_replay_loses_nothing_with_slow_consumer(tmp_path):
    path = write(tmp_path / "a.wav", sine(440.0, 3.0, 22_050), 22_050)
    blocks, _ = collect(FileSource(path, pace="fast", block_ms=50), maxsize=2, consumer_delay_s=0.002)
    total = sum(len(b.samples) for b in blocks)
    assert abs(total - 3 * RATE) <= 2
    starts = np.array([b.start_s for b in blocks])
    lengths = np.array([len(b.samples) for b in blocks])
    np.testing.assert_allclose(starts[1:], np.cumsum(lengths)[:-1] / RATE)   # contiguous clock
    assert all(b.samples.dtype == np.int16 for b in blocks)
    audio = np.concatenate([b.samples for b in blocks]).astype(np.float32) / 32768
    assert abs(peak_hz(audio) - 440.0) < 2.0


class VirtualClock:
    """Injected into FileSource: time passes only when the reader waits (plus `oversleep_s` per
    wait, like a busy machine), so pacing is checked exactly and without wall-clock waits."""

    def __init__(self, oversleep_s: float = 0.0, on_wait=None) -> None:
        self.now, self.oversleep_s, self.on_wait, self.waits = 1000.0, oversleep_s, on_wait, []

    def __call__(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds + self.oversleep_s
        if self.on_wait is not None:
            self.on_wait(len(self.waits))
        return event.is_set()


class StampingQueue(queue.Queue):
    """Records the virtual time of each put and keeps every item put (a retry after dropping
    the oldest puts the same item again)."""

    def __init__(self, clock: VirtualClock, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.clock, self.put_times, self.items_put = clock, [], []

    def put(self, item, block=True, timeout=None):
        self.put_times.append(self.clock.now)
        self.items_put.append(item)
        super().put(item, block, timeout)


def run_virtual(source: FileSource, clock: VirtualClock, maxsize: int = 1_000) -> tuple[list, StampingQueue]:
    """Run the reader to its end (no consumer while it runs); returns (items, queue)."""
    q = StampingQueue(clock, maxsize)
    source.start(q, threading.Event())
    source._thread.join(10)
    assert source.finished, "the reader must never block on a full queue in real-time mode"
    return [q.get_nowait() for _ in range(q.qsize())], q


def test_realtime_pacing_releases_each_block_when_its_audio_would_have_been_recorded(tmp_path):
    path = write(tmp_path / "b.flac", sine(300.0, 3.0, 44_100), 44_100)
    clock = VirtualClock()
    source = FileSource(path, pace="realtime", block_ms=100, clock=clock, wait=clock.wait)
    items, q = run_virtual(source, clock)
    blocks = items[:-1]
    assert items[-1] is END_OF_STREAM and source.dropped_blocks == 0
    assert abs(sum(len(b.samples) for b in blocks) - 3 * RATE) <= 2
    for block, put_at in zip(blocks, q.put_times):
        assert put_at == pytest.approx(1000.0 + block.start_s + len(block.samples) / RATE, abs=1e-9)
    assert clock.now == pytest.approx(1003.0, abs=1e-6) and len(clock.waits) >= 29


def test_realtime_pacing_does_not_accumulate_sleep_jitter(tmp_path):
    """Each wait oversleeps 7 ms: the deadlines are measured from the start, so the replay still
    ends one oversleep after 3.0 s, not 30 x 7 ms late."""
    path = write(tmp_path / "j.wav", sine(300.0, 3.0, 16_000), 16_000)
    clock = VirtualClock(oversleep_s=0.007)
    source = FileSource(path, pace="realtime", block_ms=100, clock=clock, wait=clock.wait)
    items, q = run_virtual(source, clock)
    assert items[-1] is END_OF_STREAM
    assert q.put_times[-2] == pytest.approx(1003.0 + 0.007, abs=1e-6)


def test_realtime_drops_oldest_when_consumer_stalls(tmp_path):
    path = write(tmp_path / "c.wav", sine(300.0, 1.0, 16_000), 16_000)
    clock = VirtualClock()
    source = FileSource(path, pace="realtime", block_ms=20, clock=clock, wait=clock.wait)
    items, q = run_virtual(source, clock, maxsize=3)   # nobody reads: the source must not block
    assert len(items) == 3 and items[-1] is END_OF_STREAM
    offered = len({id(item) for item in q.items_put})
    assert offered == 51 and source.dropped_blocks == offered - 3       # 50 blocks of 20 ms + END_OF_STREAM
    assert items[-2].start_s == pytest.approx(1.0 - len(items[-2].samples) / RATE)   # the newest are kept
    source.stop()


def _statuses(source: FileSource) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    source.status_listener = lambda state, message: found.append((state, message))
    return found


def test_flac_that_loses_sync_mid_file_is_reported_as_cut_short(tmp_path):
    path = write(tmp_path / "sync.flac", sine(300.0, 6.0, 16_000, 0.3), 16_000)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4_000] = bytes(4_000)
    path.write_bytes(bytes(raw))
    source = FileSource(path, pace="fast")
    statuses = _statuses(source)
    blocks, _ = collect(source)
    played_s = sum(len(b.samples) for b in blocks) / RATE
    assert 1.0 < played_s < 5.0
    assert "sync.flac could only be read up to" in source.cut_short and "of 6.0 s (decoding failed" in source.cut_short
    assert statuses == [("warning", f"{source.cut_short}; the session ends here")]


def test_file_that_shrinks_while_playing_is_reported_as_cut_short(tmp_path):
    path = write(tmp_path / "shrinks.wav", sine(300.0, 3.0, 16_000), 16_000)
    keep = 44 + 2 * 16_000                       # header + 1.0 s of 16-bit mono

    def shrink(waits: int) -> None:
        if waits == 2:                           # 0.2 s into the replay, another program cuts the file
            with open(path, "r+b") as handle:
                handle.truncate(keep)

    clock = VirtualClock(on_wait=shrink)
    source = FileSource(path, pace="realtime", block_ms=100, clock=clock, wait=clock.wait)
    statuses = _statuses(source)
    items, _ = run_virtual(source, clock)
    played_s = sum(len(b.samples) for b in items[:-1]) / RATE
    assert 0.9 <= played_s <= 1.3
    assert source.cut_short.startswith("shrinks.wav could only be read up to") and "of 3.0 s" in source.cut_short
    assert "shrink while playing" in source.cut_short
    assert [state for state, _ in statuses] == ["warning"]
    whole = FileSource(write(tmp_path / "whole.wav", sine(300.0, 1.0, 16_000), 16_000), pace="fast")
    collect(whole)
    assert whole.cut_short == ""


@pytest.mark.parametrize("rate_hz,channels", [(8_000, 1), (96_000, 1), (48_000, 6), (44_100, 2)])
def test_rates_and_channels(tmp_path, rate_hz, channels):
    tone = sine(1_000.0, 1.0, rate_hz, 0.3)
    audio = np.repeat(tone[:, None], channels, axis=1) if channels > 1 else tone
    path = write(tmp_path / f"t{rate_hz}_{channels}.wav", audio, rate_hz)
    source = FileSource(path, pace="fast")
    assert source.info.channels == channels and source.info.sample_rate_hz == rate_hz
    blocks, _ = collect(source)
    out = np.concatenate([b.samples for b in blocks]).astype(np.float32) / 32768
    assert abs(len(out) - RATE) <= 2
    assert abs(peak_hz(out) - 1_000.0) < 2.0
    assert abs(np.abs(out[200:-200]).max() - 0.3) < 0.01


def test_ogg_vorbis_plays(tmp_path):
    path = tmp_path / "v.ogg"
    sf.write(str(path), sine(500.0, 1.0, 48_000, 0.3), 48_000, format="OGG", subtype="VORBIS")
    blocks, _ = collect(FileSource(path, pace="fast"))
    out = np.concatenate([b.samples for b in blocks]).astype(np.float32) / 32768
    assert abs(len(out) - RATE) <= 400 and abs(peak_hz(out) - 500.0) < 3.0


def test_nan_samples_in_float_wav_are_zeroed_and_counted(tmp_path):
    audio = sine(440.0, 1.0, 16_000, 0.5)
    audio[1_000:1_100] = np.nan
    audio[2_000] = np.inf
    path = write(tmp_path / "nan.wav", audio, 16_000, subtype="FLOAT")
    source = FileSource(path, pace="fast")
    blocks, _ = collect(source)
    out = np.concatenate([b.samples for b in blocks])
    assert source.nonfinite_samples == 101
    assert len(out) == RATE and np.all(out[1_000:1_100] == 0)
    assert source.warning == "101 NaN/inf samples were replaced by silence"


def test_truncated_wav_plays_what_is_there(tmp_path):
    full = write(tmp_path / "full.wav", sine(440.0, 2.0, 22_050), 22_050)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + (len(data) - 44) // 2])   # header still claims 2.0 s
    source = FileSource(cut, pace="fast")
    warnings = []
    source.status_listener = lambda state, message: warnings.append((state, message))
    blocks, _ = collect(source)
    total = sum(len(b.samples) for b in blocks)
    assert abs(total - RATE) <= 20 and source.cut_short == ""
    assert source.info.truncated and source.info.declared_frames == 2 * 22_050
    assert warnings == [("warning", "cut.wav: the file ends after 1.0 s of the 2.0 s its header declares "
                                    "(truncated?)")]
    intact = FileSource(full, pace="fast")
    collect(intact)
    assert not intact.info.truncated and intact.warning == ""


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"this is a text file, not audio\n" * 20, "cannot read"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot read"),
])
def test_bad_files_raise_one_line_audio_file_error(tmp_path, content, needle):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as info:
        FileSource(path)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_header_only_and_missing_files(tmp_path):
    full = write(tmp_path / "x.wav", np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioFileError, match="no audio"):
        FileSource(full)
    with pytest.raises(AudioFileError, match="not found"):
        FileSource(tmp_path / "missing.wav")
    with pytest.raises(AudioFileError, match="not a regular file"):
        FileSource(tmp_path)
    assert issubclass(AudioFileError, ValueError)


def test_stop_is_idempotent_and_ends_a_blocked_fast_reader(tmp_path):
    path = write(tmp_path / "long.wav", sine(200.0, 20.0, 16_000), 16_000)
    source = FileSource(path, pace="fast", block_ms=100)
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    source.start(q, stop)
    time.sleep(0.3)
    assert q.full() and not source.finished
    source.stop(timeout_s=2.0)
    source.stop(timeout_s=2.0)
    assert source.finished
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert items[-1] is END_OF_STREAM


def test_file_source_config_validation(tmp_path):
    with pytest.raises(ValueError, match="pace"):
        FileSourceConfig(pace="slow")
    with pytest.raises(ValueError, match="block_ms"):
        FileSourceConfig(block_ms=0)


DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 48_000.0, False, "ALSA"),
    InputDevice(3, "USB Audio Device: Mic (hw:2,0)", 1, 44_100.0, False, "ALSA"),
    InputDevice(5, "pulse", 32, 44_100.0, False, "ALSA"),
    InputDevice(6, "default", 32, 44_100.0, True, "ALSA"),
]


def test_resolve_device_by_index_name_and_default():
    assert resolve_input_device(3, DEVICES).name.startswith("USB")
    assert resolve_input_device("3", DEVICES).index == 3
    assert resolve_input_device("usb audio", DEVICES).index == 3
    assert resolve_input_device("PULSE", DEVICES).index == 5
    assert resolve_input_device(None, DEVICES).index == 6


@pytest.mark.parametrize("spec,needle", [(7, "no input device with index 7"), ("webcam", "no input device matches"),
                                         ("hw:", "matches several")])
def test_resolve_device_errors_list_the_inputs(spec, needle):
    with pytest.raises(DeviceError) as info:
        resolve_input_device(spec, DEVICES)
    assert needle in str(info.value) and "\n" not in str(info.value)
    if needle != "matches several":
        assert "3: USB Audio Device" in str(info.value) and "5: pulse" in str(info.value)


def test_no_input_devices_message_and_table():
    with pytest.raises(DeviceError, match="no audio input devices"):
        resolve_input_device(None, [])
    assert "no audio input devices" in format_device_table([])
    table = format_device_table(DEVICES).splitlines()
    default_row = next(line for line in table if "default" in line and line.startswith("*"))
    assert "6" in default_row and "44100" in default_row
    assert any("USB Audio Device" in line and " 1 " in line and "44100" in line for line in table)
