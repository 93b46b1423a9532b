"""Archived tasks: `RankingTask.archived_at`, the open-task index without them, and the hand-out that skips them.

The hand-out function of 0009 is replaced by the same function with two changes, made by string
replacement so that other changes to it compose: an archived task is never a candidate (the CANDIDATE
condition of 0008 gains `t.archived_at IS NULL`), and a labeler's own lease on an archived task does not
come back first (it stays in its row, so a restore gives the task back to them while the lease lives).
The partial index of open tasks leaves archived tasks out, so archiving a big batch of old tasks costs the
hand-out nothing; every query that reads it (the hand-out's candidates, labeler progress, the labeler's
project list) says `archived_at IS NULL`. A second index, on (project, id), serves the task browser's keyset pages.
"""

from importlib import import_module

from django.db import migrations, models

_TEAMS = import_module("labeling_app.migrations.0009_teams")

_CANDIDATE_OPEN = "t.project_id = p_project AND t.submitted_count < t.overlap"
_OWN_LEASE = "WHERE s.labeler_id = p_labeler AND t.project_id = p_project"
assert _TEAMS.ASSIGN_WITH_TEAMS.count(_CANDIDATE_OPEN) == 3, (
    "0009's hand-out changed: update the archive condition below"
)
assert _TEAMS.ASSIGN_WITH_TEAMS.count(_OWN_LEASE) == 1, "0009's hand-out changed: update the own-lease condition below"

ASSIGN_WITHOUT_ARCHIVED = _TEAMS.ASSIGN_WITH_TEAMS.replace(
    _CANDIDATE_OPEN, _CANDIDATE_OPEN + " AND t.archived_at IS NULL"
).replace(_OWN_LEASE, _OWN_LEASE + " AND t.archived_at IS NULL")


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0011_import_undo"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="rankingtask",
            name="task_open_idx",
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="archived_at",
            field=models.DateTimeField(
                blank=True, help_text="When a researcher archived it; empty while it is live.", null=True
            ),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True), ("submitted_count__lt", models.F("overlap"))),
                fields=["project", "id"],
                name="task_open_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(fields=["project", "id"], name="task_project_id_idx"),
        ),
        migrations.RunSQL(ASSIGN_WITHOUT_ARCHIVED, _TEAMS.ASSIGN_WITH_TEAMS),
    ]
