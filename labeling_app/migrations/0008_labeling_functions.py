"""The labeler's hand-out as one PL/pgSQL function: pick, lock and lease a task in one round trip.

`labeling_task_assign_next(project, labeler, now)` does what the queue did in a dozen statements
from Python (see labeling_app/services/leases.py for the rules), and returns in the same call what
the labeler needs to start: the task, its prompt, its completions in the labeler's shown order, and
the version of the project's checks (so the checks can come from a cache that this call validates).

Every statement inside a VOLATILE function takes a fresh snapshot under READ COMMITTED, so the
re-check of a candidate after its row lock is taken sees every lease committed before the lock,
exactly as the separate statements from Python did.
"""

from django.db import migrations

# The version of a project's checks: any insert, update or delete of one of its checks changes it
# (an update gives the row a new xmin). labeling_app/selectors/labeling.py computes the same string.
CHECKS_VERSION = """coalesce((SELECT string_agg(q.id::text || ':' || q.xmin::text, ',' ORDER BY q.id)
                           FROM labeling_app_checkquestion q WHERE q.project_id = {project}), '')"""

# Candidates: open tasks of the project, not labeled by this labeler in any way, with room left.
# "OFFSET 0" keeps each NOT EXISTS a per-row probe of a unique index: without it PostgreSQL may turn
# it into an anti-join that reads all of this labeler's annotations, which grows with their history.
CANDIDATE = """t.project_id = p_project AND t.submitted_count < t.overlap
                  AND NOT EXISTS (SELECT 1 FROM labeling_app_annotation a
                                  WHERE a.task_id = t.id AND a.labeler_id = p_labeler OFFSET 0)
                  AND NOT EXISTS (SELECT 1 FROM labeling_app_assignment s
                                  WHERE s.task_id = t.id AND s.labeler_id = p_labeler OFFSET 0)
                  AND t.submitted_count + (SELECT count(*) FROM labeling_app_assignment s
                                           WHERE s.task_id = t.id AND s.expires_at > p_now) < t.overlap
                  AND NOT (t.id = ANY(v_tried))"""

NONE_ROW = """SELECT 'none'::text, NULL::bigint, NULL::timestamptz, NULL::timestamptz, NULL::bigint, NULL::bigint,
            NULL::smallint, NULL::smallint, NULL::timestamptz, NULL::text, NULL::jsonb, NULL::jsonb, NULL::text"""

CREATE = (
    r"""
CREATE FUNCTION labeling_task_has_room(p_task bigint, p_now timestamptz, p_exclude_labeler integer)
RETURNS boolean LANGUAGE sql VOLATILE AS $$
    -- Submitted labels plus other labelers' live leases leave room for one more. Call it only while
    -- holding the task's row lock: every writer of leases takes that lock first.
    SELECT t.submitted_count + (
               SELECT count(*) FROM labeling_app_assignment s
               WHERE s.task_id = t.id AND s.expires_at > p_now AND s.labeler_id IS DISTINCT FROM p_exclude_labeler
           ) < t.overlap
    FROM labeling_app_rankingtask t WHERE t.id = p_task
$$;

CREATE FUNCTION labeling_task_assign_next(p_project bigint, p_labeler integer, p_now timestamptz)
RETURNS TABLE (
    outcome text,                 -- 'assigned', 'none' (nothing left for this labeler) or 'no_project'
    assignment_id bigint,
    assignment_created_at timestamptz,
    expires_at timestamptz,
    task_id bigint,
    task_prompt_id bigint,
    task_overlap smallint,
    task_submitted_count smallint,
    task_created_at timestamptz,
    prompt_text text,
    prompt_messages jsonb,
    completions jsonb,            -- [[completion id, text], ...] in the labeler's shown order
    checks_version text
) LANGUAGE plpgsql VOLATILE AS $$
-- The output columns share names with table columns (task_id, expires_at): in statements, a name is the column.
#variable_conflict use_column
DECLARE
    v_lease interval;
    v_own record;
    v_task bigint;
    v_candidate bigint;
    v_tried bigint[] := '{}';
BEGIN
    SELECT make_interval(mins => p.lease_minutes) INTO v_lease FROM labeling_app_project p WHERE p.id = p_project;
    IF NOT FOUND THEN
        RETURN QUERY """
    + NONE_ROW.replace("'none'", "'no_project'")
    + r""";
        RETURN;
    END IF;

    -- One hand-out per labeler at a time: a double click on "Start labeling" must not lease two tasks.
    PERFORM pg_advisory_xact_lock(30001, p_labeler);

    -- The labeler's own lease in this project on a task they have not submitted or skipped comes back first.
    SELECT s.id, s.task_id, s.expires_at INTO v_own
    FROM labeling_app_assignment s JOIN labeling_app_rankingtask t ON t.id = s.task_id
    WHERE s.labeler_id = p_labeler AND t.project_id = p_project
      AND NOT EXISTS (SELECT 1 FROM labeling_app_annotation a
                      WHERE a.task_id = s.task_id AND a.labeler_id = p_labeler AND a.status IN ('submitted', 'skipped'))
    ORDER BY s.expires_at DESC LIMIT 1;
    IF FOUND THEN
        IF v_own.expires_at > p_now THEN
            v_task := v_own.task_id;
        ELSE
            -- An expired lease is renewed only while the task still has room; otherwise it is dropped.
            PERFORM 1 FROM labeling_app_rankingtask WHERE id = v_own.task_id FOR UPDATE;
            IF labeling_task_has_room(v_own.task_id, p_now, p_labeler) THEN
                v_task := v_own.task_id;
            ELSE
                DELETE FROM labeling_app_assignment WHERE id = v_own.id;
            END IF;
        END IF;
        IF v_task IS NOT NULL THEN
            UPDATE labeling_app_assignment SET expires_at = p_now + v_lease WHERE id = v_own.id;
            -- Gone meanwhile (the labeler's own submit or skip of it committed first): hand out another.
            IF NOT FOUND THEN
                v_task := NULL;
            END IF;
        END IF;
        IF v_task IS NOT NULL THEN
            -- A lease without its draft (renewed after the draft was gone) gets one.
            INSERT INTO labeling_app_annotation (task_id, labeler_id, status, shown_order, draft, comment, skip_reason,
                                                 started_at, updated_at)
            SELECT v_task, p_labeler, 'draft', (SELECT jsonb_agg(tc.completion_id ORDER BY random())
                                                FROM labeling_app_taskcompletion tc WHERE tc.task_id = v_task),
                   '{}', '', '', p_now, p_now
            ON CONFLICT (task_id, labeler_id) DO NOTHING;
        END IF;
    END IF;

    IF v_task IS NULL THEN
        -- Oldest first among the candidates (CANDIDATE above); rows another transaction is assigning
        -- are skipped. Tasks someone already started (a submitted label, or a live lease) are finished
        -- first, so labels complete tasks instead of spreading thin; both sources are small sets reached
        -- by index, and the materialized CTE makes the query start from them.
        FOR attempt IN 1..16 LOOP
            WITH started AS MATERIALIZED (
                SELECT st.id FROM labeling_app_rankingtask st
                WHERE st.project_id = p_project AND st.submitted_count > 0 AND st.submitted_count < st.overlap
                UNION
                SELECT s.task_id FROM labeling_app_assignment s WHERE s.expires_at > p_now
            )
            SELECT t.id INTO v_candidate FROM started c JOIN labeling_app_rankingtask t ON t.id = c.id
            WHERE """
    + CANDIDATE
    + r"""
            ORDER BY c.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED;
            IF v_candidate IS NULL THEN
                -- Any open task, oldest first, walking task_open_idx.
                SELECT t.id INTO v_candidate FROM labeling_app_rankingtask t WHERE """
    + CANDIDATE
    + r"""
                ORDER BY t.project_id, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED;
            END IF;
            IF v_candidate IS NULL THEN
                -- Every candidate is locked by a concurrent hand-out (a nearly empty queue, or overlap > 1
                -- with a burst of requests): wait for the lock instead of wrongly answering "none left".
                SELECT t.id INTO v_candidate FROM labeling_app_rankingtask t WHERE """
    + CANDIDATE
    + r"""
                ORDER BY t.project_id, t.id LIMIT 1 FOR UPDATE OF t;
            END IF;
            EXIT WHEN v_candidate IS NULL;
            -- The candidate query's snapshot may predate a lease committed just before we locked the
            -- row; re-check under the lock (this statement sees it) and try the next one if full.
            IF labeling_task_has_room(v_candidate, p_now, NULL) THEN
                v_task := v_candidate;
                EXIT;
            END IF;
            v_tried := v_tried || v_candidate;
            v_candidate := NULL;
        END LOOP;
        IF v_task IS NULL THEN
            RETURN QUERY """
    + NONE_ROW
    + r""";
            RETURN;
        END IF;
        INSERT INTO labeling_app_assignment (task_id, labeler_id, created_at, expires_at)
        VALUES (v_task, p_labeler, p_now, p_now + v_lease);
        -- The candidate queries excluded tasks this labeler has any annotation on: the draft is new.
        -- It records the random order the completions are shown in, so position bias can be measured.
        INSERT INTO labeling_app_annotation (task_id, labeler_id, status, shown_order, draft, comment, skip_reason,
                                             started_at, updated_at)
        VALUES (v_task, p_labeler, 'draft', (SELECT jsonb_agg(tc.completion_id ORDER BY random())
                                             FROM labeling_app_taskcompletion tc WHERE tc.task_id = v_task),
                '{}', '', '', p_now, p_now);
    END IF;

    RETURN QUERY
    SELECT 'assigned'::text, s.id, s.created_at, s.expires_at, t.id, t.prompt_id, t.overlap::smallint,
           t.submitted_count::smallint, t.created_at, p.text, p.messages::jsonb,
           (SELECT jsonb_agg(jsonb_build_array(c.id, c.text) ORDER BY o.ord, c.id)
            FROM labeling_app_taskcompletion tc JOIN labeling_app_completion c ON c.id = tc.completion_id
            LEFT JOIN jsonb_array_elements_text(a.shown_order) WITH ORDINALITY AS o(completion_id, ord)
                   ON o.completion_id::bigint = c.id
            WHERE tc.task_id = t.id),
           """
    + CHECKS_VERSION.format(project="p_project")
    + r"""
    FROM labeling_app_assignment s
    JOIN labeling_app_rankingtask t ON t.id = s.task_id
    JOIN labeling_app_prompt p ON p.id = t.prompt_id
    JOIN labeling_app_annotation a ON a.task_id = t.id AND a.labeler_id = p_labeler
    WHERE s.task_id = v_task AND s.labeler_id = p_labeler;
    IF NOT FOUND THEN
        -- Only if someone deleted the lease just made (an admin, a TRUNCATE): nothing to hand out now.
        RETURN QUERY """
    + NONE_ROW
    + r""";
    END IF;
END;
$$;
"""
)

DROP = r"""
DROP FUNCTION IF EXISTS labeling_task_assign_next(bigint, integer, timestamptz);
DROP FUNCTION IF EXISTS labeling_task_has_room(bigint, timestamptz, integer);
"""


class Migration(migrations.Migration):
    dependencies = [("labeling_app", "0007_import_identity")]
    operations = [migrations.RunSQL(CREATE, DROP)]
