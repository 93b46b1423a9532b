"""Labeler pages: the project list to start labeling from."""
from django.db.models import Count, F, Q
from django.shortcuts import render

from labeling_app.models import Project
from labeling_app.roles import LABELER, role_required


@role_required(LABELER)
def home(request):
    projects = Project.objects.annotate(
        open_tasks=Count("tasks", filter=Q(tasks__submitted_count__lt=F("tasks__overlap"))),
    ).order_by("name")
    return render(request, "labeler/home.html", {"projects": projects})
