"""Researcher pages: label quality of a project (progress, agreement, charts) and of one labeler."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.projects import project_or_404
from labeling_app.selectors.quality import (
    agreement_for_project,
    labeler_activity,
    labeler_or_404,
    labeler_stats,
    project_progress,
    quality_charts,
    reward_model_ceiling,
)
from labeling_app.services.quality_snapshot import quality_snapshot_for_page, quality_snapshot_refresh


@role_required(RESEARCHER)
def project_quality(request, pk: int):
    """The aggregates come from the project's stored snapshot (services/quality_snapshot.py); progress, labels per
    day, the checks' names and the reward models are read live (a few ms each at campaign size)."""
    project = project_or_404(pk)
    snapshot = quality_snapshot_for_page(project=project)
    progress, aggregates = project_progress(project), snapshot.aggregates
    labelers = labeler_stats(project, aggregates=aggregates)
    ceiling = reward_model_ceiling(project, aggregates["per_day"])
    return render(
        request,
        "researcher/quality.html",
        {
            "project": project,
            "snapshot": snapshot,
            "snapshot_today": timezone.localdate(snapshot.computed_at) == timezone.localdate(),
            "progress": progress,
            "agreement": agreement_for_project(project, aggregates),
            "labelers": labelers,
            "ceiling": ceiling,
            "charts": quality_charts(progress, aggregates["per_day"], labelers, ceiling),
        },
    )


@require_POST
@role_required(RESEARCHER)
def project_quality_refresh(request, pk: int):
    """ "Refresh now": recompute the project's quality figures while the researcher waits, then show the page."""
    project = project_or_404(pk)
    snapshot = quality_snapshot_refresh(project=project)
    if snapshot.stored:
        messages.success(request, f"Statistics recomputed from {snapshot.labels} labels.")
    else:
        messages.warning(request, "Statistics recomputed, but the cache is down: the page computes them on each view.")
    return redirect("researcher:quality", pk=project.pk)


@role_required(RESEARCHER)
def labeler_quality(request, pk: int, user_id: int):
    project = project_or_404(pk)
    person = labeler_or_404(user_id)
    mine = labeler_stats(project, labeler_id=person.pk)
    return render(
        request,
        "researcher/labeler_quality.html",
        {
            "project": project,
            "person": person,
            "stats": mine[0] if mine else None,
            **labeler_activity(project, person),
        },
    )
