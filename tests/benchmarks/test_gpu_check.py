"""benchmarks/gpu_check.sh: its --tiny mode runs every stage's code path on the CPU and fails loudly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
STAGES = ("reward", "sft", "ppo", "generation")


@pytest.mark.slow
def test_tiny_run_passes_every_stage_and_prints_throughput_and_memory():
    run = subprocess.run([str(SCRIPT), "--tiny"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = {line.split()[1]: line for line in run.stdout.splitlines() if line.startswith("[ok]")}
    assert set(lines) == set(STAGES), run.stdout
    for unit in ("comparisons/s", "examples/s", "episodes/s", "tokens/s"):
        assert any(unit in line for line in lines.values()), unit
    assert all("peak RSS" in line for line in lines.values())
    assert "same samples with batch 3 and 8" in lines["generation"]
    assert "all stages passed" in run.stdout


@pytest.mark.slow
def test_a_failing_stage_fails_the_run_and_the_others_still_report():
    run = subprocess.run(
        [str(SCRIPT), "--tiny", "--stages", "nonsense,sft", "--steps", "1", "--set", "max_seq_len=64"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "[FAIL] nonsense" in run.stdout and "unknown stage 'nonsense'" in run.stderr
    assert "[ok]   sft" in run.stdout and "max_seq_len=64" in run.stdout
    assert "FAILED: nonsense" in run.stdout


def test_without_cuda_the_real_run_refuses_with_a_hint():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real run would start")
    run = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "CUDA is not available" in run.stdout and "--tiny" in run.stdout


def test_a_setting_no_training_config_has_is_refused_before_anything_runs():
    run = subprocess.run(
        [str(SCRIPT), "--tiny", "--set", "no_such_setting=1"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode != 0
    assert "--set no_such_setting: no reward, SFT or PPO setting has that name" in run.stderr
    assert "[ok]" not in run.stdout
