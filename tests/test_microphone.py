"""MicrophoneSource through a PulseAudio virtual microphone (null sink + remap source):
speech played into the sink arrives and is segmented; killing the sound server is
reported as device loss and the source resumes when it comes back.
Skips with the reason when pulseaudio/pactl/paplay are missing or the daemon won't start."""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest

from realtime.devices import DeviceError, list_input_devices, rescan_devices
from realtime.microphone import MicrophoneConfig, MicrophoneSource
from realtime.source import END_OF_STREAM
from realtime.types import Utterance
from realtime.windows import StreamSegmenter

DAEMON_ARGS = ["pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
               "--load=module-null-sink sink_name=vmic", "--load=module-always-sink"]


class VirtualMic:
    """A private PulseAudio daemon whose default source 'virtmic' records the sink 'vmic'."""

    def __init__(self) -> None:
        self.runtime_dir = tempfile.mkdtemp(prefix="ved-pulse-")
        os.chmod(self.runtime_dir, 0o700)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": self.runtime_dir}
        self.remap_module = ""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=20, check=check)

    def start_daemon(self) -> str:
        """Returns "" on success, else the reason."""
        result = self.run(*DAEMON_ARGS, check=False)
        if result.returncode != 0:
            return f"pulseaudio would not start: {result.stderr.strip()[-200:]}"
        self.load_remap()
        return ""

    def load_remap(self) -> None:
        self.remap_module = self.run("pactl", "load-module", "module-remap-source", "master=vmic.monitor",
                                     "source_name=virtmic").stdout.strip()
        self.run("pactl", "set-default-source", "virtmic")

    def kill_daemon(self) -> None:
        self.run("pulseaudio", "-k", check=False)
        for _ in range(50):   # wait until the server socket is gone
            if self.run("pactl", "info", check=False).returncode != 0:
                return
            time.sleep(0.1)

    def play(self, wav) -> subprocess.Popen:
        return subprocess.Popen(["paplay", "-d", "vmic", str(wav)], env=self.env)


@pytest.fixture(scope="module")
def virtual_mic():
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install pulseaudio pulseaudio-utils)")
    mic = VirtualMic()
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = mic.runtime_dir   # the ALSA pulse plugin in this process needs it
    try:
        reason = mic.start_daemon()
        if reason:
            pytest.skip(reason)
        try:
            rescan_devices()
            names = [d.name for d in list_input_devices()]
        except DeviceError as exc:
            pytest.skip(f"PortAudio unavailable: {exc}")
        if "pulse" not in names:
            pytest.skip(f"PortAudio shows no 'pulse' input (inputs: {names}); is libasound2-plugins installed?")
        yield mic
    finally:
        mic.kill_daemon()
        if previous is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous
        shutil.rmtree(mic.runtime_dir, ignore_errors=True)
        try:
            rescan_devices()
        except DeviceError:
            pass   # PortAudio missing: nothing to rescan


class Recorder:
    """Runs a MicrophoneSource and gathers its blocks and status reports."""

    def __init__(self, source: MicrophoneSource) -> None:
        self.source = source
        self.blocks: list = []
        self.statuses: list[tuple[float, str, str]] = []
        self.ended = False
        source.status_listener = lambda state, msg: self.statuses.append((time.monotonic(), state, msg))
        self.q: queue.Queue = queue.Queue(maxsize=500)
        source.start(self.q, threading.Event())

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                item = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is END_OF_STREAM:
                self.ended = True
                return
            self.blocks.append(item)

    def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.drain(0.1)
            if predicate():
                return True
        return False

    def states(self) -> list[str]:
        return [state for _, state, _ in self.statuses]


def test_unknown_device_lists_inputs(virtual_mic):
    with pytest.raises(DeviceError, match="no input device matches 'no-such-microphone'.*pulse"):
        MicrophoneSource("no-such-microphone")


def test_speech_played_into_virtual_mic_arrives_and_is_segmented(virtual_mic, espeak_wav):
    rec = Recorder(MicrophoneSource("pulse"))
    try:
        assert rec.wait_for(lambda: len(rec.blocks) > 3, 15.0), "no audio from the virtual microphone"
        skip = len(rec.blocks)
        player = virtual_mic.play(espeak_wav)
        rec.wait_for(lambda: player.poll() is not None, 15.0)
        rec.drain(1.5)
    finally:
        rec.source.stop()
        rec.source.stop()   # idempotent
    audio = np.concatenate([b.samples for b in rec.blocks[skip:]])
    assert audio.dtype == np.int16
    second = audio[: len(audio) // 16_000 * 16_000].reshape(-1, 16_000).astype(np.float64)
    loudest_rms = np.sqrt(np.mean(second ** 2, axis=1)).max()
    assert loudest_rms > 1_000, f"speech did not arrive (loudest 1 s RMS {loudest_rms:.0f})"
    starts = [b.start_s for b in rec.blocks]
    assert all(b > a for a, b in zip(starts, starts[1:]))
    seg = StreamSegmenter()
    events = [e for block in rec.blocks for e in seg.push(block)] + seg.flush()
    found = [e for e in events if isinstance(e, Utterance)]
    assert len(found) == 1 and 2.0 < found[0].end_s - found[0].start_s < 4.5
    assert "device-lost" not in rec.states()


def test_device_loss_is_reported_and_source_resumes(virtual_mic, espeak_wav):
    cfg = MicrophoneConfig(reconnect_initial_s=0.25, reconnect_max_s=1.0, stall_timeout_s=1.5)
    rec = Recorder(MicrophoneSource("pulse", cfg=cfg))
    try:
        assert rec.wait_for(lambda: len(rec.blocks) > 3, 15.0), "no audio from the virtual microphone"
        # Unloading the remap source: PulseAudio >= 16 moves ("rescues") the recording stream
        # to another source, so audio keeps flowing; older servers kill it (device lost).
        virtual_mic.run("pactl", "unload-module", virtual_mic.remap_module)
        count = len(rec.blocks)
        rec.drain(2.5)
        assert len(rec.blocks) > count + 20 or "device-lost" in rec.states()
        virtual_mic.load_remap()
        # Killing the server makes the device vanish for sure.
        lost_wall = time.monotonic()
        virtual_mic.kill_daemon()
        assert rec.wait_for(lambda: "device-lost" in rec.states(), 10.0), f"no device-lost: {rec.statuses}"
        clock_at_loss = rec.blocks[-1].start_s
        time.sleep(1.0)
        assert virtual_mic.start_daemon() == ""
        assert rec.wait_for(lambda: "running" in rec.states(), 20.0), f"did not resume: {rec.statuses}"
        resumed_at = len(rec.blocks)
        assert rec.wait_for(lambda: len(rec.blocks) > resumed_at + 5, 15.0), "no audio after resuming"
        gap_wall = time.monotonic() - lost_wall
        player = virtual_mic.play(espeak_wav)
        rec.wait_for(lambda: player.poll() is not None, 15.0)
        rec.drain(1.0)
    finally:
        rec.source.stop()
    assert not rec.ended or rec.source.reconnects >= 1
    states = rec.states()
    assert states.index("device-lost") < states.index("running")
    assert rec.source.reconnects >= 1
    starts = [b.start_s for b in rec.blocks]
    assert all(b > a for a, b in zip(starts, starts[1:])), "sample clock went backwards"
    first_after = rec.blocks[resumed_at].start_s
    assert first_after - clock_at_loss > 0.5            # the clock skipped the silent gap...
    assert first_after - clock_at_loss < gap_wall + 1.0  # ...by about the wall time lost
    after = np.concatenate([b.samples for b in rec.blocks[resumed_at:]]).astype(np.float64)
    assert np.abs(after).max() > 5_000, "speech played after resuming did not arrive"


# ---------------------------------------------------------------- without a sound server
class FakePortAudio:
    """Stands in for the sounddevice module: a 48 kHz stereo 'device' that plays a 440 Hz
    tone from a thread, can be unplugged (stream finishes) and refuse to reopen."""

    class PortAudioError(Exception):
        pass

    def __init__(self) -> None:
        self.available = True
        self.streams: list = []

    def check_input_settings(self, device, channels, samplerate, dtype):
        if not self.available:
            raise self.PortAudioError("Device unavailable [PaErrorCode -9985]")

    def InputStream(self, **kwargs):   # noqa: N802 (mirrors sounddevice's API)
        stream = FakeStream(self, **kwargs)
        self.streams.append(stream)
        return stream


class FakeStatus:
    input_overflow = False


class FakeStream:
    def __init__(self, fake: FakePortAudio, samplerate, channels, blocksize, callback, finished_callback, **_):
        self.fake, self.rate, self.channels, self.blocksize = fake, samplerate, channels, blocksize
        self.callback, self.finished_callback = callback, finished_callback
        self.active = False
        self._quit = threading.Event()
        self._frames = 0

    def start(self):
        self.active = True
        threading.Thread(target=self._play, daemon=True).start()

    def _play(self):
        while not self._quit.wait(self.blocksize / self.rate):
            t = (self._frames + np.arange(self.blocksize)) / self.rate
            tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            self._frames += self.blocksize
            self.callback(np.repeat(tone[:, None], self.channels, axis=1), self.blocksize, None, FakeStatus())

    def unplug(self):
        self._quit.set()
        self.active = False
        self.finished_callback()

    def abort(self):
        self._quit.set()
        self.active = False

    def close(self):
        self._quit.set()


@pytest.fixture
def fake_portaudio(monkeypatch):
    import realtime.microphone as microphone
    from realtime.devices import InputDevice

    fake = FakePortAudio()
    device = InputDevice(2, "Fake USB Mic", 2, 48_000.0, True, "ALSA")
    monkeypatch.setattr(microphone, "_sounddevice", lambda: fake)
    monkeypatch.setattr(microphone, "rescan_devices", lambda: None)
    monkeypatch.setattr(microphone, "resolve_input_device", lambda spec, devices=None: device)
    return fake


class ShiftedClock:
    """Replaces realtime.microphone's `time`: real monotonic time plus an offset the test moves,
    so the clock skip after a reconnect is checked against a known jump, not the machine's speed."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset_s


def test_fake_device_loss_backoff_and_clock(fake_portaudio, monkeypatch):
    import realtime.microphone as microphone

    clock = ShiftedClock()
    monkeypatch.setattr(microphone, "time", clock)
    cfg = MicrophoneConfig(reconnect_initial_s=0.1, reconnect_max_s=0.4)
    rec = Recorder(MicrophoneSource("fake", cfg=cfg))
    jump_s = 20.0
    try:
        assert rec.wait_for(lambda: sum(len(b.samples) for b in rec.blocks) >= 16_000, 5.0)
        first_stream = fake_portaudio.streams[0]
        assert (first_stream.rate, first_stream.channels) == (48_000.0, 2)
        fake_portaudio.available = False
        unplugged_wall = time.monotonic()
        first_stream.unplug()
        assert rec.wait_for(lambda: rec.states().count("reconnecting") >= 3, 5.0), rec.statuses
        clock_at_loss = rec.blocks[-1].start_s + len(rec.blocks[-1].samples) / 16_000
        clock.offset_s += jump_s           # the device stays away for 20 s more (as the source sees it)
        fake_portaudio.available = True
        assert rec.wait_for(lambda: "running" in rec.states(), 5.0), rec.statuses
        resumed_wall = next(t for t, state, _ in rec.statuses if state == "running")
        resumed_at = len(rec.blocks)
        assert rec.wait_for(lambda: len(rec.blocks) > resumed_at + 10, 5.0)
    finally:
        rec.source.stop()
        rec.source.stop()
    rec.drain(0.5)
    assert rec.ended, "END_OF_STREAM after stop()"
    delays = [float(msg.split(" in ")[1].split(" s")[0]) for _, state, msg in rec.statuses if state == "reconnecting"]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4][:len(delays[:4])]          # doubling, capped
    # The sample clock skips the time without audio: the 20 s jump plus the real outage, which
    # lies between the unplug (less one 30 ms callback) and the "running" report.
    gap = rec.blocks[resumed_at].start_s - clock_at_loss
    assert jump_s < gap <= jump_s + (resumed_wall - unplugged_wall) + 0.1, gap
    audio = np.concatenate([b.samples for b in rec.blocks[resumed_at:]]).astype(np.float32) / 32768
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 16_000 / len(audio) - 440) < 5      # resampled 48k stereo -> 16k mono
    assert rec.source.reconnects == 1 and rec.source.dropped_blocks == 0


def test_fake_device_gives_up_when_configured(fake_portaudio):
    fake_portaudio.available = False
    cfg = MicrophoneConfig(reconnect_initial_s=0.05, reconnect_max_s=0.1, give_up_after_s=0.3)
    rec = Recorder(MicrophoneSource("fake", cfg=cfg))
    assert rec.wait_for(lambda: rec.ended, 5.0)
    assert rec.states()[0] == "device-lost" and rec.states()[-1] == "error"
    busy = rec.statuses[0][2]      # a busy device: PortAudio's reason, per rate/channel tried, one line
    assert busy.startswith("cannot open Fake USB Mic: 48000 Hz x2: Device unavailable") and "\n" not in busy
    assert "gave up reconnecting to Fake USB Mic" in rec.statuses[-1][2]
    rec.source.stop()
