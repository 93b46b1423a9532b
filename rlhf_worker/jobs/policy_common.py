"""Shared by the policy jobs (generate, sft, ppo): config fields for data selection, picking versions and rows."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from rlhf_worker.models import ModelVersion
from rlhf_worker.training.config_base import ConfigError

DEFAULT_POLICY_NAME = "SmolLM2-135M-Instruct (default)"


@dataclass(frozen=True)
class DataSelection:
    """Which prompts a job reads; mixed into each policy job's Config."""

    project_ids: list[int] = field(default_factory=list, metadata={"help": "Projects whose prompts (or demonstrations) are used."})
    prompt_ids: list[int] = field(default_factory=list, metadata={"help": "Only these prompts (empty = every prompt of the projects)."})
    date_from: str = field(default="", metadata={"help": "Only rows created on or after this day (YYYY-MM-DD); empty = no limit."})
    date_to: str = field(default="", metadata={"help": "Only rows created on or before this day (YYYY-MM-DD); empty = no limit."})

    def validate_selection(self) -> None:
        if not self.project_ids and not self.prompt_ids:
            raise ConfigError("project_ids", "choose at least one project (or give prompt_ids)")
        validate_projects(self.project_ids)
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise ConfigError(name, f"must be a date as YYYY-MM-DD, got {value!r}") from None
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ConfigError("date_to", "must not be before date_from")


def subconfig(cls: type, cfg: Any):
    """Build the training config `cls` from the fields of a job Config that extends it."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def filter_dates(qs: QuerySet, cfg: DataSelection, field_name: str = "created_at") -> QuerySet:
    if cfg.date_from:
        qs = qs.filter(**{f"{field_name}__date__gte": dt.date.fromisoformat(cfg.date_from)})
    if cfg.date_to:
        qs = qs.filter(**{f"{field_name}__date__lte": dt.date.fromisoformat(cfg.date_to)})
    return qs


def select_prompts(cfg: DataSelection) -> QuerySet:
    """Prompts of the chosen projects (or the chosen prompt ids), in id order."""
    from labeling_app.models import Prompt

    qs = Prompt.objects.select_related("project")
    if cfg.prompt_ids:
        qs = qs.filter(pk__in=cfg.prompt_ids)
    if cfg.project_ids:
        qs = qs.filter(project_id__in=cfg.project_ids)
    return filter_dates(qs, cfg).order_by("id")


def prompt_input(prompt) -> str | list[dict]:
    """What the policy is asked: the chat messages of a chat prompt, else its text."""
    return list(prompt.messages) if prompt.messages else prompt.text


def validate_versions(**fields: tuple[int | None, str]) -> None:
    """Each given (version id, kind) exists; raises ConfigError naming the field otherwise."""
    for name, (version_id, kind) in fields.items():
        if version_id is not None and not ModelVersion.objects.filter(pk=version_id, kind=kind).exists():
            raise ConfigError(name, f"no {kind} model version with id {version_id}")


def validate_projects(project_ids: list[int]) -> None:
    from labeling_app.models import Project

    missing = sorted(set(project_ids) - set(Project.objects.filter(pk__in=project_ids).values_list("pk", flat=True)))
    if missing:
        raise ConfigError("project_ids", f"no project with id {', '.join(map(str, missing))}")


def default_policy_source() -> str:
    """settings.DEFAULT_POLICY (a folder or hub id) when set, else the converted SmolLM2 from the wheel."""
    configured = getattr(settings, "DEFAULT_POLICY", "")
    if configured:
        return configured
    from rlhf_worker.training.policy_models import default_policy_path

    return default_policy_path(settings.MODEL_STORE)


def resolve_policy(version_id: int | None, *, field_name: str) -> ModelVersion:
    """The chosen policy version, else the promoted one, else the default model (registered once)."""
    if version_id is not None:
        version = ModelVersion.objects.filter(pk=version_id).first()
        if version is None or version.kind != ModelVersion.Kind.POLICY:
            raise ConfigError(field_name, f"no policy model version #{version_id}")
        return version
    promoted = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, is_promoted=True).first()
    if promoted is not None:
        return promoted
    path = default_policy_source()
    version, _ = ModelVersion.objects.get_or_create(
        kind=ModelVersion.Kind.POLICY, path=path, parent=None, training_job=None,
        defaults={"name": DEFAULT_POLICY_NAME, "config": {"source": "default"}},
    )
    return version


def resolve_reward(version_id: int | None, *, field_name: str) -> ModelVersion:
    """The chosen reward model version, else the promoted one; there is no default reward model."""
    qs = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)
    version = qs.filter(pk=version_id).first() if version_id is not None else qs.filter(is_promoted=True).first()
    if version is None:
        which = f"#{version_id}" if version_id is not None else "promoted"
        raise ConfigError(field_name, f"no {which} reward model version: train one with a reward job first")
    return version


def device_for(name: str) -> str:
    import torch

    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def version_name(job, requested: str, default_prefix: str) -> str:
    return requested or f"{default_prefix} (job #{job.pk})"
