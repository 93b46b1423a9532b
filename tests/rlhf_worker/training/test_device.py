"""Mixed precision per device: bf16 autocast only on a GPU with native bf16, float32 everywhere else."""

import contextlib

import pytest
import torch

from rlhf_worker.training import device as device_module


def test_cpu_stays_float32():
    assert not device_module.bf16_autocast_supported("cpu")
    assert isinstance(device_module.autocast_for("cpu"), contextlib.nullcontext)


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # a CPU-only torch builds the context but disables it
def test_cuda_autocasts_to_bf16_only_where_the_gpu_has_it(monkeypatch):
    asked = []

    def native(including_emulation=True):
        asked.append(including_emulation)
        return native.answer

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", native)
    native.answer = True
    context = device_module.autocast_for("cuda:0")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    native.answer = False  # e.g. a V100 or T4: bf16 only by emulation
    assert isinstance(device_module.autocast_for("cuda"), contextlib.nullcontext)
    assert asked == [False, False], "emulated bf16 must not count"
