"""A Django form built from a job kind's Config dataclass: every setting, its default and help, with
pickers for data (projects, date range) and models (registry versions or the default).

The form checks the values on their own (`Config.validate()`, every wrong field at once); what they refer to
in the database is the start service's check, whose ServiceError the view puts back here (`apply_error`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from django import forms

from config.errors import NON_FIELD, ServiceError
from labeling_app.selectors.training_data import project_choices
from rlhf_worker.models import ModelVersion, TrainingJob
from rlhf_worker.selectors import job_choices, model_version_choices, promoted_version
from rlhf_worker.training.config_base import NOT_ONE_FIELD, collect_config_errors, config_fields, config_to_dict

LABELS = {
    "project_ids": "Projects (data)",
    "date_from": "Labels from (date)",
    "date_to": "Labels until (date)",
    "preset_name": "Preset name",
    "init_policy_version_id": "Start from a policy version",
}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _show_default(default: Any) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return ", ".join(map(str, default)) or "empty"
    if default == "":
        return "empty"
    return str(default)


def version_kind_for(field_name: str, job_kind: str) -> str:
    """Which registry a *_version_id field picks from: policies if the name says so, reward models if the name
    says so (or the job trains a reward model), policies otherwise."""
    if "policy" in field_name:
        return ModelVersion.Kind.POLICY
    if "reward" in field_name or job_kind == "reward":
        return ModelVersion.Kind.REWARD
    return ModelVersion.Kind.POLICY


def is_date_field(name: str) -> bool:
    return name in ("date_from", "date_to") or name.endswith("_date")


def _form_field(info: dict[str, Any], *, job_kind: str, metadata: dict) -> forms.Field:
    name, default = info["name"], info["default"]
    annotation, optional = _unwrap_optional(info["type"])
    origin = typing.get_origin(annotation)
    help_text = (info["help"] or "").strip()
    label = LABELS.get(name) or name.removesuffix("_id").replace("_", " ").capitalize()
    common = {"label": label, "help_text": help_text}

    if name.endswith("_version_id"):
        kind = version_kind_for(name, job_kind)
        promoted = promoted_version(kind)
        if metadata.get("empty_label"):  # the field says what leaving it empty means
            default_label = metadata["empty_label"]
        elif promoted:
            default_label = f"Default — the promoted one: #{promoted.pk} {promoted.name}"
        elif kind == ModelVersion.Kind.POLICY:
            default_label = "Default — the built-in model (no policy promoted yet)"
        else:
            default_label = "Default — the promoted reward model (none promoted yet)"
        return forms.TypedChoiceField(
            choices=[("", default_label)] + model_version_choices(kind),
            coerce=int,
            empty_value=None,
            required=False,
            **common,
        )
    if name.endswith("_job_id"):
        return forms.TypedChoiceField(
            choices=[("", "None")] + job_choices(job_kind), coerce=int, empty_value=None, required=False, **common
        )
    if name == "project_ids":
        return forms.TypedMultipleChoiceField(
            choices=project_choices(),
            coerce=int,
            required=False,
            widget=forms.SelectMultiple(attrs={"size": 6}),
            label=label,
            help_text=(
                help_text + " Ctrl/⌘-click to choose several; none chosen means every project (the ones"
                " that exist when the job starts; the job's settings then list them)."
            ).strip(),
        )
    if is_date_field(name):
        return forms.CharField(required=False, widget=forms.DateInput(attrs={"type": "date"}), **common)
    if metadata.get("choices"):
        return forms.ChoiceField(choices=[(c, c) for c in metadata["choices"]], required=not optional, **common)
    if annotation is bool:
        return forms.BooleanField(required=False, **common)
    if annotation is int:
        return forms.IntegerField(required=not optional, widget=forms.NumberInput(attrs={"step": "1"}), **common)
    if annotation is float:
        return forms.FloatField(required=not optional, widget=forms.NumberInput(attrs={"step": "any"}), **common)
    if origin in (list, tuple):
        return forms.CharField(required=False, help_text=(help_text + " Comma-separated.").strip(), label=label)
    if annotation is str:
        return forms.CharField(required=not optional and default not in ("", None), strip=True, **common)
    return forms.CharField(required=False, help_text=(help_text + " JSON.").strip(), label=label)


def _initial(value: Any, field: forms.Field) -> Any:
    if isinstance(field, (forms.TypedMultipleChoiceField, forms.BooleanField, forms.TypedChoiceField)):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return value


class JobConfigForm(forms.Form):
    """Fields are added per Config; `clean()` validates with the Config itself (field-named errors)."""

    def __init__(
        self,
        *args,
        config_cls: type,
        job_kind: str,
        initial_config: dict | None = None,
        common_fields: tuple[str, ...] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.config_cls, self.job_kind = config_cls, job_kind
        self.common_names = (
            None
            if common_fields is None
            else [n for n in common_fields if n in dict.fromkeys(f.name for f in dataclasses.fields(config_cls))]
        )
        self.config_dict: dict[str, Any] | None = None
        self.described = config_fields(config_cls)
        metadata = {f.name: dict(f.metadata) for f in dataclasses.fields(config_cls)}
        for info in self.described:
            field = _form_field(info, job_kind=job_kind, metadata=metadata[info["name"]])
            field.config_default = info["default"]
            field.default_display = _show_default(info["default"])
            value = (initial_config or {}).get(info["name"], info["default"])
            field.initial = _initial(value, field)
            self.fields[info["name"]] = field

    def common_fields(self) -> list:
        """The bound fields shown first, in the job kind's COMMON_FIELDS order (every field when it names none)."""
        if self.common_names is None:
            return list(self)
        return [self[name] for name in self.common_names]

    def advanced_fields(self) -> list:
        """Every other field, for the "Advanced" section (a field added to a Config lands here)."""
        return [f for f in self if self.common_names is not None and f.name not in self.common_names]

    def advanced_has_errors(self) -> bool:
        return any(f.errors for f in self.advanced_fields())

    def error_summary(self) -> list[dict[str, str]]:
        """Every error in page order (the form-wide ones first), each with the id of the input it is about,
        for the summary at the top of the form whose links move to the field."""
        items = [{"label": "", "message": str(m), "target": ""} for m in self.non_field_errors()]
        for field in self:
            for message in field.errors:
                items.append({"label": field.label, "message": str(message), "target": field.id_for_label})
        return items

    def config_input(self) -> dict[str, Any]:
        """The cleaned form values as config input (only fields that cleaned without a form error)."""
        data = {}
        for info in self.described:
            name = info["name"]
            if name not in self.cleaned_data:
                continue
            value = self.cleaned_data[name]
            field = self.fields[name]
            if is_date_field(name) and value is None:
                value = ""
            if isinstance(field, forms.CharField) and isinstance(info["default"], dict) and isinstance(value, str):
                try:
                    value = json.loads(value) if value else {}
                except json.JSONDecodeError as exc:
                    self.add_error(name, f"must be JSON: {exc.msg}")
                    continue
            data[name] = value
        return data

    def clean(self):
        cleaned = super().clean()
        config, errors = collect_config_errors(self.config_cls, self.config_input())
        for field, message in errors.items():
            if field in self.fields and field not in self.errors:
                self.add_error(field, message)
            elif field not in self.fields:
                self.add_error(None, f"{field}: {message}" if field != NOT_ONE_FIELD else message)
        if config is not None and not self.errors:
            self.config_dict = config_to_dict(config)
        return cleaned

    def apply_error(self, exc: ServiceError) -> None:
        """Show the start service's refusal beside the fields it names (the rest above the form)."""
        for field, messages in exc.errors.items():
            for message in messages:
                if field in self.fields:
                    self.add_error(field, message)
                else:
                    self.add_error(None, message if field == NON_FIELD else f"{LABELS.get(field, field)}: {message}")


class AutopilotForm(forms.Form):
    """An autopilot's settings: N, PPO or not, auto-promote, and the preset each step's job starts from."""

    every_n_rankings = forms.IntegerField(
        label="Start a cycle after this many new rankings (N)",
        min_value=1,
        max_value=1_000_000,
        initial=100,
        help_text="Counted from submitted rankings by people (imported labels do not count).",
    )
    include_ppo = forms.BooleanField(
        label="Include a PPO step",
        required=False,
        help_text="PPO from the promoted policy against the promoted reward model, between scoring and generation.",
    )
    auto_promote = forms.BooleanField(
        label="Promote the new reward model when its held-out accuracy does not drop",
        required=False,
        help_text="Off: promotion stays a person's decision on the Models page. Policies are never promoted automatically.",
    )

    STEP_KINDS = ("reward", "score", "ppo", "generate")

    def __init__(self, *args, preset_names: dict[str, list[str]], **kwargs):
        super().__init__(*args, **kwargs)
        for kind in self.STEP_KINDS:
            self.fields[f"preset_{kind}"] = forms.ChoiceField(
                label=f"{TrainingJob.Kind(kind).label} job settings",
                choices=[(name, name) for name in preset_names.get(kind, [])],
                required=False,
                help_text="A job preset (Jobs → Start → save as preset).",
            )

    @property
    def presets(self) -> dict[str, str]:
        return {
            kind: self.cleaned_data[f"preset_{kind}"]
            for kind in self.STEP_KINDS
            if self.cleaned_data.get(f"preset_{kind}")
        }

    def apply_error(self, exc: ServiceError) -> None:
        for name, messages in exc.errors.items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)
