"""Running a training function in N processes: the parent side (start torchrun, relay progress, cancel) and the
entry point every rank runs (`python -m rlhf_worker.training.launch <run folder>`).

One process (`num_processes=1`) calls the training function in the caller's process, exactly as before.
With N > 1 the caller's process (the Celery task) writes `spec.json` (the config and the data as JSON) into a run
folder and starts `python -m torch.distributed.run --standalone --nproc_per_node N -m rlhf_worker.training.launch
<folder>`. Every rank reads the spec, joins the process group (`distributed.init_from_env`) and trains on its
shard of each batch. Rank 0 appends each progress report as a JSON line to `events.jsonl` and writes the result
to `result.json`; the parent reads the lines and hands them to its own `on_progress` (the runner's
`JobContext.report`), so the database is written from one place, the parent, and no rank imports Django.

Cancel: the parent asks its `should_stop` (the job row) and, when told to stop, creates the file `stop`; rank 0
sees it at its next step and every rank stops at that same step (`Dist.stop_check`), so the run still writes
its checkpoint (reward, SFT and PPO alike; a new job resumes from it, in any number of processes). Ranks that do
not exit within `stop_grace_s` get SIGTERM (torchrun passes it on to every rank), then SIGKILL, each rank by the
pid it wrote to `rank-<r>.pid`. Rank 0 also stops when the parent process is gone, so a killed worker leaves no
training behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .callbacks import ProgressFn, StopFn

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
STOP_FILE = "stop"
OUTPUT_LOG = "output.log"
KINDS = ("reward", "sft", "ppo")


class TrainingProcessesFailed(RuntimeError):
    """The N training processes ended without a result; the message carries the end of their output."""


# ------------------------------------------------------------------------------------------ per kind: call and (de)serialise


def _result_class(kind: str):
    if kind == "reward":
        from .reward import RewardTrainResult

        return RewardTrainResult
    if kind == "sft":
        from .sft import SFTResult

        return SFTResult
    from .ppo import PPOResult

    return PPOResult


def _config_class(kind: str):
    if kind == "reward":
        from .reward import RewardConfig

        return RewardConfig
    if kind == "sft":
        from .sft import SFTConfig

        return SFTConfig
    from .ppo import PPOConfig

    return PPOConfig


def call_trainer(
    kind: str, cfg: Any, args: dict[str, Any], *, on_progress: ProgressFn | None, should_stop: StopFn | None, dist=None
):
    """Call the training function of `kind` with the JSON-able `args` (see `run_training`)."""
    extra = {} if dist is None else {"dist": dist}
    device = str(dist.device) if dist is not None and dist.device is not None else args.get("device")
    if kind == "reward":
        from .reward import Ranking, train

        return train(
            cfg,
            [Ranking(**r) if isinstance(r, dict) else r for r in args["rankings"]],
            out_dir=args["out_dir"],
            resume_from=args.get("resume_from"),
            reference_completions=[tuple(p) for p in args["reference_completions"]]
            if args.get("reference_completions") is not None
            else None,
            on_progress=on_progress,
            should_stop=should_stop,
            **extra,
        )
    if kind == "sft":
        from .sft import train

        return train(
            cfg,
            [tuple(e) for e in args["examples"]],
            out_dir=args["out_dir"],
            base_path=args["base_path"],
            device=device,
            resume_from=args.get("resume_from"),
            checkpoint_dir=args.get("checkpoint_dir"),
            on_progress=on_progress,
            should_stop=should_stop,
            **extra,
        )
    if kind == "ppo":
        from .ppo import train
        from .reward_model import RewardScorer

        scorer = RewardScorer.from_pretrained(args["reward_model_path"], device=device or "auto")
        return train(
            cfg,
            args["prompts"],
            lambda prompts, responses: scorer.score(prompts, responses),
            out_dir=args["out_dir"],
            base_path=args["base_path"],
            device=device,
            reward_prompts=args.get("reward_prompts"),
            resume_from=args.get("resume_from"),
            checkpoint_dir=args.get("checkpoint_dir"),
            on_progress=on_progress,
            should_stop=should_stop,
            **extra,
        )
    raise ValueError(f"no training function for kind {kind!r}; one of {', '.join(KINDS)}")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# ------------------------------------------------------------------------------------------ the parent


def run_training(
    kind: str,
    cfg: Any,
    args: dict[str, Any],
    *,
    num_processes: int,
    run_dir: str | os.PathLike,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    log: Callable[[str], None] | None = None,
    stop_grace_s: float = 120.0,
    poll_s: float = 0.2,
):
    """Train `kind` ("reward", "sft", "ppo") with `cfg` on `args` (the training function's keyword arguments,
    JSON-able: rankings as dicts or Ranking objects, paths as str) in `num_processes` processes.

    Returns the training function's result object (that of rank 0). One process: a plain call in this process.
    """
    if num_processes <= 1:
        return call_trainer(kind, cfg, args, on_progress=on_progress, should_stop=should_stop)
    _check_gpus(num_processes, getattr(cfg, "device", None) or args.get("device") or "auto")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (EVENTS_FILE, RESULT_FILE, STOP_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for stale in run_dir.glob("rank-*.pid"):
        stale.unlink()
    spec = {"kind": kind, "config": dataclasses.asdict(cfg), "args": _jsonable(args), "parent_pid": os.getpid()}
    (run_dir / SPEC_FILE).write_text(json.dumps(spec))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={num_processes}",
        "-m",
        "rlhf_worker.training.launch",
        str(run_dir),
    ]
    if log is not None:
        log(f"training in {num_processes} processes: {' '.join(command[1:])}")
    with open(run_dir / OUTPUT_LOG, "wb") as output:
        launcher = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        events = _EventReader(run_dir / EVENTS_FILE)
        stop_asked_at = None
        try:
            while launcher.poll() is None:
                for event in events.read():
                    if on_progress is not None:
                        on_progress(event["step"], event["total"], event["metrics"], event.get("samples"))
                if stop_asked_at is None and should_stop is not None and should_stop():
                    (run_dir / STOP_FILE).touch()
                    stop_asked_at = time.monotonic()
                if stop_asked_at is not None and time.monotonic() - stop_asked_at > stop_grace_s:
                    if log is not None:
                        log(f"the training processes did not stop within {stop_grace_s:.0f} s: terminating them")
                    terminate(launcher, run_dir, grace_s=min(30.0, stop_grace_s))
                    break
                time.sleep(poll_s)
        except (
            BaseException
        ):  # the parent itself is going down (an error in on_progress, a signal): take the ranks along
            terminate(launcher, run_dir, grace_s=5.0)
            raise
        for event in events.read():
            if on_progress is not None:
                on_progress(event["step"], event["total"], event["metrics"], event.get("samples"))
    result_path = run_dir / RESULT_FILE
    if launcher.returncode != 0 or not result_path.is_file():
        tail = (run_dir / OUTPUT_LOG).read_text(errors="replace")[-4000:]
        if stop_asked_at is not None and not result_path.is_file():
            raise TrainingProcessesFailed(
                f"the training processes were stopped by force after a cancel (exit code "
                f"{launcher.returncode}); output:\n{tail}"
            )
        raise TrainingProcessesFailed(
            f"training in {num_processes} processes failed: {_rank_error(tail)} (exit code "
            f"{launcher.returncode}); the end of their output:\n{tail}"
        )
    return _result_class(kind)(**json.loads(result_path.read_text()))


def _check_gpus(num_processes: int, device: str) -> None:
    """Each rank takes its own GPU: refuse more ranks than visible GPUs (a CPU run may have any number)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return
    visible = torch.cuda.device_count()
    if num_processes > visible:
        raise ValueError(
            f"num_processes: {num_processes} processes need {num_processes} GPUs, but this worker sees "
            f"{visible} (CUDA_VISIBLE_DEVICES): use at most {visible}, or 0 for one per GPU"
        )


def _rank_error(output: str) -> str:
    """The first exception a rank printed ("[rank1]: ValueError: ..."), without the rank prefix; else a pointer."""
    found = re.search(r"^\[rank\d+\]: ((?:\w+\.)*\w*(?:Error|Exception|Interrupt)\b.*)$", output, re.M)
    return found[1] if found else f"see {OUTPUT_LOG} in the run folder"


def rank_pids(run_dir: str | os.PathLike) -> list[int]:
    """The pids the ranks of the run in `run_dir` wrote when they started."""
    pids = []
    for path in sorted(Path(run_dir).glob("rank-*.pid")):
        try:
            pids.append(int(path.read_text()))
        except ValueError:  # being written
            pass
    return pids


def terminate(launcher: subprocess.Popen, run_dir: str | os.PathLike, grace_s: float = 30.0) -> None:
    """SIGTERM to torchrun (it passes it on to every rank), then, after `grace_s`, SIGKILL to it and to every rank
    still there (a rank stuck in a collective ignores SIGTERM until it returns)."""
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    for pid in [launcher.pid, *rank_pids(run_dir)]:
        try:
            os.killpg(pid, signal.SIGKILL)  # each rank leads its own session (torchrun starts them so)
        except (ProcessLookupError, PermissionError):
            pass
    launcher.wait()


class _EventReader:
    """Complete JSON lines appended to a file since the last read (a half-written last line waits)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ each rank


def _parent_alive(pid: int) -> bool:
    """Whether the process that started the run still runs (a killed one that is not reaped yet is a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie then still counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return state not in ("Z", "X")


def rank_main(run_dir: str | os.PathLike) -> None:
    """What every rank runs: read the spec, join the group, train; rank 0 writes events and the result."""
    from .config_base import config_from_dict
    from .distributed import init_from_env

    run_dir = Path(run_dir)
    spec = json.loads((run_dir / SPEC_FILE).read_text())
    kind = spec["kind"]
    cfg = config_from_dict(_config_class(kind), spec["config"], validate=False)
    dist = init_from_env(getattr(cfg, "device", None) or spec["args"].get("device") or "auto")
    (run_dir / f"rank-{dist.rank}.pid").write_text(str(os.getpid()))
    events = open(run_dir / EVENTS_FILE, "a", encoding="utf-8") if dist.is_main else None
    stop_file, parent_pid = run_dir / STOP_FILE, int(spec.get("parent_pid") or 0)

    def on_progress(step, total, metrics, samples) -> None:
        events.write(json.dumps({"step": step, "total": total, "metrics": metrics, "samples": samples}) + "\n")
        events.flush()

    def should_stop() -> bool:
        return stop_file.exists() or (parent_pid > 0 and not _parent_alive(parent_pid))

    result = call_trainer(
        kind,
        cfg,
        spec["args"],
        on_progress=on_progress if dist.is_main else None,
        should_stop=should_stop if dist.is_main else None,
        dist=dist,
    )
    if dist.is_main:
        events.close()
        tmp = run_dir / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(_jsonable(result)))
        os.replace(tmp, run_dir / RESULT_FILE)
    dist.barrier()
    import torch.distributed

    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(
            "usage: python -m torch.distributed.run --nproc_per_node N -m rlhf_worker.training.launch <run folder>"
        )
    rank_main(sys.argv[1])
