"""People pages: the admin's list of users (create, invite, roles, deactivate), the set-password link, and
every user's profile with their API token."""

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_POST

from config.errors import ServiceError
from labeling_app.forms import call_service
from labeling_app.roles import ADMIN, ROLES, role_required, user_roles
from labeling_app.selectors import people as sel
from labeling_app.services.people import (
    token_create,
    token_revoke,
    user_create,
    user_invite_path,
    user_set_active,
    user_set_roles,
)

ROLE_CHOICES = [(r, r.title()) for r in ROLES]


class PersonForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="Letters, digits and @ . + - _ only.")
    email = forms.EmailField(required=False)
    roles = forms.MultipleChoiceField(
        choices=ROLE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        initial=["labeler"],
        help_text="Admin includes everything a researcher may do.",
    )


class RolesForm(forms.Form):
    roles = forms.MultipleChoiceField(choices=ROLE_CHOICES, widget=forms.CheckboxSelectMultiple)


def _people_page(request, *, form=None, invite=None, status=200):
    return render(
        request,
        "people/list.html",
        {
            "people": sel.people_list(),
            "form": form or PersonForm(),
            "invite": invite,
            "role_choices": ROLE_CHOICES,
        },
        status=status,
    )


def _invite(request, user) -> dict:
    return {"user": user, "link": request.build_absolute_uri(user_invite_path(user=user))}


@role_required(ADMIN)
def people_list(request):
    return _people_page(request)


@require_POST
@role_required(ADMIN)
def person_create(request):
    """Create a user without a password and show their one-time set-password link, on this answer only."""
    form = PersonForm(request.POST)
    user = form.is_valid() and call_service(
        form,
        user_create,
        username=form.cleaned_data["username"],
        email=form.cleaned_data["email"],
        roles=form.cleaned_data["roles"],
    )
    if not user:
        return _people_page(request, form=form, status=400)
    return _people_page(request, invite=_invite(request, user))


@require_POST
@role_required(ADMIN)
def person_invite(request, user_id: int):
    user = sel.person_or_404(user_id)
    try:
        invite = _invite(request, user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("people:list")
    return _people_page(request, invite=invite)


@require_POST
@role_required(ADMIN)
def person_roles(request, user_id: int):
    user = sel.person_or_404(user_id)
    form = RolesForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Roles of {user.username} not changed: tick at least one role.")
        return redirect("people:list")
    try:
        user_set_roles(user=user, roles=form.cleaned_data["roles"])
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{user.username} now holds: {', '.join(form.cleaned_data['roles'])}.")
    return redirect("people:list")


@require_POST
@role_required(ADMIN)
def person_active(request, user_id: int):
    user = sel.person_or_404(user_id)
    active = request.POST.get("active") == "1"
    try:
        user_set_active(user=user, active=active)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"{user.username} {'reactivated' if active else 'deactivated: they can no longer log in or use their API token; their labels stay'}.",
        )
    return redirect("people:list")


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The one-time link from the People page: Django's password-reset confirmation, for active users only."""

    template_name = "people/set_password.html"
    success_url = reverse_lazy("login")
    reset_url_token = "set-password"

    def get_user(self, uidb64):
        user = super().get_user(uidb64)
        return user if user is not None and user.is_active else None

    def form_valid(self, form):
        messages.success(self.request, f"Password set for {form.user.username}. Log in with it now.")
        return super().form_valid(form)


def _profile_page(request, *, token, new_key=None):
    roles = user_roles(request.user)
    return render(
        request,
        "people/profile.html",
        {
            "token": token,
            "new_key": new_key,
            "prefix_chars": sel.TOKEN_PREFIX_CHARS,
            "role_names": [r for r in ROLES if r in roles],
        },
    )


@login_required
def profile(request):
    return _profile_page(request, token=sel.token_of(request.user))


@require_POST
@login_required
def profile_token_create(request):
    """A new token (replacing any), its full key shown on this answer only."""
    token = token_create(user=request.user)
    return _profile_page(request, token=token, new_key=token.key)


@require_POST
@login_required
def profile_token_revoke(request):
    if token_revoke(user=request.user):
        messages.success(request, "API token revoked: requests with it are now refused.")
    else:
        messages.info(request, "You had no API token.")
    return redirect("profile")
