"""Audio input devices: listing, choosing by index or name, rescanning.

sounddevice is imported lazily (importing it initialises PortAudio), so the GUI can
import this module for free. PortAudio enumerates devices once at initialisation;
`rescan_devices()` re-initialises it to see devices that appeared later (a USB mic
plugged in, a PulseAudio source loaded) and must only be called while no stream is open.
"""
from __future__ import annotations

from dataclasses import dataclass


class DeviceError(ValueError):
    """No usable input device; the message is one line meant for the user."""


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio device with at least one input channel."""

    index: int
    name: str
    max_input_channels: int
    default_samplerate_hz: float
    is_default: bool
    host_api: str = ""


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:   # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(f"audio input unavailable: {exc} (install libportaudio2)") from exc
    return sounddevice


def rescan_devices() -> None:
    """Re-initialise PortAudio so devices added or removed since start-up are seen."""
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()


def list_input_devices() -> list[InputDevice]:
    """All devices with input channels, in PortAudio index order."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot query audio devices: {exc}") from exc
    if default_in is None or default_in < 0:
        try:
            default_in = sd.query_devices(kind="input")["index"]
        except sd.PortAudioError:
            default_in = -1
    result = []
    for info in devices:
        if info["max_input_channels"] <= 0:
            continue
        result.append(InputDevice(
            index=int(info["index"]), name=str(info["name"]),
            max_input_channels=int(info["max_input_channels"]),
            default_samplerate_hz=float(info["default_samplerate"]),
            is_default=int(info["index"]) == default_in,
            host_api=str(host_apis[info["hostapi"]]["name"])))
    return result


NO_INPUT_MESSAGE = ("no audio input devices found (connect a microphone; on Linux check that "
                    "PulseAudio/PipeWire or ALSA sees it, e.g. `arecord -l`)")


def format_device_table(devices: list[InputDevice] | None = None) -> str:
    """Human table for `python main.py --list-devices`; '*' marks the default input."""
    devices = list_input_devices() if devices is None else devices
    if not devices:
        return NO_INPUT_MESSAGE
    width = max(len("name"), *(len(d.name) for d in devices))
    lines = [f"  {'index':>5}  {'name':<{width}}  {'inputs':>6}  {'default rate (Hz)':>17}  host API",
             f"  {'-' * 5}  {'-' * width}  {'-' * 6}  {'-' * 17}  {'-' * 8}"]
    for d in devices:
        mark = "*" if d.is_default else " "
        lines.append(f"{mark} {d.index:>5}  {d.name:<{width}}  {d.max_input_channels:>6}  "
                     f"{d.default_samplerate_hz:>17.0f}  {d.host_api}")
    lines.append("* = default input. Choose with --device INDEX or a part of the name.")
    return "\n".join(lines)


def _short_list(devices: list[InputDevice]) -> str:
    return "; ".join(f"{d.index}: {d.name}" for d in devices)


def resolve_input_device(device: int | str | None,
                         devices: list[InputDevice] | None = None) -> InputDevice:
    """Pick an input device by index, case-insensitive name substring, or None (default).

    A string of digits is an index. Raises DeviceError (listing the inputs) when nothing
    matches or a name matches several devices without an exact match.
    """
    devices = list_input_devices() if devices is None else devices
    if not devices:
        raise DeviceError(NO_INPUT_MESSAGE)
    if device is None or (isinstance(device, str) and not device.strip()):
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        index = int(device)
        for d in devices:
            if d.index == index:
                return d
        raise DeviceError(f"no input device with index {index}; inputs are: {_short_list(devices)}")
    wanted = device.strip().lower()
    exact = [d for d in devices if d.name.lower() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in devices if wanted in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"no input device matches {device!r}; inputs are: {_short_list(devices)}")
    raise DeviceError(f"{device!r} matches several input devices ({_short_list(matches)}); "
                      "give an index or a longer name")
