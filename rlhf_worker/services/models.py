"""Writes on the model registry: promoting a version (the promoted policy is generation's default)."""

from __future__ import annotations

import logging
import zlib

from django.db import connection, transaction

from rlhf_worker.models import ModelVersion

logger = logging.getLogger(__name__)


def _lock_promotion(kind: str) -> None:
    """Serialise promotions of one kind: a transaction-scoped PostgreSQL advisory lock keyed by kind.

    Locking the currently promoted row is not enough: two concurrent promotions both wait on it, then
    both find no promoted row left and the second hits the partial unique index.
    """
    key = zlib.crc32(f"rlhf_worker.promote.{kind}".encode())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def model_version_promote(*, version: ModelVersion, user) -> ModelVersion:
    """Make `version` the promoted one of its kind; the previously promoted version is demoted in the
    same transaction (the partial unique index `one_promoted_version_per_kind` allows one per kind)."""
    with transaction.atomic():
        _lock_promotion(version.kind)
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if not version.is_promoted:
            ModelVersion.objects.filter(kind=version.kind, is_promoted=True).update(is_promoted=False)
            ModelVersion.objects.filter(pk=version.pk).update(is_promoted=True)
            version.is_promoted = True
    logger.info("%s promoted by %s", version, getattr(user, "username", user))
    return version


def model_version_eval_record(*, version_id: int, evaluation: dict) -> None:
    """Store a policy's reward-model evaluation in its metrics (the `eval/...` keys replace the previous
    evaluation's; the other metrics stay). Row-locked, so two PPO jobs from one base do not lose a write."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(pk=version_id).first()
        if version is None:  # deleted while the job ran: nothing to show it on
            return
        kept = {k: v for k, v in (version.metrics or {}).items() if not k.startswith("eval/")}
        version.metrics = {**kept, **evaluation}
        version.save(update_fields=["metrics"])
