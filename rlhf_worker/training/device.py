"""Where training code runs: the one reading of a device setting, and the mixed precision used there."""

from __future__ import annotations

import contextlib
import re

import torch


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (N the GPU's number, e.g. cuda:0)"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


def device_problem(value: object) -> str | None:
    """Why a job's `device` setting is not one this code can run on, or None. Checked when a job is started,
    so that a typo is refused beside the field instead of failing the job in the worker."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        return f"must be {DEVICE_CHOICES}, got {value!r}"
    return None


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
