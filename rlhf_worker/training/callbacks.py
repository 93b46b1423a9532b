"""The two hooks every training loop takes from its caller: progress reports and a stop check."""

from __future__ import annotations

from typing import Callable

# on_progress(step, total_steps, metrics, samples): samples are a few recent generations to show, or None.
ProgressFn = Callable[[int, int, dict[str, float], "list[dict] | None"], None]
# should_stop(): True once the run should end early (the job was cancelled); checked between steps.
StopFn = Callable[[], bool]
