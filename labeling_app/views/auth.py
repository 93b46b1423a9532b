"""Landing page: sends each user to their work."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from labeling_app.roles import ADMIN, LABELER, RESEARCHER, user_roles


@login_required
def landing(request):
    roles = user_roles(request.user)
    areas = [
        (role, url, title)
        for role, url, title in (
            (ADMIN, "jobs:list", "Training dashboard"),
            (RESEARCHER, "researcher:project_list", "Projects and data"),
            (LABELER, "labeler:home", "Labeling"),
        )
        if role in roles
    ]
    if ADMIN in roles:  # an admin's researcher pages are one click away in the navigation
        areas = [a for a in areas if a[0] != RESEARCHER]
    if len(areas) == 1:
        return redirect(areas[0][1])
    return render(request, "landing.html", {"areas": areas}, status=200)
