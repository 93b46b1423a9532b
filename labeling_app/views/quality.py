"""Researcher pages: label quality of a project (progress, agreement, charts) and of one labeler."""

from django.shortcuts import render

from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.projects import project_or_404
from labeling_app.selectors.quality import (
    agreement_for_project,
    labeler_activity,
    labeler_or_404,
    labeler_stats,
    project_progress,
    quality_aggregates,
    quality_charts,
    reward_model_ceiling,
)


@role_required(RESEARCHER)
def project_quality(request, pk: int):
    project = project_or_404(pk)
    progress, aggregates = project_progress(project), quality_aggregates(project)
    labelers = labeler_stats(project, aggregates=aggregates)
    ceiling = reward_model_ceiling(project, aggregates["per_day"])
    return render(
        request,
        "researcher/quality.html",
        {
            "project": project,
            "progress": progress,
            "agreement": agreement_for_project(project, aggregates),
            "labelers": labelers,
            "ceiling": ceiling,
            "charts": quality_charts(progress, aggregates["per_day"], labelers, ceiling),
        },
    )


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
