"""Projects open to a listed team: the team table, and the access rule as one SQL function the hand-out calls.

`labeling_project_open_to(project, user)` is the whole rule (a project that is not team-only, or one
whose team lists the user). The hand-out function of 0008 is replaced by the same function with one
change: a project not open to the labeler answers 'no_project' (the API's 404), before any lease of
theirs there is renewed or a new one made. The selectors call the rule too (labeling_app/selectors/labeling.py).
"""

from importlib import import_module

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


_BASE = import_module("labeling_app.migrations.0008_labeling_functions")

OPEN_TO = """
CREATE FUNCTION labeling_project_open_to(p_project bigint, p_user integer)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM labeling_app_project p
        WHERE p.id = p_project
          AND (NOT p.team_only
               OR EXISTS (SELECT 1 FROM labeling_app_projectteammember m WHERE m.project_id = p.id AND m.user_id = p_user))
    )
$$;
"""

_LEASE_LOOKUP = "FROM labeling_app_project p WHERE p.id = p_project;"
assert _BASE.CREATE.count(_LEASE_LOOKUP) == 1, "0008's hand-out changed: update the team check below"


def _or_replace(sql: str) -> str:
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")


# A project the labeler may not label is "no_project" to them, exactly like one that does not exist.
ASSIGN_WITH_TEAMS = _or_replace(
    _BASE.CREATE.replace(
        _LEASE_LOOKUP,
        "FROM labeling_app_project p WHERE p.id = p_project AND labeling_project_open_to(p.id, p_labeler);",
    )
)
ASSIGN_WITHOUT_TEAMS = _or_replace(_BASE.CREATE)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0008_labeling_functions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="team_only",
            field=models.BooleanField(
                db_default=False, default=False, help_text="Only the team's labelers may label this project."
            ),
        ),
        migrations.CreateModel(
            name="ProjectTeamMember",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("added_at", models.DateTimeField(auto_now_add=True)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="team_members",
                        to="labeling_app.project",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="project",
            name="team",
            field=models.ManyToManyField(
                blank=True,
                related_name="team_projects",
                through="labeling_app.ProjectTeamMember",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddConstraint(
            model_name="projectteammember",
            constraint=models.UniqueConstraint(fields=("project", "user"), name="team_member_once_per_project"),
        ),
        migrations.RunSQL(
            OPEN_TO + ASSIGN_WITH_TEAMS,
            ASSIGN_WITHOUT_TEAMS + "DROP FUNCTION IF EXISTS labeling_project_open_to(bigint, integer);",
        ),
    ]
