"""Editing a project: its settings and checks are saved as one unit, and refusals name the field to fix."""

from __future__ import annotations

import pytest

from config.errors import ServiceError
from labeling_app.models import CheckQuestion, Project
from labeling_app.services.projects import CheckEdit, project_create, project_update

SETTINGS = {
    "name": "Renamed",
    "instructions": "New words",
    "completions_per_task": 4,
    "overlap": 3,
    "lease_minutes": 45,
}


def test_settings_and_checks_are_saved_together(demo_project):
    first, second = demo_project.checks.all()[:2]
    saved = project_update(
        project=demo_project,
        **SETTINGS,
        check_edits=[CheckEdit(first.pk, "Reworded?", True), CheckEdit(second.pk, second.question, False)],
        new_questions=["Mentions a competitor", "  "],
    )
    assert (saved.name, saved.overlap, saved.lease_minutes) == ("Renamed", 3, 45)
    assert set(demo_project.tasks.values_list("overlap", flat=True)) == {3}
    assert CheckQuestion.objects.get(pk=first.pk).question == "Reworded?"
    assert not CheckQuestion.objects.get(pk=second.pk).active
    assert demo_project.checks.filter(key="mentions_a_competitor").exists() and demo_project.checks.count() == 13


def test_a_bad_check_saves_nothing_at_all(demo_project):
    first, second = demo_project.checks.all()[:2]
    before = (first.question, first.active)
    with pytest.raises(ServiceError) as exc:
        project_update(
            project=demo_project,
            **SETTINGS,
            check_edits=[CheckEdit(first.pk, "Reworded?", False), CheckEdit(second.pk, "   ", True)],
            new_questions=["Mentions a competitor"],
        )
    assert exc.value.errors == {
        f"check-{second.pk}-question": ["the question is empty (untick 'asked' to stop asking it)"]
    }
    stored = Project.objects.get(pk=demo_project.pk)
    assert (stored.name, stored.instructions, stored.overlap, stored.lease_minutes) == ("Test project", "", 2, 30)
    assert set(demo_project.tasks.values_list("overlap", flat=True)) == {2}
    first.refresh_from_db()
    assert (first.question, first.active) == before
    assert demo_project.checks.count() == 12
    assert demo_project.name == "Test project"  # the caller's instance is left as it was


def test_a_name_taken_by_another_project_is_a_field_error(demo_project, researcher):
    project_create(name="Other", user=researcher)
    with pytest.raises(ServiceError) as exc:
        project_update(project=demo_project, **{**SETTINGS, "name": "Other"})
    assert exc.value.field == "name" and "already exists" in exc.value.message
    with pytest.raises(ServiceError) as exc:
        project_create(name="Other", user=researcher)
    assert exc.value.field == "name"


def test_k_is_fixed_once_tasks_exist(demo_project):
    with pytest.raises(ServiceError) as exc:
        project_update(project=demo_project, **{**SETTINGS, "completions_per_task": 3})
    assert exc.value.field == "completions_per_task" and "K cannot change" in exc.value.message
    assert Project.objects.get(pk=demo_project.pk).name == "Test project"
