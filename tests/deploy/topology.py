"""docker-compose.yml's app services as local processes, each with only what its container would have.

A service gets the environment compose gives it, runs compose's command from the code folder (the image's
/app), and sees: a folder of its own for every container path that is not on a volume (its /app/var and /tmp
included), one shared folder per named volume it mounts, and this test run's PostgreSQL and Redis where
compose names the hosts "postgres" and "redis". Where the kernel lets us (root, or CAP_SYS_ADMIN), each
process runs in a mount namespace of its own in which the other services' own folders are empty, so a path
one container wrote outside a volume cannot be read by another, as with Docker.
"""

from __future__ import annotations

import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode, urlsplit

from tests.deploy import compose

VENV_BIN = Path(sys.executable).parent  # the image has the same tools on its PATH (pip-installed scripts)
IMAGE_VAR_DIR = "/app/var"  # config/env.py's VAR_DIR inside the image: BASE_DIR (/app) / "var"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_environment() -> dict[str, str]:
    """The Dockerfile's ENV lines (KEY=value pairs)."""
    env = {}
    for line in (compose.BASE_DIR / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def can_isolate() -> bool:
    """Whether processes can get a private mount namespace (unshare(1) as root)."""
    try:
        return (
            subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


# Mounts an empty read-only tmpfs on each folder before "--", then becomes the command after it.
_HIDE_AND_EXEC = (
    'while [ "$1" != -- ]; do mount -t tmpfs -o ro,size=4k none "$1" || exit 97; shift; done; shift; exec "$@"'
)


def wait_until(check, what: str, timeout: float, interval: float = 0.5, details=lambda: ""):
    """Poll check() until it returns something truthy; fail naming `what` (and the services' logs) on timeout."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})\n{details()}")


class Topology:
    def __init__(self, document: dict, root: Path, *, database_url: str, redis_url: str):
        self.services = compose.services(document)
        self.root = root
        self.database_url, self.redis_url = database_url, redis_url
        self.ports: dict[str, int] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.isolated = can_isolate()

    # -- what a container sees -----------------------------------------------------------------
    def volume_dir(self, volume: str) -> Path:
        path = self.root / "volumes" / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def host_path(self, service: str, container_path: str) -> Path:
        """Where `container_path` of `service` lies here: in a volume's shared folder, or in the service's own."""
        path = PurePosixPath(container_path)
        mounts = self.services[service].named_volumes
        for target in sorted(mounts, key=len, reverse=True):
            if path.is_relative_to(target):
                return self.volume_dir(mounts[target]) / path.relative_to(target)
        return self.container_dir(service) / path.relative_to("/")

    def container_dir(self, service: str) -> Path:
        return self.root / "containers" / service

    def visible_to(self, service: str, host_path: str | Path) -> bool:
        """Whether `service` can read `host_path`: it lies in one of its volumes or in its own folder."""
        path = Path(host_path)
        mounted = [self.volume_dir(volume) for volume in self.services[service].named_volumes.values()]
        return any(path.is_relative_to(folder) for folder in [*mounted, self.container_dir(service)])

    def _server_url(self, value: str) -> str:
        """A URL naming a compose service host ("postgres", "redis") -> this run's server for it."""
        parts = urlsplit(value)
        if not parts.scheme or parts.hostname not in self.services:
            return value
        if parts.scheme.startswith("postgres"):
            return self.database_url
        if parts.scheme.startswith("redis"):
            return self.redis_url
        raise AssertionError(f"no stand-in for the {parts.hostname!r} service ({parts.scheme} URL)")

    def environment(self, service: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        home = self.host_path(service, "/home/app")
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "HOSTNAME": socket.gethostname(),
            **image_environment(),
        }
        for key, value in self.services[service].environment.items():
            env[key] = str(self.host_path(service, value)) if value.startswith("/") else self._server_url(value)
        env["RLHF_VAR_DIR"] = str(self.host_path(service, IMAGE_VAR_DIR))
        Path(env["RLHF_VAR_DIR"]).mkdir(
            parents=True, exist_ok=True
        )  # the Dockerfile makes /app/var (beat keeps its schedule there)
        env["TMPDIR"] = str(self.host_path(service, "/tmp"))
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        if service in self.ports:  # containers each have their own network; here they share one
            env["PORT"] = str(self.ports[service])
        env.update(extra or {})
        return env

    # -- processes -------------------------------------------------------------------------------
    def log_path(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def argv(self, service: str, command: list[str]) -> list[str]:
        """`command` as `service` runs it: in a mount namespace where the other services' own folders are empty."""
        if not self.isolated:
            return command
        others = [self.container_dir(name) for name in self.services if name != service]
        for folder in others:
            folder.mkdir(parents=True, exist_ok=True)
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _HIDE_AND_EXEC,
            "sh",
            *map(str, others),
            "--",
            *command,
        ]

    def start(self, service: str) -> subprocess.Popen:
        self.log_path(service).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(service), "ab") as log:
            process = subprocess.Popen(
                self.argv(service, self.services[service].command),
                env=self.environment(service),
                cwd=compose.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[service] = process
        return process

    def run(
        self,
        service: str,
        command: list[str] | None = None,
        *,
        extra_env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        """A one-off command in a fresh container of `service` (`docker compose run --rm SERVICE ...`)."""
        return subprocess.run(
            self.argv(service, command or self.services[service].command),
            env=self.environment(service, extra_env),
            cwd=compose.BASE_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def healthcheck(self, service: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """The service's compose healthcheck, run in its environment (as `docker compose` runs it in the container)."""
        return self.run(service, self.services[service].healthcheck, timeout=timeout)

    def alive(self) -> dict[str, int | None]:
        return {name: process.poll() for name, process in self.processes.items()}

    def logs(self, lines: int = 40) -> str:
        out = []
        for service in self.processes:
            text = self.log_path(service).read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {service} (exit {self.processes[service].poll()}) ---\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Browser:
    """HTTP with a session: keeps cookies (Secure ones too, as a browser does behind a TLS proxy) and sends
    Django's CSRF token; redirects are returned, not followed."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if method == "POST":
            headers["X-CSRFToken"] = self.cookies.get("csrftoken", "")
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response, data

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, fields: dict | list, files: dict[str, tuple[str, bytes]] | None = None):
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        if not files:
            return self.request(
                "POST", path, urlencode(items).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
            )
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in items
        ]
        for name, (filename, content) in files.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        parts.append(f"--{boundary}--\r\n".encode())
        return self.request(
            "POST", path, b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )

    def login(self, username: str, password: str) -> None:
        self.get("/accounts/login/")  # sets the csrftoken cookie
        response, body = self.post("/accounts/login/", {"username": username, "password": password})
        assert response.status == 302 and "sessionid" in self.cookies, body.decode(errors="replace")[:2000]


class FormFields(HTMLParser):
    """The values a browser would submit from a page's <form method="post"> elements, as (name, value) pairs."""

    def __init__(self, html: str):
        super().__init__()
        self.forms: list[list[tuple[str, str]]] = []
        self._fields: list[tuple[str, str]] | None = None
        self._select: str | None = None
        self._textarea: str | None = None
        self._text = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "").lower() == "post":
            self._fields = []
            self.forms.append(self._fields)
        elif self._fields is None or "name" not in a and tag != "option":
            return
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in a or kind in ("submit", "button", "file"):
                return
            self._fields.append((a["name"], a.get("value") or ("on" if kind == "checkbox" else "")))
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self._fields.append((self._select, a.get("value", "")))
        elif tag == "textarea":
            self._textarea, self._text = a["name"], ""

    def handle_data(self, data):
        if self._textarea:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea and self._fields is not None:
            self._fields.append((self._textarea, self._text.lstrip("\n")))
            self._textarea = None
        elif tag == "form":
            self._fields = None

    def submit(self, having: str, **values) -> list[tuple[str, str]]:
        """The fields of the form that has a field `having`, some replaced (a list value gives a field several
        values, like a multi-select)."""
        fields = next((form for form in self.forms if any(name == having for name, _ in form)), None)
        assert fields is not None, f"no form with a field {having!r} on the page"
        kept = [(name, value) for name, value in fields if name not in values]
        for name, value in values.items():
            kept += [(name, str(v)) for v in value] if isinstance(value, list) else [(name, str(value))]
        return kept
