"""Researcher pages: projects."""
from django.db.models import Count
from django.shortcuts import render

from labeling_app.models import Project
from labeling_app.roles import RESEARCHER, role_required


@role_required(RESEARCHER)
def project_list(request):
    projects = Project.objects.annotate(n_prompts=Count("prompts", distinct=True), n_tasks=Count("tasks", distinct=True))
    return render(request, "researcher/project_list.html", {"projects": projects})
