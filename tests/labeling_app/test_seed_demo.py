"""`seed_demo` creates a project ready to label and the three demo users, and is safe to run twice."""

import json

from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import RequestFactory

from labeling_app.models import Project
from labeling_app.roles import user_roles


def test_seed_twice_gives_one_ready_project_and_stable_logins(db, tmp_path, monkeypatch):
    import labeling_app.management.commands.seed_demo as seed

    monkeypatch.setattr(seed, "VAR_DIR", tmp_path)
    call_command("seed_demo")
    first = json.loads((tmp_path / "demo_logins.json").read_text())
    call_command("seed_demo")
    second = json.loads((tmp_path / "demo_logins.json").read_text())

    assert first == second and set(first) == {"labeler", "researcher", "admin"}
    assert (tmp_path / "demo_logins.json").stat().st_mode & 0o777 == 0o600
    project = Project.objects.get()
    assert project.tasks.count() >= 30
    for task in project.tasks.all()[:5]:
        assert task.completions.count() == project.completions_per_task == 4
        assert task.submitted_count == 0
    assert project.checks.filter(key__in=["toxic", "hallucination"]).count() == 2
    for username, password in first.items():
        user = authenticate(RequestFactory().post("/accounts/login/"), username=username, password=password)
        assert user is not None
        assert username in user_roles(user)


def test_the_demo_admin_reaches_django_admin_and_the_others_do_not(db, tmp_path, monkeypatch, client):
    import labeling_app.management.commands.seed_demo as seed
    from django.contrib.auth.models import User

    monkeypatch.setattr(seed, "VAR_DIR", tmp_path)
    call_command("seed_demo")
    logins = json.loads((tmp_path / "demo_logins.json").read_text())
    assert client.post("/accounts/login/", {"username": "admin", "password": logins["admin"]}).status_code == 302
    page = client.get("/django-admin/auth/user/")
    assert page.status_code == 200 and b"labeler" in page.content
    project_page = client.get(f"/django-admin/labeling_app/project/{Project.objects.get().pk}/change/")
    assert project_page.status_code == 200 and b"Team only" in project_page.content
    assert User.objects.get(username="admin").is_staff
    client.logout()
    assert (
        client.post("/accounts/login/", {"username": "researcher", "password": logins["researcher"]}).status_code == 302
    )
    assert client.get("/django-admin/").status_code == 302  # to Django admin's own login: not staff
