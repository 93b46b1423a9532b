"""Imports record the rows they create (import_job on prompts, completions, tasks, demonstrations and
imported labels), so a finished import can be undone as a whole.

Imports from before this migration did not record it: their rows are not told apart from rows a
later import reused or a person made, so they are marked rows_recorded = false and cannot be undone
(inferring it from timestamps would be a guess, and a wrong guess deletes someone's data).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0010_page_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="annotation",
            name="import_job",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="labeling_app.importjob",
            ),
        ),
        migrations.AddField(
            model_name="completion",
            name="import_job",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="labeling_app.importjob",
            ),
        ),
        migrations.AddField(
            model_name="demonstration",
            name="import_job",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="labeling_app.importjob",
            ),
        ),
        migrations.AddField(
            model_name="importjob",
            name="rows_recorded",
            field=models.BooleanField(
                default=False, help_text="The rows this import created carry its id, so it can be undone."
            ),
        ),
        # Existing jobs got false above; jobs made from now on record their rows.
        migrations.AlterField(
            model_name="importjob",
            name="rows_recorded",
            field=models.BooleanField(
                default=True, help_text="The rows this import created carry its id, so it can be undone."
            ),
        ),
        migrations.AddField(
            model_name="importjob",
            name="undo_result",
            field=models.JSONField(blank=True, default=dict, help_text="Counts of the rows the undo deleted and kept."),
        ),
        migrations.AddField(
            model_name="importjob",
            name="undone_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="importjob",
            name="undone_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="prompt",
            name="import_job",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="labeling_app.importjob",
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="import_job",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                help_text="The import that created this row (not one that merely reused it); undo deletes by it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="labeling_app.importjob",
            ),
        ),
        migrations.AlterField(
            model_name="importjob",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("validating", "Validating"),
                    ("importing", "Importing"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("lost", "Lost"),
                    ("undone", "Undone"),
                ],
                default="queued",
                max_length=12,
            ),
        ),
    ]
