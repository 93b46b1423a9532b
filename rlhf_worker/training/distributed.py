"""Data parallelism across N processes: the ranks' shared view of a run (who am I, sum this, stop together).

A training loop takes a `Dist` and calls it unconditionally; `SINGLE` (one process) makes every call a no-op,
so the one-process path runs exactly the code it ran before. Under `torchrun`/`accelerate launch`,
`init_from_env` asks accelerate's `PartialState` to join the process group (gloo on CPU, NCCL on GPUs) and
gives each rank its device.

Why not wrap the model in DDP (what `Accelerator.prepare` does): PPO runs the policy's trunk in pieces
(`TrunkSplit` calls the top layers directly) and samples with many forwards that have no backward. DDP's
reducer only synchronises gradients of forwards that went through the wrapper, and complains about parameters
a forward did not use (frozen layers, an empty shard). Summing the gradients ourselves after `backward()` is
the same arithmetic DDP does (one all-reduce of the flattened gradients), works whatever ran the forward, and
keeps the model a plain `PreTrainedModel` that saves as before.

The loss convention that makes N processes equal one: every rank divides its shard's loss SUM by the GLOBAL
normaliser (rankings, answer tokens, response tokens of the whole batch), and `sum_gradients` adds the ranks'
gradients. The sum of the ranks' gradients is then the one-process gradient of the whole batch, up to the
order of floating-point additions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

import torch

from .callbacks import StopFn
from .config_base import ConfigError
from .device import device_problem

T = TypeVar("T")
MAX_PROCESSES = 64


@dataclass(frozen=True)
class ProcessSettings:
    """Mixed into the SFT, reward and PPO configs: how many processes (one per GPU) train the job together."""

    num_processes: int = field(
        default=0,
        metadata={
            "help": "Processes that train together, each on its share of every batch (one per GPU; several on a CPU "
            "only for testing). 0 = the worker's TRAINING_NUM_PROCESSES, else one per visible GPU, else 1. "
            "batch_size stays the global batch: N processes give the same result as one."
        },
    )

    def validate_processes(self) -> None:
        if not 0 <= self.num_processes <= MAX_PROCESSES:
            raise ConfigError(
                "num_processes", f"must be between 0 (automatic) and {MAX_PROCESSES}, got {self.num_processes}"
            )
        device = getattr(self, "device", "auto")
        if problem := device_problem(device):
            raise ConfigError("device", problem)
        if self.num_processes > 1 and device.startswith("cuda:"):
            raise ConfigError(
                "device",
                f"each of the {self.num_processes} processes takes its own GPU: use auto or cuda "
                "(CUDA_VISIBLE_DEVICES picks which GPUs), not one GPU",
            )


def resolve_num_processes(setting: int, worker_default: int | None = None) -> int:
    """How many processes a job runs: its own setting, else the worker's default, else one per visible GPU (>= 1)."""
    if setting and setting > 0:
        return setting
    if worker_default and worker_default > 0:
        return worker_default
    return max(1, torch.cuda.device_count() if torch.cuda.is_available() else 1)


@dataclass
class Dist:
    """One rank's view of a data-parallel run. world_size 1 = a plain single process (every method a no-op)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None
    _flags: dict = field(default_factory=dict, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress, evaluates and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's rows of a global batch: rows rank, rank + N, rank + 2N, ... (an empty list is possible)."""
        return list(items[self.rank :: self.world_size]) if self.distributed else list(items)

    def owner(self, row: int) -> tuple[int, int]:
        """(rank, position in that rank's shard) of global row `row` under `shard`."""
        return row % self.world_size, row // self.world_size

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of `values` over the ranks (float64, so counts and loss sums add exactly enough)."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank (a collective: every rank must call it)."""
        if not self.distributed:
            return bool(flag)
        tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Add every rank's gradients (one all-reduce of the flattened grads, as DDP's buckets do). A parameter
        a rank did not use (an empty shard) contributes zeros and gets the others' sum."""
        if not self.distributed:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Every rank starts from rank 0's weights and buffers (as DDP does when it wraps a model)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def stop_check(self, should_stop: StopFn | None) -> StopFn | None:
        """A stop check every rank calls at the same point: rank 0 asks `should_stop`, every rank gets its answer.

        Without it, one rank would stop while the others wait in the next all-reduce for ever.
        """
        if not self.distributed:
            return should_stop

        def agreed() -> bool:
            return self.any(bool(should_stop()) if (self.is_main and should_stop is not None) else False)

        return agreed

    @property
    def _comm_device(self) -> torch.device:
        # NCCL reduces tensors on the GPU; gloo on the CPU
        if self.device is not None and self.device.type == "cuda":
            return self.device
        return torch.device("cpu")


SINGLE = Dist()


def init_from_env(device_setting: str = "auto") -> Dist:
    """Join the process group that `torchrun` / `accelerate launch` described in the environment.

    device "cpu" (or no GPU) → gloo and the CPU; otherwise NCCL and GPU number LOCAL_RANK (each process its own).
    """
    from accelerate import PartialState

    cpu = device_setting == "cpu" or not torch.cuda.is_available()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    state = PartialState(cpu=cpu)
    device = torch.device("cpu") if cpu else state.device
    return Dist(rank=state.process_index, world_size=state.num_processes, device=device)
