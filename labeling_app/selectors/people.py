"""Reads for the People page, the profile page and a project's team."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef, Prefetch
from django.shortcuts import get_object_or_404
from rest_framework.authtoken.models import Token

from labeling_app.models import Project
from labeling_app.roles import LABELER, ROLES, remember_roles

TOKEN_PREFIX_CHARS = 8


def people_list():
    """Every user, active first then by name, each with `roles` (the app roles they hold), `has_token` and
    `invite_pending` (no usable password yet)."""
    users = list(
        get_user_model()
        .objects.annotate(has_token=Exists(Token.objects.filter(user=OuterRef("pk"))))
        .prefetch_related(Prefetch("groups", queryset=Group.objects.filter(name__in=ROLES), to_attr="role_groups"))
        .order_by("-is_active", "username")
    )
    for user in users:
        user.roles = sorted(remember_roles(user, [g.name for g in user.role_groups]), key=ROLES.index)
        user.invite_pending = not user.has_usable_password()
    return users


def person_or_404(user_id: int):
    return get_object_or_404(get_user_model(), pk=user_id)


def token_of(user) -> Token | None:
    """The user's API token, or None. Pages show `token.key[:TOKEN_PREFIX_CHARS]` only."""
    return Token.objects.filter(user=user).first()


def team_choices():
    """Active labelers, by name: who can be put in a project's team."""
    return get_user_model().objects.filter(is_active=True, groups__name=LABELER).order_by("username")


def team_of(project: Project) -> list:
    return list(project.team.order_by("username"))
