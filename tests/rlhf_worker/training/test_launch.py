"""The parent side of a multi-process run: a hung rank is killed after the grace period, a failing rank fails
the run with its output, and in both cases no training process is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlhf_worker.training.launch import EVENTS_FILE, TrainingProcessesFailed, rank_pids, run_training
from rlhf_worker.training.checkpoint import find_checkpoint
from rlhf_worker.training.reward import RewardConfig
from rlhf_worker.training.reward_model import save_tiny_backbone
from rlhf_worker.training.synthetic import synthetic_rankings

pytestmark = pytest.mark.slow  # torchrun and two fresh interpreters per run


def processes_of(run_dir: Path) -> list[int]:
    """Pids of live (not zombie) processes whose command line names `run_dir`: torchrun and its ranks."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if str(run_dir) in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def reward_cfg(backbone: str, **overrides) -> RewardConfig:
    values = dict(
        backbone=backbone,
        learning_rate=1e-3,
        epochs=1000,
        batch_size=4,
        max_length=48,
        eval_fraction=0.0,
        save_every=0,
        device="cpu",
    )
    values.update(overrides)
    return RewardConfig(**values)


def test_a_hung_rank_is_killed_after_the_grace_period_and_nothing_is_left_running(tmp_path):
    backbone = save_tiny_backbone(tmp_path / "tiny-bert", "bert", seed=0)
    rankings = synthetic_rankings(8, 3, seed=1, max_words=8)
    run_dir = tmp_path / "run"
    steps = []

    def on_progress(step, total, metrics, samples):
        steps.append(step)
        if len(steps) == 1:  # training runs: freeze rank 1, as a rank stuck in a collective would be
            pids = rank_pids(run_dir)
            assert len(pids) == 2
            os.kill(pids[1], signal.SIGSTOP)

    started = time.monotonic()
    with pytest.raises(TrainingProcessesFailed, match="stopped by force after a cancel"):
        run_training(
            "reward",
            reward_cfg(backbone),
            {"rankings": rankings, "out_dir": tmp_path / "out"},
            num_processes=2,
            run_dir=run_dir,
            on_progress=on_progress,
            should_stop=lambda: bool(steps),
            stop_grace_s=3.0,
        )
    assert steps and time.monotonic() - started < 120
    assert processes_of(run_dir) == [], "a training process outlived the forced stop"


def test_a_failing_rank_fails_the_run_with_its_output(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingProcessesFailed, match=r"training in 2 processes failed: \w+Error: .*no-such-backbone"):
        run_training(
            "reward",
            reward_cfg(str(tmp_path / "no-such-backbone")),
            {"rankings": synthetic_rankings(4, 2, seed=1), "out_dir": tmp_path / "out"},
            num_processes=2,
            run_dir=run_dir,
        )
    assert processes_of(run_dir) == []


def test_ranks_stop_and_checkpoint_when_the_process_that_started_them_dies(tmp_path):
    """A worker killed mid-job (OOM killer, kill -9) leaves no training behind: rank 0 notices its parent is gone,
    every rank stops at the same step and the checkpoint is written (a new job can resume from it)."""
    backbone = save_tiny_backbone(tmp_path / "tiny-bert", "bert", seed=0)
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        from rlhf_worker.training.launch import run_training
        from rlhf_worker.training.reward import RewardConfig
        from rlhf_worker.training.synthetic import synthetic_rankings

        cfg = RewardConfig(backbone={str(backbone)!r}, epochs=1000, batch_size=4, max_length=48, eval_fraction=0.0,
                           save_every=0, device="cpu")
        run_training("reward", cfg, {{"rankings": synthetic_rankings(8, 3, seed=1, max_words=8), "out_dir": {str(out_dir)!r}}},
                     num_processes=2, run_dir={str(run_dir)!r})
    """),
        ],
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / EVENTS_FILE).is_file() or not (run_dir / EVENTS_FILE).read_text().strip():
            assert parent.poll() is None and time.monotonic() < deadline, "the run never reported a step"
            time.sleep(0.2)
        assert len(set(processes_of(run_dir)) - {parent.pid}) == 3  # torchrun and its two ranks
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 90
    while processes_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_of(run_dir) == [], "training went on after the process that started it died"
    assert find_checkpoint(out_dir) is not None
