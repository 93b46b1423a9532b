"""Resumable checkpoints shared by the reward, SFT and PPO loops: where they live, how they are written and found,
and the state (trained weights, RNG, config) a resumed run needs to continue exactly where the saved one stopped.

A checkpoint is a folder (`<out>/checkpoint`) holding the weights and `trainer_state.pt` (step, optimizer,
scheduler, RNG states, the loop's own counters). It is written next to its final place and published with
`atomic_dir.publish_dir`, so the previous checkpoint goes only once the new one is complete on disk. In a
multi-process run rank 0 writes it (every rank holds the same weights and optimizer state) and every rank loads it.

torch is imported inside the functions that need it: the job pages ask `find_checkpoint` whether a job can be
resumed, and a page view should not load torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .atomic_dir import complete_dir, publish_dir, temp_dir_for

CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE_FILE = "trainer_state.pt"
TRAINED_WEIGHTS_FILE = "trained_weights.safetensors"

if TYPE_CHECKING:
    import torch

# Settings a resumed run may change: where and how wide it runs, and how often it saves; not what it computes.
MAY_CHANGE_ON_RESUME = frozenset(
    {"device", "num_processes", "save_every", "gradient_checkpointing", "samples_per_step"}
)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], write_weights: Callable[[Path], None]) -> None:
    """Write a resumable checkpoint to `path`: `write_weights(folder)` puts the weights in, `state` goes to
    trainer_state.pt; the previous checkpoint is deleted only once this one is complete on disk."""
    import torch

    tmp = temp_dir_for(path)
    write_weights(tmp)
    torch.save(state, tmp / TRAINER_STATE_FILE)
    publish_dir(tmp, path)


def find_checkpoint(resume_from: str | os.PathLike) -> Path | None:
    """The complete checkpoint in `resume_from` (a checkpoint folder, or a run's output folder holding one), or None."""
    path = Path(resume_from)
    if (path / TRAINER_STATE_FILE).is_file():
        return path
    return complete_dir(path / CHECKPOINT_DIR, TRAINER_STATE_FILE)


def require_checkpoint(resume_from: str | os.PathLike) -> Path:
    """`find_checkpoint`, or FileNotFoundError saying where it looked."""
    found = find_checkpoint(resume_from)
    if found is None:
        path = Path(resume_from)
        raise FileNotFoundError(f"no checkpoint ({TRAINER_STATE_FILE}) in {path} or {path / CHECKPOINT_DIR}")
    return found


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """trainer_state.pt of a checkpoint, on the CPU (optimizer.load_state_dict moves the state to its parameters)."""
    import torch

    return torch.load(checkpoint / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------ trained weights


def trained_parameters(modules: Mapping[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimizer updates, named "<module key>.<parameter name>": every weight of a full
    fine-tune, the adapters of a LoRA run, the top layers when the bottom is frozen, a value head."""
    return {
        f"{key}.{name}": p
        for key, module in modules.items()
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def save_trained_weights(folder: Path, modules: Mapping[str, torch.nn.Module]) -> None:
    """The trained parameters of `modules` as one safetensors file (frozen weights come from the run's base)."""
    from safetensors.torch import save_file

    tensors = {name: p.detach().cpu().contiguous() for name, p in trained_parameters(modules).items()}
    save_file(tensors, str(folder / TRAINED_WEIGHTS_FILE))


def load_trained_weights(checkpoint: Path, modules: Mapping[str, torch.nn.Module]) -> None:
    """Copy the checkpoint's trained parameters into `modules`; ValueError when they are not the same set (a
    different model, adapter or number of trained layers)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / TRAINED_WEIGHTS_FILE))
    params = trained_parameters(modules)
    if set(saved) != set(params):
        missing, extra = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        raise ValueError(
            f"the checkpoint in {checkpoint} trained other weights than this run "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]}): "
            "a different model, adapter or trainable_layers setting"
        )
    with torch.no_grad():
        for name, p in params.items():
            if saved[name].shape != p.shape:
                raise ValueError(
                    f"the checkpoint's {name} has shape {tuple(saved[name].shape)}, this run's {tuple(p.shape)}"
                )
            p.copy_(saved[name])


# ------------------------------------------------------------------------------------------ RNG and config


def torch_rng_states() -> dict[str, Any]:
    """torch's global random states (CPU, and every GPU when there are any)."""
    import torch

    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_torch_rng_states(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """What differs between the config a checkpoint was written under and a resumed run's ("learning_rate 0.001
    -> 0.002, ..."), leaving out the settings a resume may change (MAY_CHANGE_ON_RESUME); None when nothing does."""
    differences = [
        f"{name} {saved.get(name)!r} -> {current.get(name)!r}"
        for name in sorted(set(saved) | set(current))
        if name not in MAY_CHANGE_ON_RESUME and saved.get(name) != current.get(name)
    ]
    return ", ".join(differences) or None


def check_resumable(state: Mapping[str, Any], config: Mapping[str, Any], data_digest: str) -> None:
    """ValueError, saying what differs, when a checkpoint was written by a run with other settings or other data."""
    differences = config_mismatch(state["config"], config)
    if differences:
        raise ValueError(f"the checkpoint was written with other settings ({differences}): resume with its settings")
    if state["data_digest"] != data_digest:
        raise ValueError(
            "the checkpoint was written on other training data (a different set or order of examples): resume with "
            "the data it was trained on"
        )


def data_digest(items: Any) -> str:
    """A fingerprint of a run's training data (JSON-able), to tell whether a resumed run reads the same data."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
