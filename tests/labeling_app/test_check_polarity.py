"""Check polarity: the data migration that sets it on existing projects, and its edits as one project save."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from config.errors import ServiceError
from labeling_app.models import DEFAULT_CHECKS, CheckQuestion, Project
from labeling_app.services.projects import CheckEdit, NewCheck, project_create, project_update

SETTINGS = {"name": "Test project", "instructions": "", "completions_per_task": 4, "overlap": 2, "lease_minutes": 30}


def polarity_migration():
    """The migration module that adds the polarity (found by name: its number may change when branches merge)."""
    (path,) = Path(importlib.import_module("labeling_app.migrations").__file__).parent.glob("*_check_polarity.py")
    return path.stem, importlib.import_module(f"labeling_app.migrations.{path.stem}")


def polarity(project: Project) -> dict[str, tuple[bool, bool]]:
    return {c.key: (c.problem_answer, c.serious) for c in project.checks.all()}


def test_the_data_migration_sets_polarity_on_existing_projects(researcher):
    old = project_create(name="Made before polarity", user=researcher)
    custom = CheckQuestion.objects.create(project=old, key="cites_sources", question="Cites its sources", position=20)
    # As the schema step leaves every row: the column's default on all of them.
    CheckQuestion.objects.update(problem_answer=True, serious=True)
    name, migration = polarity_migration()
    historical = MigrationLoader(connection).project_state(("labeling_app", name)).apps
    migration.set_check_polarity(historical, None)

    got = polarity(old)
    assert got["satisfies_constraints"] == (False, True)  # "no" is the problem
    assert got["toxic"] == got["hallucination"] == (True, True)  # "yes" is the problem
    assert got["expresses_opinion"] == got["moral_judgment"] == (True, False)  # mild: never decided the KTO label
    # A project's own check: "yes" is a problem, and it stays out of the KTO label as it was until a researcher says.
    custom.refresh_from_db()
    assert (custom.problem_answer, custom.serious) == (True, False)
    # The migration reads as the defaults a new project gets.
    assert {k: v for k, v in got.items() if k != "cites_sources"} == {
        c.key: (c.problem_answer, c.serious) for c in DEFAULT_CHECKS
    }


def test_a_new_project_takes_the_polarity_of_the_defaults_and_of_given_checks(researcher):
    project = project_create(name="Defaults", user=researcher)
    assert polarity(project)["satisfies_constraints"] == (False, True)
    assert polarity(project)["expresses_opinion"] == (True, False)
    given = project_create(
        name="Given", user=researcher, checks=[("toxic", "Toxic?"), ("on_topic", "Stays on topic", False)]
    )
    assert polarity(given) == {"toxic": (True, True), "on_topic": (False, True)}


def test_polarity_and_severity_edits_are_saved_with_the_project(demo_project):
    satisfies = demo_project.checks.get(key="satisfies_constraints")
    toxic = demo_project.checks.get(key="toxic")
    opinion = demo_project.checks.get(key="expresses_opinion")
    project_update(
        project=demo_project,
        **SETTINGS,
        check_edits=[
            CheckEdit(satisfies.pk, satisfies.question, True, problem_answer=True),
            CheckEdit(toxic.pk, toxic.question, True, serious=False),
            CheckEdit(opinion.pk, opinion.question, True),  # None: polarity and severity kept
        ],
        new_questions=[
            NewCheck("Cites its sources", problem_answer=False),
            NewCheck("Rambles", serious=False),
            "Plain",
        ],
    )
    got = polarity(demo_project)
    assert got["satisfies_constraints"] == (True, True) and got["toxic"] == (True, False)
    assert got["expresses_opinion"] == (True, False)
    assert (got["cites_its_sources"], got["rambles"], got["plain"]) == ((False, True), (True, False), (True, True))


def test_a_refused_edit_keeps_the_old_polarity(demo_project):
    satisfies = demo_project.checks.get(key="satisfies_constraints")
    toxic = demo_project.checks.get(key="toxic")
    with pytest.raises(ServiceError):
        project_update(
            project=demo_project,
            **SETTINGS,
            check_edits=[
                CheckEdit(satisfies.pk, satisfies.question, True, problem_answer=True),
                CheckEdit(toxic.pk, "  ", True),
            ],
        )
    assert polarity(demo_project)["satisfies_constraints"] == (False, True)


def test_researcher_sets_polarity_and_severity_on_the_form(client, researcher, demo_project):
    client.force_login(researcher)
    page = client.get(f"/projects/{demo_project.pk}/edit/").content.decode()
    satisfies = demo_project.checks.get(key="satisfies_constraints")
    row = page[page.index('data-check="satisfies_constraints"') :]
    row = row[: row.index("</tr>")]
    assert f'name="check-{satisfies.pk}-problem"' in row and '<option value="no" selected>No</option>' in row
    data = {
        **SETTINGS,
        "new_question": ["Cites its sources", "Rambles"],
        "new_problem": ["no", "yes"],
        "new_severity": ["serious", "mild"],
    }
    for check in demo_project.checks.all():
        data[f"check-{check.pk}-question"] = check.question
        data[f"check-{check.pk}-active"] = "on"
        data[f"check-{check.pk}-problem"] = check.problem_word
        data[f"check-{check.pk}-severity"] = "serious" if check.serious else "mild"
    toxic = demo_project.checks.get(key="toxic")
    data[f"check-{satisfies.pk}-problem"] = "yes"
    data[f"check-{toxic.pk}-severity"] = "mild"
    response = client.post(f"/projects/{demo_project.pk}/edit/", data)
    assert response.status_code == 302
    got = polarity(demo_project)
    assert got["satisfies_constraints"] == (True, True) and got["toxic"] == (True, False)
    assert got["cites_its_sources"] == (False, True) and got["rambles"] == (True, False)
    # A value the form does not offer is a field error, and nothing is saved.
    data[f"check-{toxic.pk}-problem"] = "maybe"
    data[f"check-{satisfies.pk}-problem"] = "no"
    response = client.post(f"/projects/{demo_project.pk}/edit/", data)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert polarity(demo_project)["satisfies_constraints"] == (True, True)


def test_the_labeling_api_says_which_answer_is_a_problem(client, labeler, demo_project):
    client.force_login(labeler)
    body = client.post(f"/api/label/projects/{demo_project.pk}/next/").json()
    by_key = {c["key"]: c["problem_answer"] for c in body["checks"]}
    assert by_key["satisfies_constraints"] is False and by_key["toxic"] is True
    task_page = client.get(body["url"]).content.decode()
    row = task_page[task_page.index('data-check="satisfies_constraints"') :]
    assert 'data-problem="no"' in row[:200]
