"""Create a user with its roles (Django groups labeler / researcher / admin), e.g. a deployment's first admin."""
from __future__ import annotations

import getpass
import os
import sys

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labeling_app.roles import ROLES

PASSWORD_ENV = "RLHF_USER_PASSWORD"


class Command(BaseCommand):
    help = (f"Create a user holding the given roles. The password comes from ${PASSWORD_ENV}, else it is asked "
            f"for twice. Example: manage.py create_user --role admin alice")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", action="append", choices=ROLES, required=True, dest="roles",
                            help="A role to give; repeat for several. admin includes everything a researcher may do.")
        parser.add_argument("--email", default="")
        parser.add_argument("--no-input", action="store_false", dest="interactive",
                            help=f"Never prompt: the password must be in ${PASSWORD_ENV}.")

    def handle(self, *args, username: str, roles: list[str], email: str, interactive: bool, **options):
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            raise CommandError(f"user {username!r} already exists; change its roles in /django-admin/ or pick another name")
        password = os.environ.get(PASSWORD_ENV) or self.ask_password(interactive)
        user = User(username=username, email=email)
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("password rejected: " + " ".join(exc.messages)) from None
        with transaction.atomic():
            user.set_password(password)
            user.save()
            user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in roles))
        self.stdout.write(f"Created {username!r} with the role{'s' if len(roles) > 1 else ''} {', '.join(roles)}.")

    def ask_password(self, interactive: bool) -> str:
        if not interactive or not sys.stdin.isatty():
            raise CommandError(f"no password: set ${PASSWORD_ENV}, or run this in a terminal to be asked for one")
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("the two passwords differ")
        if not password:
            raise CommandError("the password is empty")
        return password
