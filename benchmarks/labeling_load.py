"""Load test of the labeler queue: N simulated labelers loop next-task → submit over real HTTP.

The script creates its own PostgreSQL database, migrates it, seeds a project of 1,000 and then
100,000 ranking tasks with COPY, starts gunicorn on a free loopback port against it, and drives it
with one thread per labeler (token auth, keep-alive off as with gunicorn's sync workers). It prints
p50/p95/p99 per endpoint, annotations/s, errors, and the over-assigned tasks and repeated hand-outs
it finds in SQL afterwards. Run by hand, never in tests:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/2 \\
      /work/main/.venv/bin/python benchmarks/labeling_load.py --labelers 20 --duration 40
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from machine_info import cpu_model  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
K = 4
CHECK_KEYS = 12  # the project's default checks (InstructGPT's metadata questions + toxicity)


def with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Database: create, migrate, seed

def create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_env(db_url: str, redis_url: str) -> dict:
    # The API throttles stay on (their Redis round trips are part of each request's cost) at a rate no simulated
    # labeler reaches, so they never cut the measured throughput.
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="config.settings",
               DEBUG="0", LOG_LEVEL="WARNING", API_THROTTLE_USER="1000000/min")
    env["PYTHONPATH"] = str(ROOT)
    return env


def migrate_and_users(env: dict, labelers: int) -> list[str]:
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = f"""
import django, json; django.setup()
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
g = Group.objects.get_or_create(name="labeler")[0]
tokens = []
for i in range({labelers}):
    u, _ = User.objects.get_or_create(username=f"bench{{i}}")
    u.set_unusable_password(); u.save(); u.groups.add(g)
    tokens.append(Token.objects.get_or_create(user=u)[0].key)
print(json.dumps(tokens))
"""
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def copy_rows(cur, table: str, columns: list[str], rows) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def seed(db_url: str, n_tasks: int, overlap: int) -> int:
    """A fresh project of n_tasks tasks (K completions each, the 12 default checks); returns its id."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    t0 = time.perf_counter()
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("""TRUNCATE labeling_app_checkanswer, labeling_app_rating, labeling_app_annotation,
                       labeling_app_assignment, labeling_app_taskcompletion, labeling_app_rankingtask,
                       labeling_app_completion, labeling_app_prompt, labeling_app_checkquestion,
                       labeling_app_project RESTART IDENTITY CASCADE""")
        cur.execute("""INSERT INTO labeling_app_project (name, instructions, completions_per_task, overlap, lease_minutes, created_at)
                       VALUES (%s, %s, %s, %s, 30, %s) RETURNING id""",
                    (f"Load test ({n_tasks} tasks)", "Rate **each** answer.", K, overlap, now))
        project = cur.fetchone()[0]
        from labeling_app.models import DEFAULT_CHECKS

        copy_rows(cur, "labeling_app_checkquestion",
                  ["project_id", "key", "question", "position", "active", "problem_answer", "serious"],
                  ((project, c.key, c.question, i, True, c.problem_answer, c.serious) for i, c in enumerate(DEFAULT_CHECKS)))
        copy_rows(cur, "labeling_app_prompt", ["id", "project_id", "text", "content_hash", "source", "created_at"],
                  ((i, project, f"Load-test prompt {i}: explain idea {i}.",
                    hashlib.sha256(f"Load-test prompt {i}: explain idea {i}.".encode()).hexdigest(), "bench", now)
                   for i in range(1, n_tasks + 1)))
        copy_rows(cur, "labeling_app_completion", ["id", "prompt_id", "text", "source", "model_name", "sampling", "created_at"],
                  (((p - 1) * K + j + 1, p, f"Answer {j} to prompt {p}: " + "lorem ipsum " * (5 + j), "imported", "bench", "{}", now)
                   for p in range(1, n_tasks + 1) for j in range(K)))
        copy_rows(cur, "labeling_app_rankingtask", ["id", "project_id", "prompt_id", "overlap", "submitted_count", "created_at"],
                  ((i, project, i, overlap, 0, now) for i in range(1, n_tasks + 1)))
        copy_rows(cur, "labeling_app_taskcompletion", ["task_id", "completion_id", "position"],
                  ((t, (t - 1) * K + j + 1, j) for t in range(1, n_tasks + 1) for j in range(K)))
        for table in ("prompt", "completion", "rankingtask"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('labeling_app_{table}', 'id'), {n_tasks * (K if table == 'completion' else 1)})")
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE labeling_app_rankingtask, labeling_app_taskcompletion, labeling_app_completion, labeling_app_prompt")
    print(f"  seeded {n_tasks:,} tasks ({n_tasks * K:,} completions) in {time.perf_counter() - t0:.1f} s", flush=True)
    return project


# ---------------------------------------------------------------------------------------------
# The app under gunicorn

def start_gunicorn(env: dict, port: int, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "config.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", str(workers),
         "--worker-class", "sync", "--backlog", "256", "--log-level", "warning", "--timeout", "60"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/accounts/login/")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Simulated labelers

class Labeler(threading.Thread):
    def __init__(self, port: int, token: str, project: int, stop_at: float, warm_until: float, seed_: int, think: float):
        super().__init__(daemon=True)
        self.think = think
        self.port, self.token, self.project = port, token, project
        self.stop_at, self.warm_until = stop_at, warm_until
        self.rng = random.Random(seed_)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.handed: list[int] = []
        self.created = 0
        self.queue_empty = False

    def call(self, endpoint: str, method: str, path: str, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except OSError as exc:
            self.errors.append(f"{endpoint}: {exc!r}")
            return None
        finally:
            conn.close()
        elapsed = time.perf_counter() - t0
        if time.perf_counter() >= self.warm_until:
            self.latency[endpoint].append(elapsed)
        if resp.status >= 300:
            self.errors.append(f"{endpoint}: HTTP {resp.status} {payload[:200]!r}")
            return None
        return json.loads(payload)

    def run(self) -> None:
        while time.perf_counter() < self.stop_at:
            nxt = self.call("next", "POST", f"/api/label/projects/{self.project}/next/")
            if nxt is None:
                continue
            if nxt["task_id"] is None:
                self.queue_empty = True
                return
            task_id = nxt["task_id"]
            self.handed.append(task_id)
            detail = nxt  # the next-task answer carries the completions and checks
            if self.think:
                time.sleep(self.rng.uniform(0.5, 1.5) * self.think)
            likerts = [self.rng.randint(1, 7) for _ in detail["completions"]]
            levels = sorted(set(likerts), reverse=True)
            ratings = [
                {"completion": c["id"], "likert": lk, "rank": levels.index(lk) + 1,
                 "checks": {ch["key"]: self.rng.random() < 0.2 for ch in detail["checks"]}}
                for c, lk in zip(detail["completions"], likerts)
            ]
            out = self.call("submit", "POST", f"/api/label/tasks/{task_id}/submit/", {"ratings": ratings, "comment": ""})
            if out is not None and out.get("created"):
                if time.perf_counter() >= self.warm_until:
                    self.created += 1


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))] * 1000


def integrity(db_url: str, project: int) -> dict:
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("""
            SELECT count(*) FROM labeling_app_rankingtask t WHERE t.project_id = %s AND (
              t.submitted_count > t.overlap
              OR (SELECT count(*) FROM labeling_app_annotation a WHERE a.task_id = t.id AND a.status = 'submitted') > t.overlap
              OR (SELECT count(*) FROM labeling_app_annotation a WHERE a.task_id = t.id AND a.status = 'submitted')
                 + (SELECT count(*) FROM labeling_app_assignment s WHERE s.task_id = t.id AND s.expires_at > now()) > t.overlap)
        """, (project,))
        over = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT task_id, labeler_id FROM labeling_app_annotation a
                       JOIN labeling_app_rankingtask t ON t.id = a.task_id WHERE t.project_id = %s
                       GROUP BY 1, 2 HAVING count(*) > 1) d""", (project,))
        dup = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM labeling_app_rankingtask t WHERE t.project_id = %s AND t.submitted_count <>
                       (SELECT count(*) FROM labeling_app_annotation a WHERE a.task_id = t.id AND a.status = 'submitted')""", (project,))
        drift = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM labeling_app_annotation WHERE status = 'submitted'")
        submitted = cur.fetchone()[0]
    return {"over_assigned": over, "duplicate_annotations": dup, "counter_drift": drift, "submitted": submitted}


def explain_queue(db_url: str, project: int) -> str:
    """EXPLAIN ANALYZE of the hand-out query for a labeler with no history (what the index does at this size)."""
    from datetime import UTC, datetime

    from labeling_app.services.leases import _FRESH_SQL, _STARTED_SQL

    params = {"project": project, "labeler": -1, "tried": [], "now": datetime.now(UTC)}
    lines = []
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        for name, sql in (("started", _STARTED_SQL), ("fresh", _FRESH_SQL)):
            cur.execute("EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF) " + sql.strip(), params)
            plan = [r[0] for r in cur.fetchall()]
            scans = [step.strip() for step in plan if "Scan" in step][:4]
            lines.append(f"    {name}: {'; '.join(scans)} | {plan[-1].strip()}")
        conn.rollback()
    return "\n".join(lines)


def run_size(args, port: int, db_url: str, tokens: list[str], n_tasks: int) -> dict:
    project = seed(db_url, n_tasks, args.overlap)
    start = time.perf_counter()
    warm_until = start + args.warmup
    stop_at = warm_until + args.duration
    workers = [Labeler(port, tok, project, stop_at, warm_until, i, args.think) for i, tok in enumerate(tokens[: args.labelers])]
    load_before = os.getloadavg()[0]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = min(time.perf_counter(), stop_at) - warm_until
    lat = defaultdict(list)
    errors = []
    for w in workers:
        for k, v in w.latency.items():
            lat[k].extend(v)
        errors.extend(w.errors)
    repeats = sum(len(w.handed) - len(set(w.handed)) for w in workers)
    check = integrity(db_url, project)
    created = sum(w.created for w in workers)
    result = {
        "tasks": n_tasks, "labelers": args.labelers, "seconds": round(elapsed, 1),
        "annotations_per_s": round(created / elapsed, 1) if elapsed > 0 else 0.0,
        "errors": len(errors), "repeats": repeats, "queue_ran_dry": any(w.queue_empty for w in workers),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), **check,
        "endpoints": {k: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99),
                          "mean": statistics.fmean(v) * 1000 if v else float("nan")} for k, v in lat.items()},
        "plan": explain_queue(db_url, project),
    }
    print(f"\n== {n_tasks:,} tasks, {args.labelers} labelers, think {args.think} s, {elapsed:.0f} s measured (after {args.warmup:.0f} s warm-up) ==")
    for name in ("next", "submit"):
        e = result["endpoints"].get(name)
        if e:
            print(f"  {name:<7} n={e['n']:>6}  p50 {e['p50']:7.1f} ms  p95 {e['p95']:7.1f} ms  p99 {e['p99']:7.1f} ms")
    print(f"  annotations/s {result['annotations_per_s']}  errors {result['errors']}  over-assigned tasks {check['over_assigned']}"
          f"  repeated hand-outs {repeats}  duplicate annotations {check['duplicate_annotations']}"
          f"  counter drift {check['counter_drift']}  queue ran dry: {result['queue_ran_dry']}")
    print(f"  load average before/after: {result['load_before']} / {result['load_after']}")
    print("  query plans (EXPLAIN ANALYZE, labeler with no history):\n" + result["plan"])
    for e in errors[:5]:
        print("  error:", e)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelers", type=int, default=20)
    ap.add_argument("--sizes", default="1000,100000", help="comma-separated project sizes (tasks)")
    ap.add_argument("--duration", type=float, default=40.0, help="measured seconds per size")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds per size not measured")
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--think", type=float, default=0.0,
                    help="mean seconds a labeler works on a task between next and submit (0: back-to-back, the worst case)")
    ap.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    ap.add_argument("--db-name", default="rlhf_bench_labeling")
    args = ap.parse_args()

    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin_url = with_db(admin_url, "postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/2")
    db_url = with_db(admin_url, args.db_name)
    # Django is set up in this process only to read the app's constants and SQL (the app runs under gunicorn).
    os.environ.update(DATABASE_URL=db_url, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, Django {django.get_version()}, "
          f"psycopg {psycopg.__version__}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"gunicorn: {args.workers} sync workers; labelers: {args.labelers} threads in this process; overlap {args.overlap}, K={K}, "
          f"{CHECK_KEYS} checks per completion")
    create_database(admin_url, args.db_name)
    env = django_env(db_url, redis_url)
    tokens = migrate_and_users(env, args.labelers)
    port = free_port()
    results = []
    sizes = [int(s) for s in args.sizes.split(",")]
    gunicorn = start_gunicorn(env, port, args.workers)
    try:
        for n in sizes:
            results.append(run_size(args, port, db_url, tokens, n))
    finally:
        stop(gunicorn)
    if len(results) >= 2:
        small, big = results[0], results[-1]
        print("\n== verdict (target: p95 < 100 ms at 20 labelers, 0 errors, 0 over-assigned, p95 big/small <= 1.5) ==")
        for name in ("next", "submit"):
            a, b = small["endpoints"][name]["p95"], big["endpoints"][name]["p95"]
            print(f"  {name:<7} p95 {a:.1f} ms @ {small['tasks']:,} -> {b:.1f} ms @ {big['tasks']:,}: ratio {b / a:.2f}")
    print(json.dumps([{k: v for k, v in r.items() if k != "plan"} for r in results], default=str))


if __name__ == "__main__":
    main()
