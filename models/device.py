"""The one place a torch device name is resolved (engine, bundles, training).

    resolve_device(None | "auto")   -> "cuda" when a CUDA GPU is available, else "cpu"
    resolve_device("cuda:1")        -> "cuda:1" (checked: CUDA present, a valid device string)

A CUDA device without CUDA, or a malformed name, raises `DeviceError` (a
ValueError) with one readable line.
"""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A torch device was asked for that this machine cannot provide (one-line message)."""


def resolve_device(device: str | None) -> str:
    """None or "auto" -> "cuda" when available else "cpu"; otherwise the checked name itself."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available; use device 'cpu'")
    try:
        torch.device(device)
    except RuntimeError as err:
        raise DeviceError(f"invalid device {device!r}: {err}") from None
    return device
