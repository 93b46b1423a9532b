"""Landing page that sends each user to their work, and the login page's lockout answer."""

import math
from datetime import datetime

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Max
from django.shortcuts import redirect, render
from django.utils import timezone
from rest_framework.throttling import BaseThrottle

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


def client_address(request) -> str | None:
    """The client's address as the API throttles count it: REMOTE_ADDR, or X-Forwarded-For behind NUM_PROXIES proxies."""
    return BaseThrottle().get_ident(request)


def lockout_ends(request, credentials: dict | None) -> datetime:
    """When the lockout of this username and address ends: the window counts from the last recorded failure."""
    cool_off = get_cool_off(request)
    latest = [
        attempts.aggregate(last=Max("attempt_time"))["last"]
        for attempts in AxesProxyHandler.get_implementation().get_user_attempts(request, credentials)
    ]
    last_failure = max((t for t in latest if t is not None), default=timezone.now())
    return last_failure + cool_off


def login_locked_out(request, original_response=None, credentials: dict | None = None):
    """The login page again, saying the account is locked for now and when to retry (429 with Retry-After).

    django-axes calls this in place of the login view's answer when it refused a login (AXES_LOCKOUT_CALLABLE).
    """
    ends = lockout_ends(request, credentials)
    retry_after = max(1, math.ceil((ends - timezone.now()).total_seconds()))
    form = AuthenticationForm(request, initial={"username": get_client_username(request, credentials) or ""})
    context = {"form": form, "next": request.POST.get("next", ""), "locked_until": ends}
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response
