"""Where training code runs: the one reading of a device setting, and the mixed precision used there."""
from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """"auto", "" or None: CUDA when a GPU is visible, else the CPU; anything else as torch reads it ("cuda:1")."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_for(device: str | torch.device):
    """bf16 autocast on a GPU; a no-op context on the CPU, where everything stays float32."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
