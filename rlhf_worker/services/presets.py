"""Writes on job presets (saved named settings per job kind) and on the "jobs that ended" notice mark."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models.functions import Lower

from config.errors import ServiceError
from rlhf_worker.models import JobNoticesSeen, JobPreset, TrainingJob
from rlhf_worker.selectors import BUILTIN_PRESETS

PRESET_NAME_MAX = 100


def job_preset_save(*, kind: str, name: str, config: dict[str, Any], user) -> tuple[JobPreset, bool]:
    """Store `config` (already validated by the start form) as the `kind` preset `name`; a preset of the same name
    (any case) is replaced. Returns (preset, created). The built-in names are refused."""
    name = " ".join((name or "").split())
    if kind not in TrainingJob.Kind.values:
        raise ServiceError(f"unknown job kind {kind!r}", field="kind")
    if not name:
        raise ServiceError("give the preset a name", field="preset_name")
    if len(name) > PRESET_NAME_MAX:
        raise ServiceError(f"must be at most {PRESET_NAME_MAX} characters (got {len(name)})", field="preset_name")
    if name.casefold() in {b.casefold() for b in BUILTIN_PRESETS}:
        raise ServiceError(f"{name!r} is a built-in preset; choose another name", field="preset_name")
    try:
        return _preset_upsert(kind, name, config, user)
    except IntegrityError:
        # Another save of the same name committed between our look-up and our insert: replace that one.
        return _preset_upsert(kind, name, config, user)


def _preset_upsert(kind: str, name: str, config: dict[str, Any], user) -> tuple[JobPreset, bool]:
    with transaction.atomic():
        existing = (
            JobPreset.objects.select_for_update()
            .annotate(lower=Lower("name"))
            .filter(kind=kind, lower=name.casefold())
            .first()
        )
        if existing is not None:
            existing.name, existing.config, existing.created_by = name, config, user
            existing.save(update_fields=["name", "config", "created_by", "updated_at"])
            return existing, False
        return JobPreset.objects.create(kind=kind, name=name, config=config, created_by=user), True


def job_preset_delete(*, preset: JobPreset) -> None:
    preset.delete()


def job_notices_dismiss(*, user, until: datetime) -> None:
    """Mark the user's job notices seen up to `until` (the newest end they were shown); never moves the mark back."""
    with transaction.atomic():
        mark, created = JobNoticesSeen.objects.select_for_update().get_or_create(
            user=user, defaults={"seen_until": until}
        )
        if not created and until > mark.seen_until:
            mark.seen_until = until
            mark.save(update_fields=["seen_until"])
