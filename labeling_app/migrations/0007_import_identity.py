"""Identity keys for imported rows, so that importing the same file twice changes nothing.

Existing rows get their keys here (back-fill), before the partial unique indexes are built. Data
imported twice before this migration is kept as it is: in each group of identical rows the oldest
gets the key (a later re-import reuses or skips against it) and the later copies keep NULL, which
the indexes ignore. Nothing is deleted or merged: the copies may carry labels, and which copy a
researcher wants to keep is their call, not a migration's.
"""

from collections import defaultdict

from django.conf import settings
from django.db import migrations, models

from labeling_app.imports.identity import completion_key, demonstration_key, label_key, task_key

PAGE = 2000


def _back_fill(cursor, table: str, select_sql: str, keys_for) -> None:
    """Give rows of `table` their import key, page by page.

    `select_sql` returns (id, parent id, ...) ordered by (parent id, id) after the (parent, id) pair
    it is given, PAGE rows at most; `keys_for(rows)` returns per row (scope, key) or None (no key).
    Within one parent and scope the first row with a key gets it, the later copies keep NULL.
    """
    last = (-1, -1)
    parent, seen = None, set()
    while True:
        cursor.execute(select_sql, [last[0], last[1], PAGE])
        rows = cursor.fetchall()
        if not rows:
            return
        ids, keys = [], []
        for row, scoped in zip(rows, keys_for(rows)):
            if row[1] != parent:
                parent, seen = row[1], set()
            if scoped is None or scoped in seen:
                continue
            seen.add(scoped)
            ids.append(row[0])
            keys.append(scoped[1])
        cursor.execute(
            f"UPDATE {table} AS t SET import_key = u.k FROM unnest(%s::bigint[], %s::text[]) AS u(i, k) "
            f"WHERE t.id = u.i",
            [ids, keys],
        )
        last = (rows[-1][1], rows[-1][0])


def _label_keys(cursor, rows) -> list:
    """(import source, label key) of imported annotations (id, task id, import source id), from their rating rows."""
    ids = [row[0] for row in rows]
    cursor.execute(
        "SELECT r.annotation_id, r.id, r.completion_id, r.rank, r.likert FROM labeling_app_rating r "
        "WHERE r.annotation_id = ANY(%s)",
        [ids],
    )
    ratings = cursor.fetchall()
    cursor.execute(
        "SELECT a.rating_id, q.key, a.value FROM labeling_app_checkanswer a "
        "JOIN labeling_app_checkquestion q ON q.id = a.check_question_id WHERE a.rating_id = ANY(%s)",
        [[r[1] for r in ratings]],
    )
    answers = defaultdict(dict)
    for rating_id, key, value in cursor.fetchall():
        answers[rating_id][key] = value
    per_annotation = defaultdict(list)
    for annotation_id, rating_id, completion_id, rank, likert in ratings:
        per_annotation[annotation_id].append((completion_id, rank, likert, answers.get(rating_id)))
    return [(row[2], label_key(per_annotation[row[0]])) if per_annotation[row[0]] else None for row in rows]


def back_fill_import_keys(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        _back_fill(
            cursor,
            "labeling_app_completion",
            "SELECT id, prompt_id, model_name, text FROM labeling_app_completion "
            "WHERE source = 'imported' AND (prompt_id, id) > (%s, %s) ORDER BY prompt_id, id LIMIT %s",
            lambda rows: [(None, completion_key(text, model)) for _, _, model, text in rows],
        )
        _back_fill(
            cursor,
            "labeling_app_demonstration",
            "SELECT id, prompt_id, text FROM labeling_app_demonstration "
            "WHERE source <> 'written' AND (prompt_id, id) > (%s, %s) ORDER BY prompt_id, id LIMIT %s",
            lambda rows: [(None, demonstration_key(text)) for _, _, text in rows],
        )
        # Only tasks made entirely of imported completions: those are the ones an import can make again.
        _back_fill(
            cursor,
            "labeling_app_rankingtask",
            "SELECT t.id, t.prompt_id, array_agg(tc.completion_id), bool_and(c.source = 'imported'), "
            "       EXISTS (SELECT 1 FROM labeling_app_annotation a WHERE a.task_id = t.id AND a.import_source_id IS NOT NULL) "
            "FROM labeling_app_rankingtask t JOIN labeling_app_taskcompletion tc ON tc.task_id = t.id "
            "JOIN labeling_app_completion c ON c.id = tc.completion_id "
            "WHERE (t.prompt_id, t.id) > (%s, %s) GROUP BY t.id ORDER BY t.prompt_id, t.id LIMIT %s",
            lambda rows: [
                (None, task_key(ids, labels=labels)) if imported else None for _, _, ids, imported, labels in rows
            ],
        )
        _back_fill(
            cursor,
            "labeling_app_annotation",
            "SELECT id, task_id, import_source_id FROM labeling_app_annotation "
            "WHERE import_source_id IS NOT NULL AND (task_id, id) > (%s, %s) ORDER BY task_id, id LIMIT %s",
            lambda rows: _label_keys(cursor, rows),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0006_check_polarity"),
        ("rlhf_worker", "0002_reward_completion_score"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="annotation",
            name="import_key",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="Imported labels: identity of the ranks, ratings and checks given.",
                max_length=64,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="completion",
            name="import_key",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="Imported completions: identity of text + model name under the prompt.",
                max_length=64,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="demonstration",
            name="import_key",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="Identity of the imported line that made it (labeling_app.imports.identity); kept when the text is edited, so a re-import does not bring the old text back.",
                max_length=64,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="importjob",
            name="file_purged_at",
            field=models.DateTimeField(
                blank=True, help_text="When the upload was deleted (IMPORT_RETENTION_DAYS).", null=True
            ),
        ),
        migrations.AddField(
            model_name="importjob",
            name="heartbeat_at",
            field=models.DateTimeField(
                blank=True, help_text="Written while the job runs; an old one means its worker died.", null=True
            ),
        ),
        migrations.AddField(
            model_name="importjob",
            name="skip_invalid",
            field=models.BooleanField(
                default=False,
                help_text="Import the valid lines and report the bad ones, instead of refusing the whole file.",
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="import_key",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="Tasks of imported completions: identity of the completion set and purpose.",
                max_length=64,
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="importjob",
            name="errors",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="[{line, field, message}]: a failed file's first 100, or every line a skip-invalid import skipped (up to 10,000).",
            ),
        ),
        migrations.AlterField(
            model_name="importjob",
            name="file_path",
            field=models.CharField(
                blank=True,
                help_text="The saved upload under IMPORT_DIR; empty once a rejected upload is purged.",
                max_length=500,
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
                ],
                default="queued",
                max_length=12,
            ),
        ),
        migrations.RunPython(back_fill_import_keys, migrations.RunPython.noop, elidable=False),
        migrations.AddConstraint(
            model_name="annotation",
            constraint=models.UniqueConstraint(
                condition=models.Q(("import_key__isnull", False)),
                fields=("task", "import_source", "import_key"),
                name="annotation_import_key_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="completion",
            constraint=models.UniqueConstraint(
                condition=models.Q(("import_key__isnull", False)),
                fields=("prompt", "import_key"),
                name="completion_import_key_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="demonstration",
            constraint=models.UniqueConstraint(
                condition=models.Q(("import_key__isnull", False)),
                fields=("prompt", "import_key"),
                name="demonstration_import_key_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="rankingtask",
            constraint=models.UniqueConstraint(
                condition=models.Q(("import_key__isnull", False)),
                fields=("prompt", "import_key"),
                name="task_import_key_unique",
            ),
        ),
    ]
