"""README's configuration tables list exactly the environment variables the code reads: every one it reads is
documented, and none is documented that nothing reads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
APP_CODE = ["config", "labeling_app", "rlhf_worker", "gunicorn.conf.py", "manage.py"]
TEST_CODE = ["tests"]
# config/env.py's readers: env_bool("DEBUG", ...) reads DEBUG.
READERS = {"env_bool", "env_int", "env_list", "env_rate", "env_header_pair"}


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "string" assignments, for reads like os.environ.get(PASSWORD_ENV)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def variables_read(paths: list[str], root: Path = BASE_DIR) -> tuple[dict[str, set[str]], list[str]]:
    """Variable -> files reading it; plus reads whose name is not a literal (outside config/env.py's readers)."""
    read: dict[str, set[str]] = {}
    unresolved: list[str] = []
    files = [
        p for entry in paths for p in ((root / entry).rglob("*.py") if (root / entry).is_dir() else [root / entry])
    ]
    for path in files:
        relative = str(path.relative_to(root))
        tree = ast.parse(path.read_text(), filename=relative)
        constants = _constants(tree)
        for node in ast.walk(tree):
            name_node = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "get" and _is_os_environ(func.value):
                    name_node = node.args[0]  # os.environ.get(NAME)
                elif (
                    isinstance(func, ast.Attribute)
                    and func.attr == "getenv"
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "os"
                ):
                    name_node = node.args[0]  # os.getenv(NAME)
                elif isinstance(func, ast.Name) and func.id in READERS:
                    name_node = node.args[0]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value):
                name_node = node.slice  # os.environ[NAME]
            elif (
                isinstance(node, ast.Compare)
                and any(isinstance(op, ast.In) for op in node.ops)
                and any(_is_os_environ(c) for c in node.comparators)
            ):
                name_node = node.left  # NAME in os.environ
            if name_node is None:
                continue
            if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str):
                read.setdefault(name_node.value, set()).add(relative)
            elif isinstance(name_node, ast.Name) and name_node.id in constants:
                read.setdefault(constants[name_node.id], set()).add(relative)
            elif relative != "config/env.py":
                unresolved.append(f"{relative}:{node.lineno}")
    return read, unresolved


def readme_tables() -> dict[str, set[str]]:
    """The Configuration section's tables: heading above the table ("" for the first) -> variables in the first
    column (a cell may name several: `PORT`, `HOST`)."""
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, set[str]] = {}
    heading = ""
    for line in section.splitlines():
        if line.startswith("###"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| `"):
            first_cell = line.split("|")[1]
            tables.setdefault(heading, set()).update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    return tables


README = (BASE_DIR / "README.md").read_text()
# Read by the tests to reach what the environment provides, not settings a person chooses.
TEST_PLUMBING = {
    "DATABASE_URL": "the server `make test` started or was given (documented in the main table)",
    "REDIS_URL": "likewise",
}


def test_every_variable_the_app_reads_is_documented_and_every_documented_one_is_read():
    read, unresolved = variables_read(APP_CODE)
    assert not unresolved, f"environment reads with a computed name (write the name out): {unresolved}"
    documented = readme_tables()[""]
    missing = {name: sorted(files) for name, files in read.items() if name not in documented}
    assert not missing, f"add rows to README's configuration table for: {missing}"
    stale = documented - set(read)
    assert not stale, f"README's configuration table lists variables nothing reads: {sorted(stale)}"


def test_the_variables_only_tests_read_have_their_own_table():
    read, unresolved = variables_read(TEST_CODE)
    assert not unresolved, f"environment reads with a computed name (write the name out): {unresolved}"
    tables = readme_tables()
    test_only = set(read) - tables[""] - set(TEST_PLUMBING)
    assert tables.get("Tests") == test_only, (
        f"README's Tests table should list exactly {sorted(test_only)}; it lists {sorted(tables.get('Tests', ()))}"
    )


def test_the_scanner_sees_each_way_of_reading(tmp_path):
    """The scanner is what keeps the first test honest: each form of read it must see, seen."""
    code = tmp_path / "sample.py"
    code.write_text(
        "import os\nNAME = 'VIA_CONSTANT'\n"
        "a = os.environ.get('VIA_GET')\nb = os.getenv('VIA_GETENV')\nc = os.environ['VIA_INDEX']\n"
        "d = 'VIA_IN' in os.environ\ne = env_int('VIA_READER', 1)\nf = os.environ.get(NAME)\n"
        "os.environ.setdefault('NOT_A_READ', 'x')\nos.environ['NOT_A_READ_EITHER'] = 'x'\n"
        "g = os.environ.get(computed())\n"
    )
    read, unresolved = variables_read(["sample.py"], root=tmp_path)
    assert set(read) == {"VIA_CONSTANT", "VIA_GET", "VIA_GETENV", "VIA_INDEX", "VIA_IN", "VIA_READER"}
    assert unresolved == ["sample.py:11"]
