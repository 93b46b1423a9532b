"""LoRA adapters (peft) and gradient checkpointing: the settings every training job shares, and how they are applied.

A LoRA run keeps ONE copy of the base weights: peft injects small trainable A/B matrices beside the frozen
linear layers, in place. PPO's reference policy is the same model with the adapter switched off
(`reference_mode`), not a deep copy. A finished run saves the merged weights (a plain transformers folder)
with the adapter beside it in `adapter/` (`save_policy_with_adapter`), so every loader reads the result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .config_base import ConfigError

ADAPTER_DIR = "adapter"  # beside the merged weights of a version trained with an adapter
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_CHOICES = ("none", "lora")


@dataclass(frozen=True)
class AdapterSettings:
    """Mixed into the SFT, reward and PPO configs: full fine-tuning or LoRA, and gradient checkpointing."""

    adapter: str = field(
        default="none",
        metadata={
            "help": "none = train the weights themselves (full fine-tuning); lora = train small low-rank adapters beside frozen weights (much less memory for the optimiser state, one copy of the model in PPO).",
            "choices": ADAPTER_CHOICES,
        },
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank r (adapter size); used when adapter = lora."})
    lora_alpha: float = field(
        default=32.0, metadata={"help": "LoRA alpha: the adapter's update is scaled by alpha / rank."}
    )
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the adapter's input during training (PPO needs 0)."}
    )
    lora_target_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Names of the linear layers that get adapters (e.g. q_proj, v_proj); empty = every linear layer of the trunk."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute each layer's activations in the backward pass instead of keeping them: less memory, ~30% more compute."
        },
    )

    def validate_adapter(self) -> None:
        if self.adapter not in ADAPTER_CHOICES:
            raise ConfigError("adapter", f"must be one of {', '.join(ADAPTER_CHOICES)}, got {self.adapter!r}")
        if not 1 <= self.lora_rank <= 1024:
            raise ConfigError("lora_rank", f"must be between 1 and 1024, got {self.lora_rank}")
        if not 0 < self.lora_alpha <= 4096:
            raise ConfigError("lora_alpha", f"must be above 0 and at most 4096, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_dropout", f"must be at least 0 and below 1, got {self.lora_dropout}")
        for name in self.lora_target_modules:
            if not name.replace("_", "").replace(".", "").isalnum():
                raise ConfigError("lora_target_modules", f"{name!r} is not a module name (letters, digits, _ and .)")

    @property
    def uses_lora(self) -> bool:
        return self.adapter == "lora"


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of the linear layers under the trunk (q_proj, up_proj, dense, ...), the LM head excluded."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            names.add(full_name.rsplit(".", 1)[-1])
    names.discard("lm_head")
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layers to put LoRA adapters on")
    return sorted(names)


def add_lora(model: torch.nn.Module, settings: AdapterSettings, *, layers: list[int] | None = None):
    """Inject LoRA adapters into `model` in place (every other weight frozen); returns the peft wrapper.

    `model` itself stays the object to call: its linear layers now carry the adapters. The wrapper is what
    switches them off (`reference_mode`), saves them and merges them. `layers` limits the adapters to those
    transformer blocks (PPO's `trainable_layers`).
    """
    from peft import LoraConfig, get_peft_model

    targets = list(settings.lora_target_modules) or linear_module_names(model)
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        bias="none",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ValueError(f"LoRA adapters could not be added (lora_target_modules={targets}): {exc}") from exc


def reference_mode(peft_model) -> contextlib.AbstractContextManager:
    """Inside it the model computes the base weights' function (adapters off): PPO's reference policy."""
    return peft_model.disable_adapter() if peft_model is not None else contextlib.nullcontext()


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in backward (non-reentrant, so frozen inputs and LoRA need no extra hooks).

    transformers checkpoints only in train mode: the training loops switch modes with `update_mode`.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; turn the option off")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


@contextlib.contextmanager
def update_mode(model: torch.nn.Module, settings: AdapterSettings) -> Iterator[None]:
    """Train mode for the gradient passes when checkpointing or LoRA dropout needs it, eval mode again after.

    The loops run in eval mode otherwise (dropout off, so every forward is the same function); they zero the
    base model's dropout first (`policy_models.disable_dropout`), so train mode switches on only checkpointing
    and the adapters' own dropout.
    """
    needed = settings.gradient_checkpointing or (settings.uses_lora and settings.lora_dropout > 0)
    if not needed:
        yield
        return
    model.train()
    try:
        yield
    finally:
        model.eval()


def prepare_for_training(model: torch.nn.Module, settings: AdapterSettings, *, layers: list[int] | None = None):
    """Apply the settings to a model whose dropout is already off: LoRA (returns its peft wrapper, else None)
    and gradient checkpointing."""
    peft_model = add_lora(model, settings, layers=layers) if settings.uses_lora else None
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return peft_model


def is_adapter_folder(path: str | Path) -> bool:
    """A folder holding only a peft adapter (no merged weights of its own)."""
    path = Path(path)
    return (path / ADAPTER_CONFIG_FILE).is_file() and not (path / "config.json").is_file()


def merge_and_save(peft_model, out_dir: str | Path, save_merged) -> torch.nn.Module:
    """Save the adapter to out_dir/adapter, merge it into the base weights (in place) and save those with
    `save_merged(merged_model)`; returns the merged plain model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir / ADAPTER_DIR))
    merged = peft_model.merge_and_unload()
    save_merged(merged)
    return merged


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
