"""An index for the prompts page: a project's prompts, newest first."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("labeling_app", "0009_teams")]

    operations = [
        migrations.AddIndex(
            model_name="prompt",
            index=models.Index(fields=["project", "id"], name="prompt_project_id_idx"),
        ),
    ]
