"""Job kinds: the module each `TrainingJob.kind` runs, and what every such module provides.

A job module has three parts (and two optional lists for its start form):

- `Config`: a frozen dataclass of the job's settings. `Config.validate()` checks the values on their own
  (ranges, choices, fields that depend on each other) in plain Python and raises ConfigError naming the field.
- `check(cfg)`: what the config refers to outside itself: projects and model versions exist, the dates read
  as a range, an earlier job left a checkpoint. It reads the database and raises ServiceError naming the field.
- `run(job, ctx)`: the job body (`runner.JobContext` gives the config, an output folder and progress/cancel
  hooks); it returns the ModelVersion it registered, or None.

Each layer validates once. The start form runs `Config.validate()` to show every wrong value beside its
field before anything reaches the database. The start service (`services.jobs.job_config_validate`) is the
one authority every caller goes through (the form, a re-run): it runs `Config.validate()` and `check(cfg)`
and stores the normalised config. The runner rebuilds the Config from that stored dict without validating
again: nothing in it can have changed since. What it refers to can: a model version or a project deleted,
a checkpoint folder removed while the job waited in the queue. So `run` does not trust those; it reads each
row when it needs it (`common.model_version`, the selectors) and fails with a message naming the setting.

Two optional names serve the start form: `COMMON_FIELDS` (the settings shown first; every other one goes under
"Advanced", so a field added to a Config appears there without touching the form) and `QUICK_CPU_DEMO` (the
values of the built-in "Quick CPU demo" preset, see `rlhf_worker.selectors.job_presets`).
"""

from __future__ import annotations

from types import ModuleType

from rlhf_worker.jobs import generate, ppo, reward, score, sft
from rlhf_worker.models import TrainingJob

JOB_MODULES: dict[str, ModuleType] = {
    TrainingJob.Kind.GENERATE: generate,
    TrainingJob.Kind.SFT: sft,
    TrainingJob.Kind.REWARD: reward,
    TrainingJob.Kind.PPO: ppo,
    TrainingJob.Kind.SCORE: score,
}


def job_module(kind: str) -> ModuleType:
    """The module implementing a job kind; LookupError if none is registered for it."""
    try:
        return JOB_MODULES[kind]
    except KeyError:
        raise LookupError(f"no job implementation for kind {kind!r}") from None
