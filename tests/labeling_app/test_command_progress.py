"""import_data / export_data: records go through the command's stdout; a progress bar appears on a terminal only."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import termios

import pytest
from django.core.management import call_command

from tests.labeling_app.researcher_fixtures import label, write_jsonl


class Terminal:
    """A pseudo-terminal: what a command writes to `stream` (a TTY) can be read back from `output()`."""

    def __init__(self):
        self.master, slave = pty.openpty()
        # 24 rows of 100 columns: a new pseudo-terminal is 0 x 0, and tqdm sizes its bar to the terminal.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.stream = os.fdopen(slave, "w", encoding="utf-8")

    def output(self) -> str:
        self.stream.flush()
        chunks = []
        while select.select([self.master], [], [], 0.2)[0]:
            chunks.append(os.read(self.master, 65536))
        return b"".join(chunks).decode(errors="replace")

    def close(self):
        self.stream.close()
        os.close(self.master)


@pytest.fixture
def terminal():
    term = Terminal()
    yield term
    term.close()


@pytest.fixture
def labeled(demo_project, labeler):
    first, second, _ = demo_project.tasks.order_by("id")
    label(first, labeler, [1, 2, 3, 4], [7, 5, 3, 1])
    label(second, labeler, [4, 3, 2, 1], [1, 2, 3, 4])
    return demo_project


def test_export_to_standard_output_goes_through_the_commands_stdout(labeled):
    out, err = io.StringIO(), io.StringIO()
    call_command("export_data", project=[labeled.name], format="grouped", stdout=out, stderr=err)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 2 and all(row["labeler"] == "lab1" for row in rows)
    assert "\r" not in err.getvalue() and "wrote 2 grouped records" in err.getvalue()


def test_export_to_a_file_draws_a_bar_on_a_terminal_only(labeled, tmp_path, terminal):
    out = tmp_path / "pairs.jsonl"
    call_command("export_data", str(out), project=[labeled.name], format="pairwise", stderr=terminal.stream)
    shown = terminal.output()
    assert "pairwise export" in shown and "records" in shown and "\r" in shown
    assert len(out.read_text().splitlines()) == 12  # two rankings of four: 6 pairs each

    piped = io.StringIO()
    call_command("export_data", str(out), project=[labeled.name], format="pairwise", stderr=piped)
    assert "pairwise export" not in piped.getvalue() and "\r" not in piped.getvalue()


def test_no_bar_when_the_records_themselves_go_to_the_terminal(labeled, terminal):
    call_command(
        "export_data", project=[labeled.name], format="grouped", stdout=terminal.stream, stderr=terminal.stream
    )
    shown = terminal.output()
    assert shown.count('"labeler": "lab1"') == 2
    assert "grouped export" not in shown


def test_import_draws_a_bar_on_a_terminal_only(demo_project, tmp_path, terminal):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"New prompt {i}?"} for i in range(30)])
    call_command(
        "import_data",
        str(path),
        project=demo_project.name,
        kind="prompts",
        batch_size=10,
        stdout=io.StringIO(),
        stderr=terminal.stream,
    )
    shown = terminal.output()
    assert "importing:" in shown and "/30 " in shown and "lines" in shown  # the bar knows the total

    piped = io.StringIO()
    again = write_jsonl(tmp_path / "more.jsonl", [{"prompt": f"Another prompt {i}?"} for i in range(30)])
    call_command(
        "import_data",
        str(again),
        project=demo_project.name,
        kind="prompts",
        batch_size=10,
        stdout=io.StringIO(),
        stderr=piped,
    )
    assert piped.getvalue() == ""  # as before: progress lines only every 20000 lines or with -v 2
