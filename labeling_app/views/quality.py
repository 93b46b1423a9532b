"""Researcher pages: label quality of a project (progress, agreement) and of one labeler."""
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404, render

from labeling_app.models import Annotation, Project
from labeling_app.roles import RESEARCHER, role_required
from labeling_app.selectors.quality import agreement_for_project, labeler_stats, project_progress


@role_required(RESEARCHER)
def project_quality(request, pk: int):
    project = get_object_or_404(Project, pk=pk)
    return render(request, "researcher/quality.html", {
        "project": project, "progress": project_progress(project), "agreement": agreement_for_project(project),
        "labelers": labeler_stats(project),
    })


@role_required(RESEARCHER)
def labeler_quality(request, pk: int, user_id: int):
    project = get_object_or_404(Project, pk=pk)
    person = get_object_or_404(get_user_model(), pk=user_id)
    mine = [row for row in labeler_stats(project) if row["labeler_id"] == person.pk]
    annotations = Annotation.objects.filter(task__project=project, labeler=person, status=Annotation.Status.SUBMITTED)
    per_day = annotations.annotate(day=TruncDate("submitted_at")).values("day").annotate(n=Count("id")).order_by("day")
    return render(request, "researcher/labeler_quality.html", {
        "project": project, "person": person, "stats": mine[0] if mine else None, "per_day": per_day,
        "recent": annotations.order_by("-submitted_at")[:20],
    })
