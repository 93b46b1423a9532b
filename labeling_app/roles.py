"""Roles (Django groups labeler / researcher / admin) and the checks every view and endpoint uses."""

from __future__ import annotations

from functools import wraps
from typing import Callable

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

LABELER, RESEARCHER, ADMIN = "labeler", "researcher", "admin"
ROLES = (LABELER, RESEARCHER, ADMIN)


def user_roles(user) -> set[str]:
    """The roles a user holds. Admins may do all researchers may; labeling is a role of its own."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_rlhf_roles", None)
    if cached is not None:
        return cached
    return remember_roles(user, user.groups.filter(name__in=ROLES).values_list("name", flat=True))


def remember_roles(user, group_names) -> set[str]:
    """The roles from the user's group names (read by the caller, e.g. with the user), kept on the user for this request."""
    roles = {name for name in group_names if name in ROLES}
    if user.is_superuser:
        roles.add(ADMIN)
    if ADMIN in roles:
        roles.add(RESEARCHER)
    user._rlhf_roles = roles
    return roles


def has_role(user, role: str) -> bool:
    assert role in ROLES, f"unknown role {role!r}; use one of {ROLES}"
    return role in user_roles(user)


def role_required(role: str) -> Callable:
    """View decorator: anonymous users go to the login page, users without the role get 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, role):
                raise PermissionDenied(f"This page is for users with the {role} role.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class HasRole(BasePermission):
    """DRF permission: `permission_classes = [HasRole.of("labeler")]`."""

    role: str = ""

    @classmethod
    def of(cls, role: str) -> type["HasRole"]:
        assert role in ROLES, f"unknown role {role!r}; use one of {ROLES}"
        return type(f"Has{role.title()}Role", (cls,), {"role": role})

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, self.role)


def roles_context(request) -> dict:
    """Template context: `roles` (a set of role names) for navigation."""
    return {"roles": user_roles(getattr(request, "user", None))}
