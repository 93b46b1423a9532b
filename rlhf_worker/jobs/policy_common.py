"""Shared by the policy jobs (generate, sft, ppo): which prompts they read, and which policy / reward model they use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from config.errors import ServiceError
from labeling_app.selectors.labels import DateRange
from labeling_app.selectors.training_data import has_prompts, prompts_for_training
from rlhf_worker.jobs.common import check_projects, model_version, read_data_snapshot, resumable_job_dir
from rlhf_worker.models import ModelVersion
from rlhf_worker.training.checkpoint import find_checkpoint

DEFAULT_POLICY_NAME = "SmolLM2-135M-Instruct (default)"


@dataclass(frozen=True)
class DataSelection:
    """Which prompts a job reads; mixed into each policy job's Config."""

    project_ids: list[int] = field(
        default_factory=list, metadata={"help": "Projects whose prompts (or demonstrations) are used."}
    )
    prompt_ids: list[int] = field(
        default_factory=list, metadata={"help": "Only these prompts (empty = every prompt of the projects)."}
    )
    date_from: str = field(
        default="", metadata={"help": "Only rows created on or after this day (YYYY-MM-DD); empty = no limit."}
    )
    date_to: str = field(
        default="", metadata={"help": "Only rows created on or before this day (YYYY-MM-DD); empty = no limit."}
    )

    def validate_selection(self) -> None:
        """Nothing to check on its own: no project (and no prompt) chosen means every project, which the start
        service writes into the stored config (`services.jobs.job_config_validate`)."""


def check_selection(cfg: DataSelection) -> None:
    """At start: the projects exist and the dates read as a range (labels.DateRange); ServiceError naming the field."""
    check_projects(cfg.project_ids)
    DateRange.parse(cfg.date_from, cfg.date_to)


def check_prompts_selected(cfg: DataSelection) -> None:
    """At start: the selection holds at least one prompt (generate and PPO have nothing to do otherwise)."""
    if not has_prompts(
        project_ids=cfg.project_ids, prompt_ids=cfg.prompt_ids, date_from=cfg.date_from, date_to=cfg.date_to
    ):
        raise ServiceError(
            f"no prompts in {selection_text(cfg)}: add prompts to the project, or widen the selection",
            field="project_ids",
        )


def selection_text(cfg) -> str:
    """'projects #1, #2 between 2026-01-01 and now', for messages about what a selection holds."""
    text = "projects " + ", ".join(f"#{p}" for p in cfg.project_ids) if cfg.project_ids else "the chosen prompts"
    if getattr(cfg, "prompt_ids", None) and cfg.project_ids:
        text += f" (prompts {', '.join(map(str, cfg.prompt_ids))})"
    date_from, date_to = getattr(cfg, "date_from", ""), getattr(cfg, "date_to", "")
    if date_from or date_to:
        text += f" between {date_from or 'the start'} and {date_to or 'now'}"
    return text


def selected_prompts(cfg: DataSelection) -> list[dict]:
    """The selected prompts, as `training_data.prompts_for_training` rows."""
    return list(
        prompts_for_training(
            project_ids=cfg.project_ids, prompt_ids=cfg.prompt_ids, date_from=cfg.date_from, date_to=cfg.date_to
        )
    )


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
        return model_version(version_id, kind=ModelVersion.Kind.POLICY, field=field_name)
    promoted = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, is_promoted=True).first()
    if promoted is not None:
        return promoted
    path = default_policy_source()
    version, _ = ModelVersion.objects.get_or_create(
        kind=ModelVersion.Kind.POLICY,
        path=path,
        parent=None,
        training_job=None,
        defaults={"name": DEFAULT_POLICY_NAME, "config": {"source": "default"}},
    )
    return version


def check_policy(version_id: int | None, *, field_name: str) -> None:
    """At start: what `resolve_policy` will use exists: the chosen version, else the promoted one, else the built-in
    model (settings.DEFAULT_POLICY, trusted as given, or the SmolLM2 wheel). Reads only; registers nothing."""
    if version_id is not None:
        model_version(version_id, kind=ModelVersion.Kind.POLICY, field=field_name)
        return
    if ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, is_promoted=True).exists():
        return
    if getattr(settings, "DEFAULT_POLICY", ""):
        return
    from rlhf_worker.training.policy_models import DEFAULT_POLICY_DIRNAME, gguf_file_path

    if (Path(settings.MODEL_STORE) / "base" / DEFAULT_POLICY_DIRNAME / "config.json").is_file():
        return  # converted before
    try:
        gguf_file_path()
    except FileNotFoundError as exc:
        raise ServiceError(
            f"no policy is promoted and the built-in model is missing ({exc}): choose a policy version, "
            "promote one, or set DEFAULT_POLICY",
            field=field_name,
        ) from None


def resolve_reward(version_id: int | None, *, field_name: str) -> ModelVersion:
    """The chosen reward model version, else the promoted one; there is no default reward model."""
    if version_id is not None:
        return model_version(version_id, kind=ModelVersion.Kind.REWARD, field=field_name)
    promoted = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, is_promoted=True).first()
    if promoted is None:
        raise ServiceError(no_default_reward_message(), field=field_name)
    return promoted


def no_default_reward_message() -> str:
    """Why an empty reward model setting cannot resolve, and what to do: the models to choose from, or how to get one."""
    existing = list(
        ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD)
        .order_by("-created_at", "-pk")
        .values_list("pk", "name")[:10]
    )
    if not existing:
        return (
            "there is no reward model yet, so there is nothing to optimise against: start a Reward model job "
            "(it trains on submitted rankings), then choose its result here or promote it on the Models page"
        )
    listed = ", ".join(f"#{pk} {name}" for pk, name in existing)
    return (
        f"no reward model is promoted, so the empty setting has nothing to use: choose one of the reward models "
        f"({listed}), or promote one on the Models page"
    )


# What a policy job's data snapshot records of its selection (a resumed run records its predecessor's again).
SELECTION_KEYS = ("project_ids", "date_from", "date_to")


@dataclass(frozen=True)
class Resumed:
    """What an SFT or PPO job continuing an interrupted one (`resume_job_id`) reads from that job's folder."""

    checkpoint: Path  # the checkpoint to continue from
    snapshot: dict  # the interrupted run's data snapshot: its data ids and the versions it started from
    base: ModelVersion  # the policy version it started from

    def selection(self) -> dict:
        """The interrupted run's projects and dates, stored again on the new run's snapshot."""
        return {key: self.snapshot[key] for key in SELECTION_KEYS}


def resumed_run(kind: str, cfg) -> Resumed | None:
    """None for a fresh run; else the checkpoint, data snapshot and starting policy of job `cfg.resume_job_id`
    (ServiceError naming resume_job_id when it left none or its policy version is gone)."""
    if cfg.resume_job_id is None:
        return None
    previous = resumable_job_dir(kind, cfg.resume_job_id)
    snapshot = read_data_snapshot(previous)
    base = model_version(snapshot["base_version_id"], kind=ModelVersion.Kind.POLICY, field="resume_job_id")
    return Resumed(find_checkpoint(previous), snapshot, base)


def fresh_selection(cfg) -> dict:
    """A fresh run's selection as its data snapshot records it."""
    return {key: getattr(cfg, key) for key in SELECTION_KEYS}
