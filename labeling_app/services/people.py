"""People: users with their roles, one-time set-password links, deactivation, and each user's API token."""

from __future__ import annotations

from typing import Iterable

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from rest_framework.authtoken.models import Token

from config.errors import ServiceError
from labeling_app.roles import ADMIN, ROLES


def _clean_roles(roles: Iterable[str]) -> list[str]:
    roles = list(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ServiceError(f"Unknown role {unknown[0]!r}; use one of {', '.join(ROLES)}.", field="roles")
    if not roles:
        raise ServiceError("Give at least one role: labeler, researcher or admin.", field="roles")
    return roles


def _lock_admins() -> None:
    """Serialise every change that can take away an admin (row lock on the admin group): two admins demoting
    each other at once must not both succeed and leave nobody to manage people."""
    Group.objects.select_for_update().get_or_create(name=ADMIN)


def _refuse_last_admin(user, *, what: str) -> None:
    """ServiceError (409) when `user` is the only active admin left; call it holding _lock_admins."""
    others = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(groups__name=ADMIN) | Q(is_superuser=True))
        .exclude(pk=user.pk)
    )
    if not others.exists():
        raise ServiceError(
            f"{user.username} is the last active admin: make another user an admin before you {what}.", status=409
        )


def user_create(*, username: str, roles: Iterable[str], email: str = "", password: str | None = None):
    """A user holding `roles`. With a password (validated like any other) they can log in at once; without,
    their password is unusable until they set one through `user_invite_path`."""
    User = get_user_model()
    username = (username or "").strip()
    roles = _clean_roles(roles)
    if not username:
        raise ServiceError("Give a username.", field="username")
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise ServiceError(exc.messages[0], field="username") from None
    if len(username) > User._meta.get_field("username").max_length:
        raise ServiceError("A username has at most 150 characters.", field="username")
    user = User(username=username, email=(email or "").strip())
    if password is not None:
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise ServiceError({"password": exc.messages}) from None
        user.set_password(password)
    else:
        user.set_unusable_password()
    try:
        with transaction.atomic():
            user.save()
            user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in roles))
    except IntegrityError:
        if User.objects.filter(username=username).exists():
            raise ServiceError(
                f"A user named {username!r} already exists; pick another name.", field="username", status=409
            ) from None
        raise
    return user


def user_invite_path(*, user) -> str:
    """The path of a one-time link where `user` sets their password (Django's password-reset token).

    It stops working once used (setting the password changes what the token signs), after
    PASSWORD_RESET_TIMEOUT (3 days), and while the user is deactivated.
    """
    if not user.is_active:
        raise ServiceError(f"{user.username} is deactivated; reactivate them before sending a link.", status=409)
    return reverse(
        "set_password",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )


@transaction.atomic
def user_set_roles(*, user, roles: Iterable[str]):
    """Replace the user's app roles. Refused when it would leave no active admin, or would take admin from a
    Django superuser (who is an admin by that flag)."""
    roles = _clean_roles(roles)
    if ADMIN not in roles:
        if user.is_superuser:
            raise ServiceError(
                f"{user.username} is a Django superuser and so always an admin; change that in Django admin.",
                field="roles",
                status=409,
            )
        _lock_admins()
        if user.is_active and user.groups.filter(name=ADMIN).exists():
            _refuse_last_admin(user, what="take the admin role from them")
    current = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    user.groups.remove(*Group.objects.filter(name__in=current - set(roles)))
    user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in set(roles) - current))
    user.__dict__.pop("_rlhf_roles", None)
    return user


@transaction.atomic
def user_set_active(*, user, active: bool):
    """Deactivate a user (no log-in, no session, no API token; their labels stay) or reactivate them.
    Refused for the last active admin."""
    if not active and user.is_active:
        _lock_admins()
        if user.is_superuser or user.groups.filter(name=ADMIN).exists():
            _refuse_last_admin(user, what="deactivate them")
    user.is_active = active
    user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def token_create(*, user) -> Token:
    """A new API token for the user, replacing the one they had (which stops working at once).

    The caller shows its key once; pages after that show only its prefix (selectors.people.token_of).
    """
    if not user.is_active:
        raise ServiceError("A deactivated user cannot have an API token.", status=409)
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def token_revoke(*, user) -> bool:
    """Delete the user's API token; whether there was one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)
