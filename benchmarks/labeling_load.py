"""Load test of the labeler queue: N clients loop next-task → submit over real HTTP against the app as `make run` serves it.

The script creates its own PostgreSQL database, migrates it, and per run seeds a fresh project
(20,000 tasks by default, K=4, the 12 default checks) with COPY and starts gunicorn with the
launcher's arguments (config/launcher.py) on a free loopback port. Each client is a thread with
one token and one keep-alive connection that loops next → submit without pause (a closed loop),
then, for a few seconds more, next → labeling page (HTML, session cookie) → submit.

It prints per run: annotations/s, p50/p95/p99 per endpoint, the CPU each part used per annotation
(clients, gunicorn, PostgreSQL backends, and everyone else on the machine) and the load average;
after the runs, min/median/max over the repeats. Before the runs it counts the PostgreSQL round
trips of each request: a second server talks to the database through a proxy in this script that
counts the protocol's Sync and Query messages (one per wait for the server, BEGIN and COMMIT
included). After every run it checks in SQL: no task over its overlap, none handed to more
labelers than its overlap, no doubled or lost label, submitted_count exact. Run by hand:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/2 \\
      .venv/bin/python benchmarks/labeling_load.py --clients 10,30 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import random
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from machine_info import cpu_model  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
K = 4
CHECK_KEYS = 12  # the project's default checks (InstructGPT's metadata questions + toxicity)
# gunicorn as config/launcher.py starts it for `make run` (the bind address is added here).
LAUNCHER_GUNICORN_ARGS = "--workers 2 --threads 4 --access-logfile - --graceful-timeout 5"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def with_db(url: str, name: str, **query: str) -> str:
    p = urlsplit(url)
    q = urlencode({**dict(parse_qsl(p.query)), **query})
    return urlunsplit((p.scheme, p.netloc, "/" + name, q, p.fragment))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Database: create, migrate, users, seed


def create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_env(db_url: str, redis_url: str) -> dict:
    # The API throttles stay on (their Redis round trip is part of each request's cost) at a rate no client
    # reaches, so they never cut the measured throughput.
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        API_THROTTLE_USER="1000000/min",
    )
    env["PYTHONPATH"] = str(ROOT)
    return env


def migrate_and_users(env: dict, n: int) -> list[tuple[str, str]]:
    """Labelers bench0..n-1, each with an API token and a signed-in session: [(token, session key)]."""
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    # As `make run` does: with DEBUG off the pages name hashed static files from the collected manifest.
    subprocess.run([PYTHON, "manage.py", "collectstatic", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = f"""
import django, json; django.setup()
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, User
from django.contrib.sessions.backends.db import SessionStore
from rest_framework.authtoken.models import Token
g = Group.objects.get_or_create(name="labeler")[0]
out = []
for i in range({n}):
    u, _ = User.objects.get_or_create(username=f"bench{{i}}")
    u.set_unusable_password(); u.save(); u.groups.add(g)
    s = SessionStore()
    s[SESSION_KEY], s[BACKEND_SESSION_KEY] = str(u.pk), "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = u.get_session_auth_hash()
    s.create()
    out.append((Token.objects.get_or_create(user=u)[0].key, s.session_key))
print(json.dumps(out))
"""
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return [tuple(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


def copy_rows(cur, table: str, columns: list[str], rows) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def seed(db_url: str, n_tasks: int, overlap: int) -> int:
    """A fresh project of n_tasks tasks (K completions each, the 12 default checks), nothing labeled; returns its id."""
    from datetime import UTC, datetime

    from labeling_app.models import DEFAULT_CHECKS

    now = datetime.now(UTC)
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("""TRUNCATE labeling_app_checkanswer, labeling_app_rating, labeling_app_annotation,
                       labeling_app_assignment, labeling_app_taskcompletion, labeling_app_rankingtask,
                       labeling_app_completion, labeling_app_prompt, labeling_app_checkquestion,
                       labeling_app_project RESTART IDENTITY CASCADE""")
        cur.execute(
            """INSERT INTO labeling_app_project (name, instructions, completions_per_task, overlap, lease_minutes, created_at)
                       VALUES (%s, %s, %s, %s, 30, %s) RETURNING id""",
            (f"Load test ({n_tasks} tasks)", "Rate **each** answer.", K, overlap, now),
        )
        project = cur.fetchone()[0]
        copy_rows(
            cur,
            "labeling_app_checkquestion",
            ["project_id", "key", "question", "position", "active", "problem_answer", "serious"],
            ((project, c.key, c.question, i, True, c.problem_answer, c.serious) for i, c in enumerate(DEFAULT_CHECKS)),
        )
        copy_rows(
            cur,
            "labeling_app_prompt",
            ["id", "project_id", "text", "content_hash", "source", "created_at"],
            (
                (
                    i,
                    project,
                    f"Load-test prompt {i}: explain idea {i}.",
                    hashlib.sha256(f"Load-test prompt {i}: explain idea {i}.".encode()).hexdigest(),
                    "bench",
                    now,
                )
                for i in range(1, n_tasks + 1)
            ),
        )
        copy_rows(
            cur,
            "labeling_app_completion",
            ["id", "prompt_id", "text", "source", "model_name", "sampling", "created_at"],
            (
                (
                    (p - 1) * K + j + 1,
                    p,
                    f"Answer {j} to prompt {p}: " + "lorem ipsum " * (5 + j),
                    "imported",
                    "bench",
                    "{}",
                    now,
                )
                for p in range(1, n_tasks + 1)
                for j in range(K)
            ),
        )
        copy_rows(
            cur,
            "labeling_app_rankingtask",
            ["id", "project_id", "prompt_id", "overlap", "submitted_count", "created_at"],
            ((i, project, i, overlap, 0, now) for i in range(1, n_tasks + 1)),
        )
        copy_rows(
            cur,
            "labeling_app_taskcompletion",
            ["task_id", "completion_id", "position"],
            ((t, (t - 1) * K + j + 1, j) for t in range(1, n_tasks + 1) for j in range(K)),
        )
        for table in ("prompt", "completion", "rankingtask"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('labeling_app_{table}', 'id'), {n_tasks * (K if table == 'completion' else 1)})"
            )
        conn.commit()
        conn.autocommit = True
        # Not the emptied annotation tables: statistics saying "empty" would steer their plans while they fill.
        cur.execute(
            "VACUUM ANALYZE labeling_app_rankingtask, labeling_app_taskcompletion, labeling_app_completion, "
            "labeling_app_prompt, labeling_app_checkquestion"
        )
        # The seeding writes a lot of WAL: a checkpoint here starts every run from the same state instead of one
        # that the seeding brings on (max_wal_size) running through later runs' measured windows. On 2026-11-30
        # three of fifteen runs spent twice the usual PostgreSQL CPU per annotation, each while such a checkpoint
        # ran (not every run during one was slow).
        cur.execute("CHECKPOINT")
    return project


# ---------------------------------------------------------------------------------------------
# The app under gunicorn


def start_gunicorn(env: dict, port: int, gunicorn_args: str, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            *shlex.split(gunicorn_args),
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=log,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"gunicorn did not answer within 60 s (log: {log_path})")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------------
# Clients


class Client(threading.Thread):
    """One labeler: one token, one keep-alive connection, next → submit with no pause (next → page → submit in the page phase).

    What it measures goes to the phase the cycle started in: "warm" (not reported), "main", "page".
    """

    def __init__(self, port: int, token: str, session: str, project: int, clock: dict, think: float, seed_: int):
        super().__init__(daemon=True)
        self.port, self.token, self.session, self.project, self.clock, self.think = (
            port,
            token,
            session,
            project,
            clock,
            think,
        )
        self.rng = random.Random(seed_)
        self.conn: http.client.HTTPConnection | None = None
        self.latency: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.created: dict[str, int] = defaultdict(int)
        self.errors: list[str] = []
        self.handed: list[int] = []
        self.queue_empty = False

    def call(self, phase: str, endpoint: str, method: str, path: str, body=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        if endpoint == "page":
            headers = {"Cookie": f"sessionid={self.session}", "Accept": "text/html"}
        else:
            headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(f"{endpoint}: {exc!r}")
            self.conn.close()
            self.conn = None
            return None
        self.latency[phase][endpoint].append(time.perf_counter() - t0)
        if resp.status >= 300:
            self.errors.append(f"{endpoint}: HTTP {resp.status} {payload[:200]!r}")
            return None
        return payload if endpoint == "page" else json.loads(payload)

    def cycle(self, phase: str) -> bool:
        """One task: False when the queue has nothing left for this labeler."""
        nxt = self.call(phase, "next", "POST", f"/api/label/projects/{self.project}/next/")
        if nxt is None:
            return True
        if nxt["task_id"] is None:
            self.queue_empty = True
            return False
        task_id = nxt["task_id"]
        self.handed.append(task_id)
        if phase == "page":
            self.call(phase, "page", "GET", f"/label/tasks/{task_id}/")
        if self.think:
            time.sleep(self.rng.uniform(0.5, 1.5) * self.think)
        likerts = [self.rng.randint(1, 7) for _ in nxt["completions"]]
        levels = sorted(set(likerts), reverse=True)
        ratings = [
            {
                "completion": c["id"],
                "likert": lk,
                "rank": levels.index(lk) + 1,
                "checks": {ch["key"]: self.rng.random() < 0.2 for ch in nxt["checks"]},
            }
            for c, lk in zip(nxt["completions"], likerts)
        ]
        out = self.call(
            phase, "submit", "POST", f"/api/label/tasks/{task_id}/submit/", {"ratings": ratings, "comment": ""}
        )
        if out is not None and out.get("created"):
            self.created[phase] += 1
        return True

    def run(self) -> None:
        c = self.clock
        while (now := time.perf_counter()) < c["page_until"]:
            phase = "warm" if now < c["warm_until"] else "main" if now < c["main_until"] else "page"
            if not self.cycle(phase):
                break
        if self.conn is not None:
            self.conn.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))] * 1000


# ---------------------------------------------------------------------------------------------
# CPU accounting: /proc, sampled every second so processes that end mid-run still count


def proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def machine_busy() -> float:
    """CPU-seconds the whole machine has been busy (all cores) since boot."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLOCK_TICKS  # minus idle and iowait


class CpuMonitor(threading.Thread):
    """CPU-seconds used by gunicorn (master and workers) and by the PostgreSQL backends of the bench database."""

    def __init__(self, gunicorn_pid: int, db_url: str, db_name: str):
        super().__init__(daemon=True)
        self.gunicorn_pid, self.db_url, self.db_name = gunicorn_pid, db_url, db_name
        self.base: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.running = True
        self.window_open = False
        self.lock = threading.Lock()
        self.conn = psycopg.connect(db_url, autocommit=True)

    def pids(self) -> list[tuple[str, int]]:
        backends = [
            r[0]
            for r in self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                (self.db_name,),
            )
        ]
        return (
            [("gunicorn", self.gunicorn_pid)]
            + [("gunicorn", p) for p in children_of(self.gunicorn_pid)]
            + [("postgres", p) for p in backends]
        )

    def sample(self) -> None:
        for key in self.pids():
            cpu = proc_cpu(key[1])
            if cpu is None:
                continue
            with self.lock:
                if self.window_open and key not in self.base:
                    self.base[key] = 0.0 if key[0] == "postgres" else cpu  # a new backend's whole life is in the window
                self.last[key] = cpu

    def open_window(self) -> None:
        with self.lock:
            self.base, self.last = {}, {}
        self.window_open = True
        self.sample()

    def close_window(self) -> dict[str, float]:
        self.sample()
        self.window_open = False
        used = defaultdict(float)
        with self.lock:
            for key, base in self.base.items():
                used[key[0]] += self.last.get(key, base) - base
        return dict(used)

    def run(self) -> None:
        while self.running:
            time.sleep(1.0)
            if self.window_open:
                self.sample()
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# Integrity, checked in SQL after every run


def integrity(db_url: str, project: int, clients: list[Client]) -> dict:
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
        # The run wrote thousands of labels into tables the planner last saw empty: without fresh statistics it
        # plans the per-label counts below as scans of the whole table per label (a minute, not a second).
        cur.execute(
            "ANALYZE labeling_app_annotation, labeling_app_rating, labeling_app_checkanswer, labeling_app_assignment"
        )

        def one(sql: str) -> int:
            cur.execute(sql, {"project": project, "ratings": K, "answers": K * CHECK_KEYS})
            return cur.fetchone()[0]

        over = one("""SELECT count(*) FROM labeling_app_rankingtask t WHERE t.project_id = %(project)s AND (
                        t.submitted_count > t.overlap
                        OR (SELECT count(*) FROM labeling_app_annotation a WHERE a.task_id = t.id AND a.status = 'submitted')
                           + (SELECT count(*) FROM labeling_app_assignment s WHERE s.task_id = t.id AND s.expires_at > now()
                              AND NOT EXISTS (SELECT 1 FROM labeling_app_annotation a WHERE a.task_id = t.id
                                              AND a.labeler_id = s.labeler_id AND a.status = 'submitted')) > t.overlap)""")
        # Leases never expire within a run and nobody skips, so each task goes to at most `overlap` labelers.
        handed_beyond = one("""SELECT count(*) FROM labeling_app_rankingtask t WHERE t.project_id = %(project)s
                               AND (SELECT count(*) FROM labeling_app_annotation a WHERE a.task_id = t.id) > t.overlap""")
        doubled = one("""SELECT count(*) FROM (SELECT task_id, labeler_id FROM labeling_app_annotation
                         GROUP BY 1, 2 HAVING count(*) > 1) d""")
        bad_labels = one("""SELECT count(*) FROM labeling_app_annotation a WHERE
                              (a.status = 'submitted') <> ((SELECT count(*) FROM labeling_app_rating r WHERE r.annotation_id = a.id) = %(ratings)s)
                           OR (a.status = 'submitted') <> ((SELECT count(*) FROM labeling_app_checkanswer x
                                JOIN labeling_app_rating r ON r.id = x.rating_id WHERE r.annotation_id = a.id) = %(answers)s)""")
        drift = one("""SELECT count(*) FROM labeling_app_rankingtask t WHERE t.project_id = %(project)s AND t.submitted_count <>
                       (SELECT count(*) FROM labeling_app_annotation a WHERE a.task_id = t.id AND a.status = 'submitted')""")
        submitted = one("SELECT count(*) FROM labeling_app_annotation WHERE status = 'submitted'")
    created = sum(sum(c.created.values()) for c in clients)
    return {
        "over_assigned": over,
        "handed_beyond_overlap": handed_beyond,
        "doubled_annotations": doubled,
        "bad_label_rows": bad_labels,
        "counter_drift": drift,
        "submitted": submitted,
        "lost_or_extra_labels": abs(submitted - created),
        "repeated_handouts": sum(len(c.handed) - len(set(c.handed)) for c in clients),
    }


# ---------------------------------------------------------------------------------------------
# Round trips: a proxy that counts what the server waits on


class PgRoundTripProxy(threading.Thread):
    """A TCP proxy in front of PostgreSQL that counts round trips: each Sync ('S') or simple Query ('Q')
    message a client sends ends a batch the client then waits on. Needs sslmode=disable to read the protocol."""

    def __init__(self, upstream_port: int):
        super().__init__(daemon=True)
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.round_trips = 0
        self.connections = 0
        self.lock = threading.Lock()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.round_trips, self.connections

    def run(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(client, upstream, True), daemon=True).start()

    def pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        buf, started = b"", False
        try:
            while data := src.recv(65536):
                if from_client:
                    buf += data
                    while True:
                        if not started:  # the startup message has no type byte
                            if len(buf) < 4 or len(buf) < struct.unpack("!I", buf[:4])[0]:
                                break
                            buf, started = buf[struct.unpack("!I", buf[:4])[0] :], True
                            continue
                        if len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
                            break
                        if buf[:1] in (b"S", b"Q"):
                            with self.lock:
                                self.round_trips += 1
                        buf = buf[1 + struct.unpack("!I", buf[1:5])[0] :]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class CountingClient(Client):
    """A client that notes the proxy's round trips of each request it makes (one request at a time)."""

    def __init__(self, proxy: PgRoundTripProxy, *args):
        super().__init__(*args)
        self.proxy = proxy
        self.counts: dict[str, list[int]] = defaultdict(list)

    def call(self, phase: str, endpoint: str, *args, **kwargs):
        trips0, conns0 = self.proxy.counts()
        out = super().call(phase, endpoint, *args, **kwargs)
        trips1, conns1 = self.proxy.counts()
        if phase != "warm" and conns1 == conns0:  # a request that opened a connection also paid its set-up
            self.counts[endpoint].append(trips1 - trips0)
        return out


def count_round_trips(
    args, env: dict, db_url: str, users: list[tuple[str, str]], log_path: Path
) -> dict[str, list[int]]:
    """PostgreSQL round trips of each request type, made one at a time, on database connections already open."""
    project = seed(db_url, 200, args.overlap)
    parts = urlsplit(db_url)
    proxy = PgRoundTripProxy(parts.port or 5432)
    proxy.start()
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    proxied_url = with_db(
        urlunsplit((parts.scheme, f"{credentials}127.0.0.1:{proxy.port}", "", "", "")),
        parts.path.lstrip("/"),
        sslmode="disable",
        gssencmode="disable",
    )
    port = free_port()
    server = start_gunicorn(dict(env, DATABASE_URL=proxied_url), port, args.gunicorn, log_path)
    try:
        token, session = users[0]
        client = CountingClient(proxy, port, token, session, project, {}, 0.0, 0)
        # gunicorn's threads each open a database connection on first use: the first cycles warm them all.
        for i in range(args.count_cycles):
            client.cycle("warm" if i < 2 * args.count_cycles // 3 else "page")
        for err in client.errors[:3]:
            print("  round-trip count, client error:", err)
    finally:
        stop(server)
    return dict(client.counts)


# ---------------------------------------------------------------------------------------------
# One run


def run_once(
    args, env: dict, db_url: str, db_name: str, users: list[tuple[str, str]], n_clients: int, log_path: Path
) -> dict:
    project = seed(db_url, args.tasks, args.overlap)
    port = free_port()
    server = start_gunicorn(env, port, args.gunicorn, log_path)
    monitor = CpuMonitor(server.pid, db_url, db_name)
    monitor.start()
    try:
        start = time.perf_counter()
        clock = {
            "warm_until": start + args.warmup,
            "main_until": start + args.warmup + args.duration,
            "page_until": start + args.warmup + args.duration + args.page_seconds,
        }
        clients = [
            Client(port, tok, sess, project, clock, args.think, i) for i, (tok, sess) in enumerate(users[:n_clients])
        ]
        for c in clients:
            c.start()
        time.sleep(max(0.0, clock["warm_until"] - time.perf_counter()))
        load_start = os.getloadavg()
        t_cpu0, busy0 = os.times(), machine_busy()
        monitor.open_window()
        time.sleep(max(0.0, clock["main_until"] - time.perf_counter()))
        used = monitor.close_window()
        t_cpu1, busy1 = os.times(), machine_busy()
        load_end = os.getloadavg()
        for c in clients:
            c.join()
    finally:
        monitor.running = False
        stop(server)
    elapsed = args.duration
    created = sum(c.created["main"] for c in clients)
    errors = [e for c in clients for e in c.errors]

    def latencies(phase: str) -> dict:
        merged = defaultdict(list)
        for c in clients:
            for endpoint, values in c.latency[phase].items():
                merged[endpoint].extend(values)
        return {k: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99)} for k, v in merged.items()}

    client_cpu = t_cpu1.user + t_cpu1.system - t_cpu0.user - t_cpu0.system
    ours = used.get("gunicorn", 0.0) + used.get("postgres", 0.0) + client_cpu
    per = max(1, created)
    result = {
        "clients": n_clients,
        "tasks": args.tasks,
        "seconds": elapsed,
        "annotations_per_s": round(created / elapsed, 1),
        "errors": len(errors),
        "queue_ran_dry": any(c.queue_empty for c in clients),
        "load_1min_start": round(load_start[0], 2),
        "load_1min_end": round(load_end[0], 2),
        "cpu_ms_per_annotation": {
            "clients": round(1000 * client_cpu / per, 2),
            "gunicorn": round(1000 * used.get("gunicorn", 0.0) / per, 2),
            "postgres": round(1000 * used.get("postgres", 0.0) / per, 2),
        },
        "others_cpu_cores": round(max(0.0, (busy1 - busy0) - ours) / elapsed, 2),
        "endpoints": latencies("main"),
        "page_phase": latencies("page"),
        **integrity(db_url, project, clients),
    }
    result["cpu_ms_per_annotation"]["ours"] = round(sum(result["cpu_ms_per_annotation"].values()), 2)
    result["first_errors"] = errors[:3]
    return result


def show(r: dict) -> None:
    e = r["endpoints"]
    cpu = r["cpu_ms_per_annotation"]
    print(
        f"  {r['clients']:>2} clients: {r['annotations_per_s']:6.1f} annotations/s | "
        + " | ".join(
            f"{k} p50/p95/p99 {e[k]['p50']:.0f}/{e[k]['p95']:.0f}/{e[k]['p99']:.0f} ms"
            for k in ("next", "submit")
            if k in e
        )
        + f" | page p95 {r['page_phase'].get('page', {}).get('p95', float('nan')):.0f} ms"
    )
    print(
        f"      CPU ms per annotation: clients {cpu['clients']}, gunicorn {cpu['gunicorn']}, postgres {cpu['postgres']}"
        f" (ours {cpu['ours']}); other processes used {r['others_cpu_cores']} cores; load average "
        f"{r['load_1min_start']} → {r['load_1min_end']}"
    )
    print(
        f"      errors {r['errors']}, over-assigned {r['over_assigned']}, handed beyond overlap {r['handed_beyond_overlap']},"
        f" doubled {r['doubled_annotations']}, bad label rows {r['bad_label_rows']}, lost/extra labels "
        f"{r['lost_or_extra_labels']}, counter drift {r['counter_drift']}, repeated hand-outs {r['repeated_handouts']}"
        f"{', QUEUE RAN DRY' if r['queue_ran_dry'] else ''}"
    )
    for err in r["first_errors"]:
        print("      error:", err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="10,30", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--repeats", type=int, default=3, help="runs per number of clients")
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per run (next → submit)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds per run not measured")
    ap.add_argument(
        "--page-seconds", type=float, default=8.0, help="seconds of next → page → submit after the measured phase"
    )
    ap.add_argument("--think", type=float, default=0.0, help="mean seconds between next and submit (0: closed loop)")
    ap.add_argument(
        "--gunicorn", default=LAUNCHER_GUNICORN_ARGS, help="gunicorn arguments (default: as config/launcher.py)"
    )
    ap.add_argument(
        "--count-cycles", type=int, default=30, help="next → page → submit cycles of the round-trip count (0: skip)"
    )
    ap.add_argument("--db-name", default="rlhf_bench_labeling")
    ap.add_argument("--json", type=Path, help="also write every run's numbers to this file")
    args = ap.parse_args()

    admin_url = with_db(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), "postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/2")
    db_url = with_db(admin_url, args.db_name)
    # Django is set up in this process only to read the app's constants (the app runs under gunicorn).
    os.environ.update(DATABASE_URL=db_url, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    sys.setswitchinterval(0.001)  # client threads hand the GIL on quickly, so a response is timed when it arrives
    client_counts = [int(n) for n in args.clients.split(",")]
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__}; load average at start {os.getloadavg()[0]:.2f}"
    )
    print(
        f"gunicorn {args.gunicorn}; clients: threads in this process, one keep-alive connection and token each; "
        f"{args.tasks:,} tasks, overlap {args.overlap}, K={K}, {CHECK_KEYS} checks per completion"
    )
    create_database(admin_url, args.db_name)
    env = django_env(db_url, redis_url)
    users = migrate_and_users(env, max(client_counts))
    log_dir = Path(tempfile.mkdtemp(prefix="labeling_load-"))
    counts: dict[str, list[int]] = {}
    if args.count_cycles:
        counts = count_round_trips(args, env, db_url, users, log_dir / "gunicorn-count.log")
        print("\n== PostgreSQL round trips per request (connection already open; median / max) ==")
        for name, v in counts.items():
            print(f"  {name:<7} {statistics.median(v):.0f} / {max(v)}   ({len(v)} requests)")
    results = []
    for n in client_counts:
        print(
            f"\n== {n} clients, {args.duration:.0f} s measured after {args.warmup:.0f} s warm-up, then "
            f"{args.page_seconds:.0f} s with the page ==",
            flush=True,
        )
        for i in range(args.repeats):
            r = run_once(args, env, db_url, args.db_name, users, n, log_dir / f"gunicorn-{n}-{i}.log")
            show(r)
            results.append(r)
    print("\n== summary: min / median / max over the repeats ==")
    for n in client_counts:
        rs = [r for r in results if r["clients"] == n]

        def mmm(values):
            return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"

        print(
            f"  {n} clients: annotations/s {mmm([r['annotations_per_s'] for r in rs])}; "
            f"next p95 {mmm([r['endpoints']['next']['p95'] for r in rs])} ms; "
            f"submit p95 {mmm([r['endpoints']['submit']['p95'] for r in rs])} ms; "
            f"page p95 {mmm([r['page_phase'].get('page', {}).get('p95', float('nan')) for r in rs])} ms; "
            f"CPU ms/annotation (ours) {mmm([r['cpu_ms_per_annotation']['ours'] for r in rs])}; "
            f"load {mmm([r['load_1min_end'] for r in rs])}"
        )
    print(
        "\n== against the targets (≥ 100 annotations/s at 10 and at 30 clients, p95 < 100 ms at 10, ≤ 4 round trips, "
        "no integrity violation) =="
    )
    for n in client_counts:
        rs = [r for r in results if r["clients"] == n]
        rate = statistics.median(r["annotations_per_s"] for r in rs)
        line = f"  {n} clients: median {rate:.1f} annotations/s {'met' if rate >= 100 else 'MISSED'}"
        if n == 10:
            worst = max(max(r["endpoints"][k]["p95"] for k in ("next", "submit")) for r in rs)
            line += f"; worst p95 {worst:.0f} ms {'met' if worst < 100 else 'MISSED'}"
        print(line)
    if counts:
        most = {k: max(v) for k, v in counts.items() if k in ("next", "submit")}
        print(f"  round trips: {most} {'met' if max(most.values()) <= 4 else 'MISSED'}")
    bad = [
        k
        for k in (
            "errors",
            "over_assigned",
            "handed_beyond_overlap",
            "doubled_annotations",
            "bad_label_rows",
            "lost_or_extra_labels",
            "counter_drift",
            "repeated_handouts",
        )
        if any(r[k] for r in results)
    ]
    print(f"  integrity: {'violated: ' + ', '.join(bad) if bad else 'every check 0 in every run'}")
    print(
        f"  load average (1 min) {os.getloadavg()[0]:.2f} at the end; the numbers above are this machine's at that load."
    )
    if args.json:
        args.json.write_text(json.dumps({"round_trips": counts, "runs": results}, default=str, indent=1))


if __name__ == "__main__":
    main()
