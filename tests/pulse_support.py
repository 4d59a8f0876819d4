"""A private PulseAudio daemon with a virtual microphone, for end-to-end tests (not a test module).

Same recipe as tests/test_microphone.py and /work/shared/notes/testing-audio-and-gui.md:
a null sink 'vmic' whose monitor is remapped to the source 'virtmic' (the default source),
so `paplay -d vmic speech.wav` is what PortAudio's 'pulse' device records. The daemon
lives in its own XDG_RUNTIME_DIR, so it never touches a user's sound server.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DAEMON_ARGS = ["pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix",
               "--load=module-null-sink sink_name=vmic", "--load=module-always-sink"]
TOOLS = ("pulseaudio", "pactl", "paplay")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class VirtualMic:
    """start() -> "" on success or the reason it could not be created; stop() is idempotent.

    env: the environment a child process needs to reach this daemon (XDG_RUNTIME_DIR and
    PULSE_SERVER pointing at its socket).
    """

    def __init__(self) -> None:
        self.runtime_dir = tempfile.mkdtemp(prefix="ved-pulse-")
        os.chmod(self.runtime_dir, 0o700)
        socket = Path(self.runtime_dir) / "pulse" / "native"
        self.env = {**os.environ, "XDG_RUNTIME_DIR": self.runtime_dir, "PULSE_SERVER": f"unix:{socket}"}
        self.started = False

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=20, check=check)

    def start(self) -> str:
        missing = missing_tools()
        if missing:
            return f"{', '.join(missing)} not installed (apt-get install pulseaudio pulseaudio-utils)"
        env = {k: v for k, v in self.env.items() if k != "PULSE_SERVER"}   # the daemon makes the socket
        result = subprocess.run(DAEMON_ARGS, env=env, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            return f"pulseaudio would not start: {result.stderr.strip()[-200:]}"
        self.started = True
        remap = self.run("pactl", "load-module", "module-remap-source", "master=vmic.monitor",
                         "source_name=virtmic", check=False)
        if remap.returncode != 0:
            return f"cannot create the virtual source: {remap.stderr.strip()[-200:]}"
        self.run("pactl", "set-default-source", "virtmic", check=False)
        return ""

    def play(self, wav: str | os.PathLike, timeout_s: float = 60.0) -> None:
        """Play a file into the sink and wait until it has been played."""
        subprocess.run(["paplay", "-d", "vmic", str(wav)], env=self.env, capture_output=True, text=True,
                       timeout=timeout_s, check=True)

    def stop(self) -> None:
        if self.started:
            self.run("pulseaudio", "-k", check=False)
            for _ in range(50):   # wait until the server socket is gone
                if self.run("pactl", "info", check=False).returncode != 0:
                    break
                time.sleep(0.1)
            self.started = False
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
