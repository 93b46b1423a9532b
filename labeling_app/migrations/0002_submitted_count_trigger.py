"""Keep RankingTask.submitted_count in the database, so the overlap CHECK holds under concurrency.

Every insert, update or delete of a submitted annotation moves the task's counter in the same
transaction. The UPDATE takes the task's row lock, so concurrent submissions for one task are
serialised, and the CHECK (submitted_count <= overlap) rejects the one that would exceed the overlap,
whoever wrote the row (the app, an import, or a hand-written INSERT).
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION labeling_annotation_submitted_count() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'submitted' THEN
        UPDATE labeling_app_rankingtask SET submitted_count = submitted_count - 1 WHERE id = OLD.task_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'submitted' THEN
        UPDATE labeling_app_rankingtask SET submitted_count = submitted_count + 1 WHERE id = NEW.task_id;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER labeling_annotation_submitted_count
AFTER INSERT OR DELETE OR UPDATE OF status, task_id ON labeling_app_annotation
FOR EACH ROW EXECUTE FUNCTION labeling_annotation_submitted_count();
"""

DROP = r"""
DROP TRIGGER IF EXISTS labeling_annotation_submitted_count ON labeling_app_annotation;
DROP FUNCTION IF EXISTS labeling_annotation_submitted_count();
"""


class Migration(migrations.Migration):
    dependencies = [("labeling_app", "0001_initial")]
    operations = [migrations.RunSQL(CREATE, DROP)]
