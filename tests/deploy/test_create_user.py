"""manage.py create_user: the first admin of a deployment, and users with roles, from the command line."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection

from labeling_app.roles import user_roles

BASE_DIR = Path(__file__).resolve().parents[2]
GOOD_PASSWORD = "correct-horse-battery-staple-42"


@pytest.mark.django_db
def test_admin_from_the_environment_holds_admin_and_researcher(monkeypatch):
    monkeypatch.setenv("RLHF_USER_PASSWORD", GOOD_PASSWORD)
    call_command("create_user", "alice", "--role", "admin", "--email", "alice@example.org", "--no-input")
    alice = User.objects.get(username="alice")
    assert alice.check_password(GOOD_PASSWORD) and alice.email == "alice@example.org"
    assert user_roles(alice) == {"admin", "researcher"}
    assert not alice.is_staff and not alice.is_superuser  # the app role, not Django's admin site


@pytest.mark.django_db
def test_several_roles_and_the_errors(monkeypatch):
    monkeypatch.setenv("RLHF_USER_PASSWORD", GOOD_PASSWORD)
    call_command("create_user", "bob", "--role", "labeler", "--role", "researcher")
    assert user_roles(User.objects.get(username="bob")) == {"labeler", "researcher"}

    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "bob", "--role", "admin")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("create_user", "carol", "--role", "superhero")

    monkeypatch.setenv("RLHF_USER_PASSWORD", "password")
    with pytest.raises(CommandError, match="password rejected: This password is too common"):
        call_command("create_user", "carol", "--role", "labeler")
    monkeypatch.delenv("RLHF_USER_PASSWORD")
    with pytest.raises(CommandError, match="RLHF_USER_PASSWORD"):
        call_command("create_user", "carol", "--role", "labeler", "--no-input")
    assert not User.objects.filter(username="carol").exists()


def run_in_terminal(args: list[str], answers: list[str], env: dict[str, str], timeout: float = 60.0) -> tuple[int, str]:
    """Run manage.py under a real pseudo-terminal, typing one answer at each "Password" prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes manage.py, with the pty as its controlling terminal
        os.chdir(BASE_DIR)
        os.execve(sys.executable, [sys.executable, "manage.py", *args], env)
    output, typed, deadline = b"", 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if typed < len(answers) and output.count(b"Password") > typed and output.rstrip().endswith(b":"):
                os.write(fd, answers[typed].encode() + b"\r")
                typed += 1
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.django_db(transaction=True)  # the command runs in another process: it sees committed rows only
def test_asks_twice_for_the_password_in_a_terminal():
    parts = urlsplit(os.environ["DATABASE_URL"])
    env = {k: v for k, v in os.environ.items() if k != "RLHF_USER_PASSWORD"}
    env["DATABASE_URL"] = parts._replace(path="/" + connection.settings_dict["NAME"]).geturl()

    code, output = run_in_terminal(["create_user", "--role", "admin", "dora"], [GOOD_PASSWORD, GOOD_PASSWORD], env)
    assert code == 0, output
    assert "Created 'dora' with the role admin." in output
    assert GOOD_PASSWORD not in output  # not echoed
    assert User.objects.get(username="dora").check_password(GOOD_PASSWORD)

    code, output = run_in_terminal(
        ["create_user", "--role", "admin", "erin"], [GOOD_PASSWORD, "something-else-entirely"], env
    )
    assert code != 0 and "the two passwords differ" in output
    assert not User.objects.filter(username="erin").exists()
