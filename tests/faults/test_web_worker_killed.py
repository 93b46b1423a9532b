"""SIGKILL of a gunicorn worker while labelers submit through the API: no label doubled or lost, counters exact,
and the master starts a new worker in its place.

Real gunicorn (two sync workers, gunicorn.conf.py), real PostgreSQL, labelers as threads speaking HTTP with
their API tokens. A request the dead worker was serving fails on the client's side; the client sends the same
request again, as a browser or a script would, and the submit answers that label without writing it twice.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from labeling_app.models import Annotation, Completion, Prompt, RankingTask
from labeling_app.services.projects import project_create, task_create
from tests.conftest import make_user
from tests.deploy.topology import free_port

BASE_DIR = Path(__file__).resolve().parents[2]
TASKS, K, OVERLAP, LABELERS = 60, 2, 2, 6
MAX_KILLS = 8

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


class Labeler(threading.Thread):
    """Loops next → submit until the queue is empty; a request that dies with its worker is sent again."""

    def __init__(self, port: int, token: str, project_id: int, seed: int):
        super().__init__(daemon=True)
        self.port, self.token, self.project_id = port, token, project_id
        self.rng = random.Random(seed)
        self.created: list[int] = []  # tasks whose submit answered created=True
        self.answered: list[int] = []  # tasks whose submit answered 200 at all
        self.dropped = 0  # requests that died on the way (the killed worker's)
        self.failures: list[str] = []

    def call(self, method: str, path: str, body=None) -> dict:
        for _ in range(50):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request(
                    method,
                    path,
                    body=json.dumps(body) if body is not None else None,
                    headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                self.dropped += 1
                time.sleep(0.05)
                continue
            finally:
                conn.close()
            if response.status != 200:
                raise AssertionError(f"{method} {path}: HTTP {response.status} {payload[:300]!r}")
            return json.loads(payload)
        raise AssertionError(f"{method} {path}: no answer after 50 tries")

    def run(self) -> None:
        try:
            while True:
                task = self.call("POST", f"/api/label/projects/{self.project_id}/next/")
                if task["task_id"] is None:
                    return
                likerts = [self.rng.randint(1, 7) for _ in task["completions"]]
                levels = sorted(set(likerts), reverse=True)
                ratings = [
                    {
                        "completion": c["id"],
                        "likert": lk,
                        "rank": levels.index(lk) + 1,
                        "checks": {ch["key"]: self.rng.random() < 0.3 for ch in task["checks"]},
                    }
                    for c, lk in zip(task["completions"], likerts)
                ]
                out = self.call(
                    "POST", f"/api/label/tasks/{task['task_id']}/submit/", {"ratings": ratings, "comment": ""}
                )
                self.answered.append(task["task_id"])
                if out["created"]:
                    self.created.append(task["task_id"])
        except Exception as exc:  # reported by the test
            self.failures.append(repr(exc))


def test_a_killed_web_worker_loses_and_doubles_no_label_and_is_replaced(tmp_path, researcher):
    project = project_create(name="Kill a web worker", user=researcher, completions_per_task=K, overlap=OVERLAP)
    for i in range(TASKS):
        prompt = Prompt.objects.create(project=project, text=f"Question {i}?")
        completions = [
            Completion.objects.create(prompt=prompt, text=f"Answer {j} to {i}", source=Completion.Source.IMPORTED)
            for j in range(K)
        ]
        task_create(project=project, prompt=prompt, completions=completions)
    tokens = [Token.objects.create(user=make_user(f"killtest-{n}", "labeler")).key for n in range(LABELERS)]

    port = free_port()
    database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + connection.settings_dict["NAME"]).geturl()
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        TMPDIR=str(tmp_path),
        RLHF_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=database_url,
        API_THROTTLE_USER="off",
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
            ],
            env=env,
            cwd=BASE_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while len(children_of(server.pid)) < 2 or not _answers(port):
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)

        labelers = [Labeler(port, token, project.pk, seed=n) for n, token in enumerate(tokens)]
        for labeler in labelers:
            labeler.start()
        # mid-run: a third of the labels are in
        deadline = time.monotonic() + 120
        while sum(len(lab.answered) for lab in labelers) < TASKS * OVERLAP // 3:
            assert time.monotonic() < deadline and all(lab.is_alive() for lab in labelers), [
                lab.failures for lab in labelers
            ]
            time.sleep(0.01)
        # Kill a worker, wait for the master to replace it; again (a few times at most) until a kill has caught
        # a request in flight, so the test is about a request cut in the middle, not an idle worker.
        victims = []
        while (
            not sum(lab.dropped for lab in labelers)
            and len(victims) < MAX_KILLS
            and any(lab.is_alive() for lab in labelers)
        ):
            workers_before = children_of(server.pid)
            victim = min(workers_before)
            os.kill(victim, signal.SIGKILL)
            victims.append(victim)
            deadline = time.monotonic() + 60
            while True:
                workers = children_of(server.pid)
                if victim not in workers and len(workers - workers_before) == 1 and len(workers) == 2:
                    break
                assert time.monotonic() < deadline, (
                    f"workers {workers}, before {workers_before}\n{log.read_text()[-3000:]}"
                )
                time.sleep(0.05)
            time.sleep(0.5)  # let the labelers notice and retry
        for labeler in labelers:
            labeler.join(180)
            assert not labeler.is_alive()
        assert server.poll() is None, "the master keeps running"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    assert not [lab.failures for lab in labelers if lab.failures]
    assert sum(lab.dropped for lab in labelers) >= 1, f"{len(victims)} kills caught no request in flight"
    # No label lost: every task got its OVERLAP labels; none doubled: one annotation per labeler and task.
    submitted = Annotation.objects.filter(task__project=project, status=Annotation.Status.SUBMITTED)
    assert submitted.count() == TASKS * OVERLAP
    for labeler, token in zip(labelers, tokens):
        # every label a labeler sent is stored once: a submit retried after its worker died answers created=False
        # only when the first try had committed (then it is in `answered`, not in `created`)
        mine = submitted.filter(labeler__auth_token__key=token)
        assert len(labeler.answered) == len(set(labeler.answered)), "a task was handed out again after its submit"
        assert sorted(mine.values_list("task_id", flat=True)) == sorted(labeler.answered)
        assert set(labeler.created) <= set(labeler.answered)
        assert all(a.ratings.count() == K for a in mine)
    assert Annotation.objects.filter(task__project=project).count() == TASKS * OVERLAP
    for task in RankingTask.objects.filter(project=project):
        assert task.submitted_count == OVERLAP == task.annotations.filter(status="submitted").count(), task.pk
    text = log.read_text()
    for victim in victims:
        assert f"Worker (pid:{victim}) was sent SIGKILL" in text, text[-3000:]


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
