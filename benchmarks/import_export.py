"""Import 100,000 prompts and export 100,000 preference pairs against a real PostgreSQL it creates; rows/s and peak memory.

Run by hand (never in tests):

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        /work/main/.venv/bin/python benchmarks/import_export.py --sizes 10000 100000

For each size N it creates a fresh database `bench_import_export`, migrates it, then times:
  1. `import_file(kind="prompts")` of an N-line JSONL file,
  2. `import_file(kind="preferences")` of N TRL pairwise lines (K=2: N labels, N pairs),
  3. the pairwise export of those N pairs (`export_lines`) written to a file.
Each size runs twice: a timing pass (rows/s) and a memory pass under tracemalloc (which slows
Python down, so its times are not reported), giving the peak of Python allocations per phase.
Both passes also record the peak RSS growth over the phase (Linux VmHWM, reset through
/proc/self/clear_refs before each phase).

The bound we hold to: memory is flat in the file's size — at most one batch (1,000 lines) on
import and one chunk (1,000 tasks with their labels) on export are in memory, so the peaks for
10,000 and 100,000 lines should be about the same; the script prints the ratio.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "bench_import_export"


from machine_info import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def machine() -> str:
    cpu = cpu_model()
    import django
    import psycopg

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__}"
    )


def rss_peak_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def recreate_database(base_url: str) -> str:
    import psycopg

    parts = urlsplit(base_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return urlunsplit(parts._replace(path=f"/{BENCH_DB}"))


def drop_database(base_url: str) -> None:
    import psycopg

    parts = urlsplit(base_url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def write_files(folder: Path, n: int) -> tuple[Path, Path]:
    prompts, prefs = folder / f"prompts-{n}.jsonl", folder / f"pairs-{n}.jsonl"
    with open(prompts, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Benchmark prompt number {i}: explain topic {i % 977} in detail."}) + "\n")
    with open(prefs, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "prompt": f"Pair prompt {i}: which answer is better?",
                        "chosen": f"A careful, correct answer number {i} with some detail.",
                        "rejected": f"A sloppy answer {i}.",
                        "chosen_rating": 6,
                        "rejected_rating": 2,
                    }
                )
                + "\n"
            )
    return prompts, prefs


def run_phase(name: str, fn, rows: int, trace: bool) -> dict:
    gc.collect()
    if trace:
        tracemalloc.start()
    reset_ok = reset_rss_peak()
    rss_before = rss_kib()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    out = {
        "phase": name,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "rss_growth_mib": (rss_peak_kib() - rss_before) / 1024 if reset_ok else None,
    }
    if trace:
        out["py_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def bench_size(n: int, folder: Path, base_url: str, trace: bool) -> list[dict]:
    from django.core.management import call_command
    from django.db import connection

    from labeling_app.selectors.exports import export_lines
    from labeling_app.selectors.labels import LabelFilters
    from labeling_app.services.imports import import_file
    from labeling_app.services.projects import project_create

    connection.close()
    recreate_database(base_url)
    call_command("migrate", verbosity=0)
    prompts_file, pairs_file = write_files(folder, n)
    prompts_project = project_create(name=f"bench prompts {n}", completions_per_task=4)
    pairs_project = project_create(name=f"bench pairs {n}", completions_per_task=2)
    out_file = folder / f"export-{n}.jsonl"
    results = []

    def imp_prompts():
        result = import_file(project=prompts_project, kind="prompts", path=prompts_file)
        assert result.prompts_created == n, result

    def imp_pairs():
        result = import_file(project=pairs_project, kind="preferences", path=pairs_file, source_name="bench")
        assert result.annotations_created == n, result

    def export_pairs():
        count = 0
        with open(out_file, "w") as f:
            for line in export_lines("pairwise", LabelFilters(project_ids=[pairs_project.pk])):
                f.write(line)
                count += 1
        assert count == n, count

    results.append(run_phase("import prompts", imp_prompts, n, trace))
    results.append(run_phase("import pairwise labels", imp_pairs, n, trace))
    results.append(run_phase("export pairwise", export_pairs, n, trace))
    for r in results:
        r["n"] = n
        r["traced"] = trace
    return results


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--no-trace", action="store_true", help="Skip the tracemalloc pass (timing pass only).")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database afterwards.")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    os.environ["DATABASE_URL"] = urlunsplit(urlsplit(base_url)._replace(path=f"/{BENCH_DB}"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    recreate_database(base_url)  # Django's connection needs the database to exist
    import django

    django.setup()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            rows += bench_size(n, Path(tmp), base_url, trace=False)  # timing pass
            if not args.no_trace:
                rows += bench_size(n, Path(tmp), base_url, trace=True)  # memory pass (tracemalloc slows Python)
    if not args.keep:
        from django.db import connection

        connection.close()
        drop_database(base_url)

    print(f"\n{'phase':<26}{'N':>9}{'seconds':>10}{'rows/s':>10}{'RSS growth MiB':>16}{'Python peak MiB':>17}")
    timing = {(r["phase"], r["n"]): r for r in rows if not r["traced"]}
    memory = {(r["phase"], r["n"]): r for r in rows if r["traced"]}
    for key, r in timing.items():
        m = memory.get(key, {})
        rss = m.get("rss_growth_mib", r["rss_growth_mib"])
        print(
            f"{r['phase']:<26}{r['n']:>9}{r['seconds']:>10.1f}{r['rows_per_s']:>10.0f}"
            f"{fmt(rss):>16}{fmt(m.get('py_peak_mib')):>17}"
        )
    sizes = sorted(args.sizes)
    if len(sizes) >= 2 and memory:
        small, big = sizes[0], sizes[-1]
        print("\nmemory bound: flat in file size (one 1,000-line batch on import, one 1,000-task chunk on export).")
        for phase in ("import prompts", "import pairwise labels", "export pairwise"):
            a, b = memory.get((phase, small)), memory.get((phase, big))
            if a and b:
                print(
                    f"  {phase}: Python peak {a['py_peak_mib']:.1f} MiB at {small} lines vs {b['py_peak_mib']:.1f} MiB at "
                    f"{big} lines (x{b['py_peak_mib'] / a['py_peak_mib']:.2f} for x{big / small:.0f} the lines)"
                )


if __name__ == "__main__":
    main()
