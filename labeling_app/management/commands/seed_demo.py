"""Seed a demo project (prompts with four completions each, ready to label) and three demo users."""

from __future__ import annotations

import json
import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from config.env import VAR_DIR
from labeling_app.demo_data import DEMO_PROMPTS, demo_completions
from labeling_app.models import Completion, Project, Prompt
from labeling_app.services.projects import project_create, task_create

DEMO_PROJECT = "Demo: assistant answers"
DEMO_USERS = (("labeler", "labeler"), ("researcher", "researcher"), ("admin", "admin"))
INSTRUCTIONS = """Rate each answer from **1** (terrible) to **7** (excellent) for how helpful, truthful and harmless it is.

- Answer every yes/no check for every answer.
- Then rank the answers from best to worst; equal answers may share a rank.
- Made-up facts (*fabrication*) and rude or hateful language (*toxicity*) are the most serious problems.
"""


def demo_logins_path():
    return VAR_DIR / "demo_logins.json"


class Command(BaseCommand):
    help = (
        "Create the demo users (passwords generated once, kept in var/demo_logins.json; the admin is also a Django "
        "superuser, for /django-admin/) and the demo project."
    )

    def handle(self, *args, **options):
        logins = self.ensure_users()
        project, created = self.ensure_project()
        self.stdout.write(
            f"Demo project {project.name!r}: {'created' if created else 'already there'}, {project.tasks.count()} tasks"
        )
        for username, password in logins.items():
            self.stdout.write(f"  login {username} / {password}")

    def ensure_users(self) -> dict[str, str]:
        path = demo_logins_path()
        stored = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        for username, role in DEMO_USERS:
            password = stored.get(username) or secrets.token_urlsafe(9)
            user, created = User.objects.get_or_create(username=username)
            if created or not user.check_password(password):
                user.set_password(password)
            # The demo admin also reaches Django admin (/django-admin/): staff, with every model permission.
            user.is_staff = user.is_superuser = role == "admin"
            user.save()
            user.groups.add(Group.objects.get_or_create(name=role)[0])
            stored[username] = password
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return stored

    @transaction.atomic
    def ensure_project(self) -> tuple[Project, bool]:
        existing = Project.objects.filter(name=DEMO_PROJECT).first()
        if existing:
            return existing, False
        researcher = get_user_model().objects.get(username="researcher")
        project = project_create(
            name=DEMO_PROJECT, user=researcher, instructions=INSTRUCTIONS, completions_per_task=4, overlap=2
        )
        for i, (prompt_text, careful, flawed) in enumerate(DEMO_PROMPTS):
            prompt = Prompt.objects.create(project=project, text=prompt_text, source="demo", created_by=researcher)
            completions = [
                Completion.objects.create(
                    prompt=prompt, text=text, source=Completion.Source.IMPORTED, model_name="demo"
                )
                for text in demo_completions(careful, flawed)
            ]
            task_create(project=project, prompt=prompt, completions=completions, shuffle_seed=i)
        return project, True
