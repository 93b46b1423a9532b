"""Where training code runs: the one reading of a device setting, and the mixed precision used there."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """ "auto", "" or None: CUDA when a GPU is visible, else the CPU; anything else as torch reads it ("cuda:1")."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def bf16_autocast_supported(device: str | torch.device) -> bool:
    """True on a CUDA GPU that computes in bf16 natively (Ampere and later); older GPUs stay in float32."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    # including_emulation=False: pre-Ampere GPUs "support" bf16 only by slow emulation
    return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_for(device: str | torch.device):
    """bf16 autocast on a GPU that supports it; a no-op context elsewhere, where everything stays float32.

    Weights stay float32 (the optimiser updates them there), so no loss scaling is needed; fp16 autocast
    on older GPUs would need a GradScaler, so they run in float32 instead.
    """
    if bf16_autocast_supported(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
