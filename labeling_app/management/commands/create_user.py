"""Create a user with its roles (Django groups labeler / researcher / admin), e.g. a deployment's first admin.

It calls the same service as the People page (labeling_app.services.people.user_create)."""

from __future__ import annotations

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from config.errors import ServiceError
from labeling_app.roles import ROLES
from labeling_app.services.people import user_create

PASSWORD_ENV = "RLHF_USER_PASSWORD"


class Command(BaseCommand):
    help = (
        f"Create a user holding the given roles. The password comes from ${PASSWORD_ENV}, else it is asked "
        f"for twice. Example: manage.py create_user --role admin alice"
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            action="append",
            choices=ROLES,
            required=True,
            dest="roles",
            help="A role to give; repeat for several. admin includes everything a researcher may do.",
        )
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--no-input",
            action="store_false",
            dest="interactive",
            help=f"Never prompt: the password must be in ${PASSWORD_ENV}.",
        )

    def handle(self, *args, username: str, roles: list[str], email: str, interactive: bool, **options):
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            raise CommandError(
                f"user {username!r} already exists; change its roles on the People page (/people/) or pick another name"
            )
        password = os.environ.get(PASSWORD_ENV) or self.ask_password(interactive)
        try:
            user_create(username=username, email=email, roles=roles, password=password)
        except ServiceError as exc:
            if exc.field == "password":
                raise CommandError("password rejected: " + " ".join(exc.errors["password"])) from None
            raise CommandError(f"{exc.field}: {exc}" if exc.field != "non_field_errors" else str(exc)) from None
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
