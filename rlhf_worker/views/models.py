"""Model versions page: lineage, metrics side by side, promote (admins)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from labeling_app.roles import ADMIN, RESEARCHER, role_required
from rlhf_worker.models import ModelVersion
from rlhf_worker.selectors import (
    data_summary,
    model_version_get,
    model_version_lineage,
    model_versions_overview,
    promoted_policy,
)
from rlhf_worker.services.models import model_version_promote


def _version_or_404(pk: int) -> ModelVersion:
    version = model_version_get(pk=pk)
    if version is None:
        raise Http404(f"no model version #{pk}")
    return version


def _chart_rows(rows: list[dict], names: list[str]) -> list[dict]:
    """Versions with at least one of the compared metrics, oldest first (no chart when none has any)."""
    return [
        {"label": f"#{r['version'].pk} {r['version'].name}", **{n: r[n] for n in names}}
        for r in reversed(rows)
        if any(r[n] is not None for n in names)
    ]


@role_required(RESEARCHER)
def model_version_list(request):
    overview = model_versions_overview()
    return render(
        request,
        "jobs/models.html",
        {
            "rewards": overview.get("reward", []),
            "policies": overview.get("policy", []),
            "promoted_policy": promoted_policy(),
            "reward_chart": _chart_rows(overview.get("reward", []), ["accuracy", "agreement"]),
            "policy_chart": _chart_rows(overview.get("policy", []), ["score", "kl"]),
        },
    )


@role_required(RESEARCHER)
def model_version_detail(request, pk: int):
    version = _version_or_404(pk)
    return render(
        request,
        "jobs/model_detail.html",
        {
            "version": version,
            "data": data_summary(version.data_snapshot),
            **model_version_lineage(version),
            "metrics": sorted((version.metrics or {}).items()),
            "config_items": sorted((version.config or {}).items()),
            "snapshot_items": sorted((version.data_snapshot or {}).items()),
        },
    )


@role_required(ADMIN)
@require_POST
def model_version_promote_view(request, pk: int):
    version = model_version_promote(version=_version_or_404(pk), user=request.user)
    what = (
        "generation jobs now use it by default"
        if version.kind == ModelVersion.Kind.POLICY
        else "it is now the default reward model"
    )
    messages.success(request, f"Promoted {version}: {what}.")
    next_url = request.POST.get("next", "")
    if next_url and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("jobs:models")
