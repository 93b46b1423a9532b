"""Job kinds: one module per kind (reward, score, generate, sft, ppo) with `Config` and `run(job, ctx)`."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType


def job_module(kind: str) -> ModuleType:
    """The module implementing a job kind; raises LookupError if the kind has none."""
    try:
        return import_module(f"rlhf_worker.jobs.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name == f"rlhf_worker.jobs.{kind}":
            raise LookupError(f"no job implementation for kind {kind!r}") from None
        raise
