"""The whole RLHF loop from the browser, with every default, timed: reward job → PPO → promote → generate → a labeler
sees a task from the new policy (issue: "the whole loop in 15 minutes on this CPU").

What a new user of `make run` does, driven through the pages with Playwright and Debian's Chromium:

0. Set-up (not timed): a database of its own (dropped and created), `migrate`, `collectstatic` and `seed_demo` as
   `make run` does; the demo project's 36 tasks are labelled by two simulated labelers through the labeling
   services (hand-out, submit), ranking careful > terse > off-task > flawed (the second one ties careful and terse
   on every third prompt), as `benchmarks/ppo_demo_rise.py` does. Then gunicorn with the launcher's arguments and
   one Celery worker on a training queue of its own (as the launcher's training worker: `-c 1`).
1. reward: the admin opens "Start reward model job", keeps every default, starts it, and waits on the job page.
2. ppo: "Start PPO job", chooses the reward model just trained (nothing is promoted yet), keeps every other
   default, starts it, waits.
3. promote: the model versions page, "Promote" on the new policy; the page shows the starting and the new
   policy's reward-model score on the same eval prompts.
4. generate: "Start generate candidates job" with every default (the promoted policy), waits.
5. labeler: the demo labeler logs in, asks for the next task of the demo project, and gets one whose answers come
   from the new policy.

It prints each phase's wall time, the total (first click to the labeler's task page), the share of generated
answers cut at the length limit (Completion.cut_at_length_limit), the base vs new policy mean reward, the CPU and
the load average. The default models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) are converted/loaded into a fresh
model store, as on a first run. `--tiny` runs the same pages with tiny random models and a few small settings
(a smoke test: tests/benchmarks/test_loop_15min.py).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/2 \\
      .venv/bin/python benchmarks/loop_15min.py [--tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labeling_load import (  # noqa: E402
    LAUNCHER_GUNICORN_ARGS,
    children_of,
    create_database,
    free_port,
    proc_cpu,
    start_gunicorn,
    stop,
    with_db,
)
from machine_info import cpu_model  # noqa: E402

PYTHON = sys.executable
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]  # as tests/conftest.py launches it
FINISHED = "#job-status:is(.status-succeeded, .status-failed, .status-cancelled, .status-lost)"
# --tiny: the settings a smoke test changes on the forms (everything else stays at its default)
TINY_REWARD = {"backbone": None, "max_length": "64"}  # backbone: the tiny folder made at set-up
TINY_PPO = {
    "total_episodes": "8",
    "batch_size": "4",
    "mini_batch_size": "2",
    "max_new_tokens": "8",
    "eval_prompts": "4",
}
TINY_GENERATE = {"max_new_tokens": "8"}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


LABEL_DEMO = """
import django; django.setup()
from django.contrib.auth.models import Group, User
from labeling_app.demo_data import DEMO_PROMPTS, demo_completions
from labeling_app.models import Project
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.management.commands.seed_demo import DEMO_PROJECT
project = Project.objects.get(name=DEMO_PROJECT)
checks = list(project.checks.filter(active=True).values_list("key", "problem_answer"))
kinds = {}
for careful, flawed in ((c, f) for _, c, f in DEMO_PROMPTS):
    careful_, terse, flawed_, off_task = demo_completions(careful, flawed)
    kinds.update({careful_: "careful", terse: "terse", flawed_: "flawed", off_task: "off-task"})
group = Group.objects.get_or_create(name="labeler")[0]
count = 0
for who in ("sim-labeler-a", "sim-labeler-b"):
    user = User.objects.get_or_create(username=who)[0]
    user.groups.add(group)
    while (assignment := task_assign_next(project=project, labeler=user)) is not None:
        prompt_index = [p for p, _, _ in DEMO_PROMPTS].index(assignment.task.prompt.text)
        tie = who.endswith("b") and prompt_index % 3 == 0
        rank = {"careful": 1, "terse": 1 if tie else 2, "off-task": 2 if tie else 3, "flawed": 3 if tie else 4}
        likert = {"careful": 7, "terse": 5, "off-task": 3, "flawed": 1}
        ratings = [{"completion": cid, "likert": likert[kinds[text]], "rank": rank[kinds[text]],
                    "checks": {key: (not problem) for key, problem in checks}}
                   for cid, text in assignment.shown_completions]
        annotation_submit(task=assignment.task, labeler=user, ratings=ratings)
        count += 1
print(count)
"""


def set_up(args, work: Path) -> tuple[dict, str]:
    """Database, demo project with labels, model store, and the environment the server and worker share."""
    admin_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    db_url = with_db(admin_url, args.db_name)
    create_database(with_db(admin_url, "postgres"), args.db_name)
    env = dict(
        os.environ,
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        RLHF_VAR_DIR=str(work / "var"),
        MODEL_STORE=str(work / "models"),
        TRAINING_QUEUE=f"loop15min-{uuid.uuid4().hex[:8]}",
        PYTHONPATH=str(ROOT),
        TOKENIZERS_PARALLELISM="false",
    )
    if args.tiny:
        from rlhf_worker.training.policy_models import save_tiny_policy
        from rlhf_worker.training.reward_model import save_tiny_backbone

        env["DEFAULT_POLICY"] = save_tiny_policy(str(work / "tiny-policy"), seed=0)
        TINY_REWARD["backbone"] = str(save_tiny_backbone(work / "tiny-backbone", "bert", seed=0))
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "collectstatic", "--no-input", "-v", "0")
    manage(env, "seed_demo")
    labelled = (
        subprocess.run([PYTHON, "-c", LABEL_DEMO], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    print(
        f"set-up: database {args.db_name}, demo project seeded, {labelled} rankings submitted by two "
        "simulated labelers",
        flush=True,
    )
    return env, db_url


def start_worker(env: dict, log_path: Path) -> subprocess.Popen:
    """A Celery worker for the training queue, as the launcher starts `make run`'s training worker."""
    log = open(log_path, "ab")
    return subprocess.Popen(
        [
            str(Path(PYTHON).parent / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            env["TRAINING_QUEUE"],
            "-c",
            "1",
            "-n",
            f"{env['TRAINING_QUEUE']}@%h",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=log,
    )


def worker_cpu(worker: subprocess.Popen) -> float:
    """CPU-seconds the Celery worker (main process and its pool process) has used so far: the jobs' own cost,
    whatever else runs on the machine. On a quiet 2-core machine a job takes between cpu/2 and cpu seconds."""
    return sum(proc_cpu(pid) or 0.0 for pid in [worker.pid, *children_of(worker.pid)])


def login(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def fill(page, values: dict) -> None:
    """Settings a --tiny run changes; those under "Advanced" open it first."""
    if not values:
        return
    if page.is_visible("#advanced-settings > summary") and not page.is_visible(f"#id_{next(iter(values))}"):
        page.click("#advanced-settings > summary")
    for name, value in values.items():
        if not page.is_visible(f"#id_{name}"):
            page.click("#advanced-settings > summary")
        page.fill(f"#id_{name}", value)


def run_job(page, base: str, kind: str, values: dict, timeout_s: float, before_start=None) -> int:
    """Open the start form of `kind`, keep the defaults (but `values`), start, and wait until the job ends."""
    page.goto(f"{base}/jobs/start/{kind}/")
    page.wait_for_selector("form.config-form")
    if before_start:
        before_start(page)
    fill(page, values)
    page.click("#start-job")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job_id = int(re.search(r"/jobs/(\d+)/$", page.url).group(1))
    page.wait_for_selector(FINISHED, timeout=timeout_s * 1000)
    status = page.inner_text("#job-status").strip()
    if status != "Succeeded":
        raise SystemExit(f"{kind} job #{job_id} ended {status}: see {page.url}")
    return job_id


def drive(args, base: str, logins: dict, db_url: str, shots: Path, cpu) -> dict:
    from playwright.sync_api import sync_playwright

    phases: dict[str, float] = {}
    cpu_s: dict[str, float] = {}
    out: dict = {"phases": phases, "worker_cpu_s": cpu_s}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        # the first page of each gunicorn worker that imports torch (a start form) takes long on a busy machine
        page.set_default_navigation_timeout(600_000)
        login(page, base, "admin", logins["admin"])
        timeout = args.job_timeout
        t_start = t = time.perf_counter()
        c = cpu()

        out["reward_job"] = run_job(page, base, "reward", TINY_REWARD if args.tiny else {}, timeout)
        phases["reward"] = time.perf_counter() - t
        cpu_s["reward"], c = cpu() - c, cpu()
        print(f"  reward job #{out['reward_job']}: {phases['reward']:.0f} s (load {load()})", flush=True)

        with psycopg.connect(db_url) as conn:
            reward_version = conn.execute(
                "SELECT result_version_id FROM rlhf_worker_trainingjob WHERE id = %s", (out["reward_job"],)
            ).fetchone()[0]

        def choose_reward(p):  # nothing is promoted yet: the reward model just trained, from the list
            p.select_option("#id_reward_version_id", str(reward_version))

        t, c = time.perf_counter(), cpu()
        ppo_values = {**(TINY_PPO if args.tiny else {}), **({"seed": str(args.ppo_seed)} if args.ppo_seed else {})}
        out["ppo_job"] = run_job(page, base, "ppo", ppo_values, timeout, choose_reward)
        phases["ppo"] = time.perf_counter() - t
        cpu_s["ppo"] = cpu() - c
        print(f"  PPO job #{out['ppo_job']}: {phases['ppo']:.0f} s (load {load()})", flush=True)

        t = time.perf_counter()
        with psycopg.connect(db_url) as conn:
            new_policy, base_policy = conn.execute(
                "SELECT v.id, v.parent_id FROM rlhf_worker_trainingjob j JOIN rlhf_worker_modelversion v "
                "ON v.id = j.result_version_id WHERE j.id = %s",
                (out["ppo_job"],),
            ).fetchone()
        page.goto(f"{base}/jobs/models/")
        page.click(f"button[data-promote='{new_policy}']")
        page.wait_for_selector(f"#version-{new_policy} .status-succeeded")
        phases["promote"] = time.perf_counter() - t
        out["new_policy_cell"] = page.inner_text(f"#version-{new_policy} .policy-score")
        out["base_policy_cell"] = page.inner_text(f"#version-{base_policy} .policy-score")
        page.screenshot(path=str(shots / "loop-models-page.png"), full_page=True)

        t, c = time.perf_counter(), cpu()
        out["generate_job"] = run_job(page, base, "generate", TINY_GENERATE if args.tiny else {}, timeout)
        phases["generate"] = time.perf_counter() - t
        cpu_s["generate"] = cpu() - c
        print(f"  generate job #{out['generate_job']}: {phases['generate']:.0f} s (load {load()})", flush=True)

        t = time.perf_counter()
        labeler = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        labeler.set_default_navigation_timeout(600_000)
        login(labeler, base, "labeler", logins["labeler"])
        labeler.click("form[action*='/next/'] button")
        labeler.wait_for_url(re.compile(r"/tasks/\d+/$"))
        labeler.wait_for_selector("#label-form")
        phases["labeler"] = time.perf_counter() - t
        phases["total"] = time.perf_counter() - t_start
        out["task"] = int(re.search(r"/tasks/(\d+)/$", labeler.url).group(1))
        labeler.screenshot(path=str(shots / "loop-labeler-task.png"), full_page=True)
        out["new_policy"], out["base_policy"] = new_policy, base_policy
        browser.close()
    return out


def facts(db_url: str, out: dict) -> dict:
    """What the database says about the run: the task's answers' model, cut answers, the two policies' scores."""
    with psycopg.connect(db_url) as conn:
        task_versions = {
            r[0]
            for r in conn.execute(
                "SELECT c.model_version_id FROM labeling_app_taskcompletion tc JOIN labeling_app_completion c "
                "ON c.id = tc.completion_id WHERE tc.task_id = %s",
                (out["task"],),
            )
        }
        cut, total = conn.execute(
            "SELECT count(*) FILTER (WHERE sampling->>'finish_reason' = 'length'), count(*) FROM labeling_app_completion "
            "WHERE model_version_id = %s",
            (out["new_policy"],),
        ).fetchone()
        new_metrics, snapshot, config = conn.execute(
            "SELECT metrics, data_snapshot, config FROM rlhf_worker_modelversion WHERE id = %s", (out["new_policy"],)
        ).fetchone()
        base_metrics = conn.execute(
            "SELECT metrics FROM rlhf_worker_modelversion WHERE id = %s", (out["base_policy"],)
        ).fetchone()[0]
        jobs = {
            kind: float(seconds)
            for kind, seconds in conn.execute(
                "SELECT kind, extract(epoch FROM finished_at - started_at) FROM rlhf_worker_trainingjob "
                "WHERE id = ANY(%s)",
                ([out["reward_job"], out["ppo_job"], out["generate_job"]],),
            )
        }
        gen_config = conn.execute(
            "SELECT config FROM rlhf_worker_trainingjob WHERE id = %s", (out["generate_job"],)
        ).fetchone()[0]
    return {
        "task_from_new_policy": task_versions == {out["new_policy"]},
        "generated": total,
        "generated_cut": cut,
        "cut_fraction": cut / total if total else None,
        "base_reward_mean": base_metrics.get("eval/reward_mean"),
        "new_reward_mean": new_metrics.get("eval/reward_mean"),
        "base_reward_mean_on_new_row": new_metrics.get("eval/base_reward_mean"),
        "eval_prompts": new_metrics.get("eval/prompts"),
        "same_eval_prompts": base_metrics.get("eval/prompt_ids") == snapshot.get("eval_prompt_ids"),
        "ppo_eval_cut_fraction": new_metrics.get("eval/cut_fraction"),
        "ppo_eval_base_cut_fraction": new_metrics.get("eval/base_cut_fraction"),
        "ppo_steps": new_metrics.get("train/steps"),
        "ppo_train_seconds": new_metrics.get("train/seconds"),
        "ppo_no_stop_last_step": new_metrics.get("response/no_stop_fraction"),
        "job_seconds": jobs,
        "ppo_settings": {
            k: config.get(k)
            for k in (
                "total_episodes",
                "batch_size",
                "samples_per_prompt",
                "learning_rate",
                "mini_batch_size",
                "ppo_epochs",
                "max_new_tokens",
                "eval_prompts",
                "trainable_layers",
                "seed",
            )
        },
        "generate_settings": {k: gen_config.get(k) for k in ("max_new_tokens", "batch_size", "temperature")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random models and small settings (smoke test)")
    p.add_argument("--db-name", default="rlhf_loop15min", help="database to (re)create for the run")
    p.add_argument("--job-timeout", type=float, default=3600, help="seconds to wait for one job")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument(
        "--ppo-seed",
        type=int,
        default=0,
        help="PPO's seed on the start form (0: keep the default, 0); one run is one seed",
    )
    p.add_argument("--work-dir", default="", help="model store, logs and screenshots (default: a temp folder)")
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="loop15min_"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}; "
        f"load average at start {load()}; work folder {work}",
        flush=True,
    )
    env, db_url = set_up(args, work)
    logins = json.loads((work / "var" / "demo_logins.json").read_text())
    port = free_port()
    web = start_gunicorn(env, port, LAUNCHER_GUNICORN_ARGS, work / "gunicorn.log")
    worker = start_worker(env, work / "worker.log")
    try:
        out = drive(args, f"http://127.0.0.1:{port}", logins, db_url, work, lambda: worker_cpu(worker))
    finally:
        stop(worker)
        stop(web)
    result = {
        "tiny": args.tiny,
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "load_at_end": load(),
        **out,
        **facts(db_url, out),
    }
    ph = result["phases"]
    print(
        f"phases (s): reward {ph['reward']:.0f}, PPO {ph['ppo']:.0f}, promote {ph['promote']:.1f}, "
        f"generate {ph['generate']:.0f}, labeler sees a task {ph['labeler']:.1f}"
    )
    print(f"TOTAL {ph['total']:.0f} s = {ph['total'] / 60:.1f} min (target 15 min on a quiet 2-core machine)")
    cpu_total = sum(result["worker_cpu_s"].values())
    print(
        f"worker CPU-seconds: { ({k: round(v) for k, v in result['worker_cpu_s'].items()}) }, {cpu_total:.0f} in all: "
        f"on a quiet 2-core machine the jobs would take between {cpu_total / 2 / 60:.1f} and {cpu_total / 60:.1f} min"
    )
    print(f"job run times (s): { ({k: round(v) for k, v in result['job_seconds'].items()}) }")
    print(
        f"generated answers cut at the length limit: {result['generated_cut']}/{result['generated']} "
        f"= {result['cut_fraction']:.0%}; PPO eval answers cut: base {result['ppo_eval_base_cut_fraction']:.0%}, "
        f"new {result['ppo_eval_cut_fraction']:.0%}"
    )
    print(
        f"reward-model mean score on the same {result['eval_prompts']} eval prompts: base {result['base_reward_mean']:+.3f}"
        f" -> new {result['new_reward_mean']:+.3f} (same prompts: {result['same_eval_prompts']})"
    )
    print(
        f"models page, new policy: {' '.join(result['new_policy_cell'].split())!r}; "
        f"base: {' '.join(result['base_policy_cell'].split())!r}"
    )
    print(f"the labeler's task #{result['task']} answers come from the new policy: {result['task_from_new_policy']}")
    print(f"settings: PPO {result['ppo_settings']}, generate {result['generate_settings']}")
    print(f"load average at end {result['load_at_end']}; screenshots in {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["task_from_new_policy"] and result["same_eval_prompts"] else 1


if __name__ == "__main__":
    sys.exit(main())
