"""benchmarks/loop_15min.py --tiny: the whole loop through the pages (reward → PPO → promote → generate → a labeler's
task) with tiny random models, on a database of its own; it prints every number the real run records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loop_15min.py"
sys.path.insert(0, str(SCRIPT.parent))
from labeling_load import with_db  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists("/usr/bin/chromium") and os.environ.get("RLHF_REQUIRE_BROWSER") != "1",
    reason="the loop is driven through Debian's chromium",
)
def test_tiny_loop_reaches_the_labeler_with_both_policies_scored_on_the_same_prompts(tmp_path):
    db_name = f"test_loop15min_{os.getpid()}"
    out = tmp_path / "result.json"
    try:
        run = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--tiny",
                "--db-name",
                db_name,
                "--work-dir",
                str(tmp_path),
                "--json",
                str(out),
                "--job-timeout",
                "600",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        admin_url = with_db(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), "postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["phases"]) == {"reward", "ppo", "promote", "generate", "labeler", "total"}
    assert result["task_from_new_policy"] and result["same_eval_prompts"]
    assert result["eval_prompts"] == 4 and result["generated"] == 36 * 4
    assert result["base_reward_mean"] == result["base_reward_mean_on_new_row"]
    assert 0 <= result["cut_fraction"] <= 1
    # the models page showed both numbers: the new policy's, with the starting one's beside it
    assert "on the same prompts" in result["new_policy_cell"] and "eval prompts" in result["base_policy_cell"]
    for line in (
        "TOTAL",
        "cut at the length limit",
        "reward-model mean score on the same 4 eval prompts",
        "worker CPU-seconds",
        "load average at end",
    ):
        assert line in run.stdout, line
    assert (tmp_path / "loop-models-page.png").is_file() and (tmp_path / "loop-labeler-task.png").is_file()
