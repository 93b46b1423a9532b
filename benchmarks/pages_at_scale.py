"""Every researcher, admin and labeler page (and API read) timed at campaign size: p50/p95 server time per page and role.

The script creates its own PostgreSQL database (`<name of DATABASE_URL's database>_pages`, dropped and
made anew), migrates it and seeds it with COPY (psycopg 3): 50 projects, 1,000,000 completions (K = 4,
one task per prompt, so 250,000 prompts and tasks), 200,000 submitted labels (overlap 2: two labels on
each labeled task from 20 labelers, plus imported labels), their 800,000 ratings and three check
answers per rating, spread over 30 days. `--scale` shrinks every count but the projects (0.05 for a
quick run). Then it asks each page in-process through Django's test client as each role that may see
it (logged in, DEBUG off) `--repeats` times after one warm-up request, and prints p50/p95/max of the
server time (the view, its queries and the template: the test client adds no network) and the
number of SQL queries of one request. Target: p95 <= 300 ms on every page.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/4 \\
      .venv/bin/python benchmarks/pages_at_scale.py --scale 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labeling_load import copy_rows, create_database, with_db  # noqa: E402
from machine_info import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
K = 4
PROJECTS = 50
LABELERS = 20
CHECKS_ANSWERED = 3  # of the 12 default checks, per rating (the rest unanswered): 2.4M answers at full size
DAYS = 30
TARGET_MS = 300.0


def sizes(scale: float) -> dict:
    completions = int(1_000_000 * scale)
    tasks = completions // K
    return {
        "projects": PROJECTS,
        "completions": tasks * K,
        "tasks": tasks,
        "prompts": tasks,
        "labels": int(200_000 * scale),
    }


def setup_django(db_url: str) -> None:
    os.environ.update(
        DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="config.settings_test", DEBUG="0", API_THROTTLE_USER="1000000/min"
    )
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    import django

    django.setup()


def seed(db_url: str, n: dict, rng: random.Random) -> dict:
    """Rows by COPY; the annotation-count trigger is off (session_replication_role) and the counts are written directly."""
    from django.contrib.auth.models import Group, User

    from labeling_app.models import DEFAULT_CHECKS

    researcher = User.objects.create_user("bench_researcher", password="x")
    researcher.groups.add(Group.objects.get_or_create(name="researcher")[0])
    admin = User.objects.create_user("bench_admin", password="x", is_staff=True, is_superuser=True)
    admin.groups.add(Group.objects.get_or_create(name="admin")[0])
    labeler_group = Group.objects.get_or_create(name="labeler")[0]
    labelers = []
    for i in range(LABELERS):
        u = User.objects.create_user(f"bench_labeler{i}", password="x")
        u.groups.add(labeler_group)
        labelers.append(u.pk)

    now = datetime.now(UTC)
    start = now - timedelta(days=DAYS)
    per_project = n["tasks"] // PROJECTS
    labeled_tasks = n["labels"] // 2  # overlap 2: every labeled task has two labels
    imported_every = 10  # one labeled task in ten carries an imported label and a human one
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        copy_rows(
            cur,
            "labeling_app_project",
            [
                "id",
                "name",
                "instructions",
                "completions_per_task",
                "overlap",
                "lease_minutes",
                "created_at",
                "created_by_id",
            ],
            (
                (p, f"Bench project {p:02d}", "Rank the answers.", K, 2, 30, start, researcher.pk)
                for p in range(1, PROJECTS + 1)
            ),
        )
        copy_rows(
            cur,
            "labeling_app_checkquestion",
            ["id", "project_id", "key", "question", "position", "active", "problem_answer", "serious"],
            (
                ((p - 1) * len(DEFAULT_CHECKS) + i + 1, p, c.key, c.question, i, True, c.problem_answer, c.serious)
                for p in range(1, PROJECTS + 1)
                for i, c in enumerate(DEFAULT_CHECKS)
            ),
        )
        cur.execute(
            "INSERT INTO labeling_app_importsource (id, name, description, created_at) VALUES (1, 'bench-public', '', now())"
        )

        def project_of(t: int) -> int:
            return min((t - 1) // per_project, PROJECTS - 1) + 1

        copy_rows(
            cur,
            "labeling_app_prompt",
            ["id", "project_id", "text", "content_hash", "source", "created_at"],
            (
                (t, project_of(t), f"Bench prompt {t}: explain idea {t}.", f"{t:064x}", "bench", start)
                for t in range(1, n["tasks"] + 1)
            ),
        )
        copy_rows(
            cur,
            "labeling_app_completion",
            ["id", "prompt_id", "text", "source", "model_name", "sampling", "created_at"],
            (
                (
                    (t - 1) * K + j + 1,
                    t,
                    f"Answer {j} to prompt {t}: " + "lorem ipsum " * (5 + j),
                    "imported",
                    "bench",
                    "{}",
                    start,
                )
                for t in range(1, n["tasks"] + 1)
                for j in range(K)
            ),
        )
        # Labeled tasks are spread over the projects: task t is labeled when its index in its project is low enough.
        labeled_per_project = labeled_tasks // PROJECTS

        def labeled(t: int) -> bool:
            return (t - 1) % per_project < labeled_per_project and (t - 1) // per_project < PROJECTS

        copy_rows(
            cur,
            "labeling_app_rankingtask",
            ["id", "project_id", "prompt_id", "overlap", "submitted_count", "created_at"],
            ((t, project_of(t), t, 2, 2 if labeled(t) else 0, start) for t in range(1, n["tasks"] + 1)),
        )
        copy_rows(
            cur,
            "labeling_app_taskcompletion",
            ["id", "task_id", "completion_id", "position"],
            (((t - 1) * K + j + 1, t, (t - 1) * K + j + 1, j) for t in range(1, n["tasks"] + 1) for j in range(K)),
        )

        annotations, ratings, answers = [], [], []
        annotation_id = rating_id = 0
        for t in (t for t in range(1, n["tasks"] + 1) if labeled(t)):
            first = rng.randrange(LABELERS)
            second = (first + 1 + rng.randrange(LABELERS - 1)) % LABELERS
            completion_ids = [(t - 1) * K + j + 1 for j in range(K)]
            base = rng.sample(range(1, K + 1), K)
            p = project_of(t)
            authors = [("h", labelers[first]), ("i" if t % imported_every == 0 else "h", labelers[second])]
            for kind, labeler in authors:
                annotation_id += 1
                submitted = start + timedelta(seconds=rng.randrange(DAYS * 86400))
                shown = rng.sample(completion_ids, K)
                ranks = base if rng.random() < 0.7 else rng.sample(range(1, K + 1), K)
                annotations.append(
                    (
                        annotation_id,
                        t,
                        labeler if kind == "h" else None,
                        1 if kind == "i" else None,
                        "submitted",
                        json.dumps(shown),
                        "{}",
                        "",
                        "",
                        f"{annotation_id:x}" if kind == "i" else None,
                        submitted - timedelta(seconds=rng.randrange(20, 400)),
                        submitted,
                        submitted,
                    )
                )
                for j, c in enumerate(completion_ids):
                    rating_id += 1
                    likert = None if kind == "i" else max(1, min(7, 8 - 2 * ranks[j] + rng.randrange(-1, 2)))
                    ratings.append((rating_id, annotation_id, c, likert, ranks[j]))
                    if kind == "h":
                        for q in rng.sample(range(12), CHECKS_ANSWERED):
                            answers.append((rating_id, (p - 1) * 12 + q + 1, rng.random() < 0.2))
        copy_rows(
            cur,
            "labeling_app_annotation",
            [
                "id",
                "task_id",
                "labeler_id",
                "import_source_id",
                "status",
                "shown_order",
                "draft",
                "comment",
                "skip_reason",
                "import_key",
                "started_at",
                "updated_at",
                "submitted_at",
            ],
            annotations,
        )
        copy_rows(cur, "labeling_app_rating", ["id", "annotation_id", "completion_id", "likert", "rank"], ratings)
        copy_rows(cur, "labeling_app_checkanswer", ["rating_id", "check_question_id", "value"], answers)
        for table in (
            "project",
            "checkquestion",
            "prompt",
            "completion",
            "rankingtask",
            "taskcompletion",
            "annotation",
            "rating",
            "importsource",
        ):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('labeling_app_{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM labeling_app_{table}))"
            )
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
        cur.execute(
            "SELECT (SELECT count(*) FROM labeling_app_completion), (SELECT count(*) FROM labeling_app_annotation),"
            " (SELECT count(*) FROM labeling_app_rating), (SELECT count(*) FROM labeling_app_checkanswer)"
        )
        counted = dict(zip(("completions", "labels", "ratings", "check answers"), cur.fetchone()))
    return {
        "researcher": researcher,
        "admin": admin,
        "labeler": User.objects.get(pk=labelers[0]),
        "counted": counted,
        "labeler_ids": labelers,
    }


def pages(ctx: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, path, roles) of every page and API read a researcher, admin or labeler opens."""
    from labeling_app.models import Annotation, Project, Prompt, RankingTask

    project = Project.objects.order_by("id")[PROJECTS // 2]
    prompt = Prompt.objects.filter(project=project).order_by("id").first()
    last_page = Prompt.objects.filter(project=project).count() // 50 + 1
    annotation = Annotation.objects.filter(labeler_id=ctx["labeler"].pk).order_by("id").first()
    # The task browser's second page: its cursor is the 50th newest task of the project.
    task_cursor = RankingTask.objects.filter(project=project).order_by("-id").values_list("id", flat=True)[49]
    p, who = project.pk, ctx["labeler_ids"][0]
    rs = ("researcher", "admin")
    return [
        ("projects", "/projects/", rs),
        ("projects page 2", "/projects/?page=2", rs),
        ("project detail", f"/projects/{p}/", rs),
        ("project settings", f"/projects/{p}/edit/", rs),
        ("new project form", "/projects/new/", rs),
        ("prompts", f"/projects/{p}/prompts/", rs),
        ("prompts last page", f"/projects/{p}/prompts/?page={last_page}", rs),
        ("prompts search", f"/projects/{p}/prompts/?q=idea+1", rs),
        ("prompt detail", f"/projects/{p}/prompts/{prompt.pk}/", rs),
        ("new prompt form", f"/projects/{p}/prompts/new/", rs),
        ("tasks", f"/projects/{p}/tasks/", rs),
        ("tasks older page", f"/projects/{p}/tasks/?after={task_cursor}", rs),
        ("tasks: labels disagree", f"/projects/{p}/tasks/?agreement=disagree", rs),
        ("tasks: 2 labels, imported", f"/projects/{p}/tasks/?labels=2&source=imported", rs),
        ("import form", f"/projects/{p}/import/", rs),
        ("export form", f"/projects/{p}/export/", rs),
        ("quality", f"/projects/{p}/quality/", rs),
        ("labeler quality", f"/projects/{p}/quality/labelers/{who}/", rs),
        ("jobs", "/jobs/", rs),
        ("model versions", "/jobs/models/", rs),
        ("django admin: annotations", "/django-admin/labeling_app/annotation/", ("admin",)),
        ("django admin: completions", "/django-admin/labeling_app/completion/", ("admin",)),
        ("labeler home", "/label/", ("labeler",)),
        ("api: own annotation", f"/api/label/annotations/{annotation.pk}/", ("labeler",)),
        ("api: schema", "/api/schema/", ("labeler", "researcher")),
    ]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def time_pages(ctx: dict, repeats: int, only: list[str] | None = None) -> list[dict]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    clients = {}
    for role in ("researcher", "admin", "labeler"):
        clients[role] = Client()
        clients[role].force_login(ctx[role])
    out = []
    for name, path, roles in pages(ctx):
        if only and name not in only:
            continue
        for role in roles:
            client = clients[role]
            with CaptureQueriesContext(connection) as queries:
                first = client.get(path)
            n_queries = len(queries)  # read now: later requests empty the log it slices
            if first.status_code != 200:
                raise SystemExit(f"{name} as {role}: {path} answered {first.status_code}")
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
            out.append(
                {
                    "page": name,
                    "role": role,
                    "path": path,
                    "queries": n_queries,
                    "p50": statistics.median(times),
                    "p95": percentile(times, 0.95),
                    "max": max(times),
                }
            )
            print(
                f"  {name:28s} {role:10s} p50 {out[-1]['p50']:7.1f} ms  p95 {out[-1]['p95']:7.1f} ms  "
                f"max {out[-1]['max']:7.1f} ms  {n_queries:3d} queries",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="share of the full size (1M completions, 200k labels)")
    ap.add_argument("--repeats", type=int, default=20, help="timed requests per page and role (after one warm-up)")
    ap.add_argument("--keep", action="store_true", help="reuse the seeded database of an earlier run at the same scale")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--page", action="append", help="time only the page of this name (repeatable; default: all)")
    args = ap.parse_args()
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server (the script makes its own database there)")
    base = urlsplit_db_name(admin_url)
    name = f"{base}_pages"
    db_url = with_db(admin_url, name)
    n = sizes(args.scale)
    rng = random.Random(11)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"database {name}; size: {n}",
        flush=True,
    )
    if not args.keep:
        create_database(admin_url, name)
    setup_django(db_url)
    from django.contrib.auth.models import User
    from django.core.management import call_command

    t0 = time.perf_counter()
    if args.keep and User.objects.filter(username="bench_researcher").exists():
        ctx = {role: User.objects.get(username=f"bench_{role}") for role in ("researcher", "admin")}
        ctx["labeler"] = User.objects.get(username="bench_labeler0")
        ctx["labeler_ids"] = list(
            User.objects.filter(username__startswith="bench_labeler").order_by("id").values_list("id", flat=True)
        )
        print("reusing the seeded database", flush=True)
    else:
        call_command("migrate", verbosity=0)
        ctx = seed(db_url, n, rng)
        print(f"seeded in {time.perf_counter() - t0:.0f} s: {ctx['counted']}", flush=True)
    results = time_pages(ctx, args.repeats, args.page)
    if not results:
        raise SystemExit(f"no page is named {args.page}: see pages()")
    slow = [r for r in results if r["p95"] > TARGET_MS]
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(
        f"{len(results)} page×role rows; worst p95 {max(r['p95'] for r in results):.1f} ms "
        f"({max(results, key=lambda r: r['p95'])['page']}); over {TARGET_MS:.0f} ms: "
        + (", ".join(f"{r['page']} as {r['role']}" for r in slow) or "none")
    )
    if args.json:
        args.json.write_text(json.dumps({"size": n, "results": results}, indent=1))


def urlsplit_db_name(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/") or "postgres"


if __name__ == "__main__":
    main()
