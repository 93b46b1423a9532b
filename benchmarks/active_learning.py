"""Active learning on the real queue: labels needed to reach a held-out reward-model accuracy, per queue strategy.

A simulated labeler population labels tasks that the app hands out and stores: every hand-out and every
submission goes through the product's services (`task_assign_next`, the PL/pgSQL hand-out, and
`annotation_submit`, whose counter trigger also runs the adaptive-overlap rule of migration 0015_adaptive_overlap) in a
PostgreSQL database of its own (`<DATABASE_URL's database>_active`, dropped and made anew).

The world: every completion has a small feature vector (`--dims`); its hidden true reward is a random
linear function of it. A task is one prompt's K completions: variations of one base vector, with a
spread that differs per task (some tasks are easy to rank, some hard). Labelers are Bradley-Terry
(Plackett-Luce for a whole ranking) around the true reward, each with their own temperature; about
10% are careless and rank at random.

Every `--refit` labels the benchmark fits a cheap reward model (logistic Bradley-Terry on feature
differences, Newton steps in numpy) on every label in the database, writes its scores as a reward
ModelVersion's CompletionScore rows (what the adaptive-overlap rule compares a lone label with) and
each task's margin into RankingTask.uncertainty_margin, which the "uncertainty" queue order reads, and
measures pairwise accuracy against the true reward on held-out tasks' pairs. The margin is the score
job's own: `rlhf_worker.training.uncertainty` (the last-layer Laplace approximation: the mean over the
task's completion pairs of the score difference in posterior standard deviations; smaller = less sure;
here the "last layer" is the whole linear model and the features are the world's), stored through
`labeling_app.services.uncertainty.task_margins_write`, exactly as a score job does.

Strategies (all start at overlap 1, one label per task):
  oldest       the real queue, oldest task first
  adaptive     the real queue, overlap 1 up to `--overlap-max` when a label disagrees with the reward model
  uncertainty  the real queue, reward model least sure first (Project.queue_order "uncertainty": smallest
               RankingTask.uncertainty_margin first, never-scored tasks last; tasks others started first)
  unc+adaptive both
It prints, per seed and strategy, the labels submitted when the held-out accuracy first reaches
`--target` and stays there for `--stable` refits in a row, the median over seeds and the ratio to oldest-first. Target of issue 14: uncertainty-first
plus adaptive overlap needs >= 30% fewer labels than oldest-first (ratio <= 0.70).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/4 \\
      .venv/bin/python benchmarks/active_learning.py --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labeling_load import create_database, with_db  # noqa: E402
from machine_info import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STRATEGIES = {  # name -> (queue order, adaptive overlap)
    "oldest": ("oldest", False),
    "adaptive": ("oldest", True),
    "uncertainty": ("uncertainty", False),
    "unc+adaptive": ("uncertainty", True),
}


# ---------------------------------------------------------------------------------------------
# The hidden world and the simulated labelers (plain numpy, no database)


@dataclass
class World:
    w_true: np.ndarray
    tasks: list[np.ndarray]  # per task: K x dims features of its completions, in task position order
    heldout_diffs: np.ndarray  # pairs of held-out tasks: feature differences a - b
    heldout_signs: np.ndarray  # sign of the true reward difference


def make_world(
    rng: np.random.Generator, *, n_tasks: int, heldout_tasks: int, k: int, dims: int, spread: tuple[float, float]
) -> World:
    w_true = rng.normal(size=dims)
    w_true /= np.linalg.norm(w_true)

    def task() -> np.ndarray:
        s = np.exp(rng.uniform(np.log(spread[0]), np.log(spread[1])))
        return rng.normal(size=dims) + s * rng.normal(size=(k, dims))

    tasks = [task() for _ in range(n_tasks)]
    diffs = []
    for _ in range(heldout_tasks):
        x = task()
        diffs += [x[i] - x[j] for i in range(k) for j in range(i + 1, k)]
    diffs = np.array(diffs)
    signs = np.sign(diffs @ w_true)
    return World(w_true, tasks, diffs[signs != 0], signs[signs != 0])


@dataclass
class Labeler:
    user: object
    temperature: float
    careless: bool

    def rank(self, rewards: np.ndarray, rng: np.random.Generator) -> list[int]:
        """Positions best first: Plackett-Luce (Gumbel-max) at this labeler's temperature; careless: at random."""
        if self.careless:
            return list(rng.permutation(len(rewards)))
        return list(np.argsort(-(rewards / self.temperature + rng.gumbel(size=len(rewards)))))


# ---------------------------------------------------------------------------------------------
# The reward model: logistic Bradley-Terry on feature differences

L2 = 1.0  # the fit's L2 strength = the prior precision λ of its weights, which the margins' Laplace posterior uses


def fit_bradley_terry(diffs: np.ndarray, l2: float = L2, steps: int = 20) -> np.ndarray:
    """w maximising sum log sigmoid(w . (x_preferred - x_other)) - l2/2 |w|^2 (Newton's method)."""
    w = np.zeros(diffs.shape[1])
    for _ in range(steps + 1):
        p = 1 / (1 + np.exp(-(diffs @ w)))
        hess = (diffs * (p * (1 - p))[:, None]).T @ diffs + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, diffs.T @ (1 - p) - l2 * w)
        if np.abs(step).max() < 1e-6:
            break
        w += step
    return w


def margins_of(x: np.ndarray, w: np.ndarray, better: np.ndarray, worse: np.ndarray, tasks: list[list[int]]):
    """Each task's margin by the score job's function: the Laplace posterior of w from the labelled pairs
    (rows `better[i]` over `worse[i]` of `x`), then per task the mean over its completion pairs of
    |score difference| / posterior standard deviation of it (`rlhf_worker.training.uncertainty`)."""
    from rlhf_worker.training.uncertainty import laplace_precision, task_margins

    scores = x @ w
    precision = laplace_precision(x, scores, better, worse, prior_precision=L2)
    return task_margins(x, scores, tasks, precision).numpy()


def heldout_accuracy(world: World, w: np.ndarray) -> float:
    return float(np.mean(np.sign(world.heldout_diffs @ w) == world.heldout_signs))


# ---------------------------------------------------------------------------------------------
# The queue order: the one place that knows how "uncertainty first" is asked of the app.


def set_queue_order(project, order: str):
    """Set `project.queue_order` through the project service (the way the settings page saves it); returns the
    saved project, which `hand_out` hands out from."""
    from labeling_app.services.projects import project_update

    if order not in ("oldest", "uncertainty"):
        raise ValueError(f"unknown queue order {order!r}")
    return project_update(
        project=project,
        name=project.name,
        instructions=project.instructions,
        completions_per_task=project.completions_per_task,
        overlap=project.overlap,
        lease_minutes=project.lease_minutes,
        queue_order=order,
        overlap_max=project.overlap_max,
        disagreement_threshold=project.disagreement_threshold,
    )


def write_uncertainty(version, margins: dict[int, float]) -> int:
    """Store each task's margin (computed from `version`'s scores) through the score job's service, for the queue
    to read; returns the tasks whose margin changed."""
    from labeling_app.services.uncertainty import task_margins_write

    return task_margins_write(model_version=version, margins=margins)


def hand_out(project, labeler):
    """The next task for `labeler` from the real queue (`task_assign_next`, in the project's queue order):
    (task id, shown completion ids) or None when nothing is left for them."""
    from labeling_app.services.leases import task_assign_next

    assignment = task_assign_next(project=project, labeler=labeler)
    return None if assignment is None else (assignment.task_id, [cid for cid, _ in assignment.shown_completions])


# ---------------------------------------------------------------------------------------------
# One run: seed a project, label until the target accuracy (or the pool runs dry)


def reset_and_seed(world: World, *, k: int, overlap_max: int, threshold: float):
    """A fresh project holding the world's tasks; {completion id: features}, {task id: [completion ids]}."""
    from django.db import connection

    from labeling_app.models import Completion, Prompt, RankingTask, TaskCompletion, prompt_content_hash
    from labeling_app.services.projects import project_create

    with connection.cursor() as cur:
        cur.execute("""TRUNCATE labeling_app_checkanswer, labeling_app_rating, labeling_app_annotation,
                       labeling_app_assignment, labeling_app_taskcompletion, labeling_app_rankingtask,
                       labeling_app_completion, labeling_app_prompt, labeling_app_checkquestion,
                       labeling_app_project, rlhf_worker_completionscore, rlhf_worker_modelversion
                       RESTART IDENTITY CASCADE""")
    project = project_create(
        name="active learning",
        completions_per_task=k,
        overlap=1,
        overlap_max=overlap_max,
        disagreement_threshold=threshold,
        checks=[],
    )
    prompts = Prompt.objects.bulk_create(
        Prompt(project=project, text=f"prompt {i}", content_hash=prompt_content_hash(f"prompt {i}", None))
        for i in range(len(world.tasks))
    )
    completions = Completion.objects.bulk_create(
        Completion(prompt=p, text=f"completion {j} of {p.text}", source=Completion.Source.MODEL)
        for p in prompts
        for j in range(k)
    )
    tasks = RankingTask.objects.bulk_create(RankingTask(project=project, prompt=p, overlap=1) for p in prompts)
    TaskCompletion.objects.bulk_create(
        TaskCompletion(task=t, completion=completions[i * k + j], position=j)
        for i, t in enumerate(tasks)
        for j in range(k)
    )
    features = {completions[i * k + j].pk: world.tasks[i][j] for i in range(len(tasks)) for j in range(k)}
    task_completions = {t.pk: [completions[i * k + j].pk for j in range(k)] for i, t in enumerate(tasks)}
    return project, features, task_completions


def label_pairs(rows: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every submitted label in the database as preference pairs (ties left out): the feature rows (`rows`:
    completion id -> row) of the better and of the worse completion."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("""SELECT a.completion_id, b.completion_id FROM labeling_app_rating a
                       JOIN labeling_app_rating b ON b.annotation_id = a.annotation_id AND a.rank < b.rank""")
        pairs = cur.fetchall()
    better = np.array([rows[a] for a, _ in pairs], dtype=np.int64)
    worse = np.array([rows[b] for _, b in pairs], dtype=np.int64)
    return better, worse


def write_scores(w: np.ndarray, features: dict[int, np.ndarray], version_no: int):
    """The model's scores of every completion as a new reward ModelVersion (newest = what the overlap rule reads),
    which it returns; older versions' scores are deleted, so the table stays one version big."""
    from django.db import connection

    from rlhf_worker.models import ModelVersion

    version = ModelVersion.objects.create(kind=ModelVersion.Kind.REWARD, name=f"bench-bt-{version_no}", path="-")
    ids = list(features)
    scores = [float(features[c] @ w) for c in ids]
    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO rlhf_worker_completionscore (completion_id, model_version_id, score, scored_at)
                       SELECT c, %s, s, now() FROM unnest(%s::bigint[], %s::float8[]) AS u(c, s)""",
            [version.pk, ids, scores],
        )
        cur.execute("DELETE FROM rlhf_worker_completionscore WHERE model_version_id <> %s", [version.pk])
    return version


def run(
    world: World,
    labelers: list[Labeler],
    strategy: str,
    *,
    seed: int,
    k: int,
    target: float,
    refit: int,
    max_labels: int,
    overlap_max: int,
    threshold: float,
    stable: int = 3,
) -> dict:
    """Label until the held-out accuracy is >= `target` at `stable` refits in a row; `labels_needed` is the
    labels at the first of them (None if `max_labels` or the pool ran out first)."""
    from labeling_app.models import RankingTask
    from labeling_app.services.annotations import annotation_submit

    order, adaptive = STRATEGIES[strategy]
    project, features, task_completions = reset_and_seed(
        world, k=k, overlap_max=overlap_max if adaptive else 1, threshold=threshold
    )
    project = set_queue_order(project, order)
    true_reward = {c: float(x @ world.w_true) for c, x in features.items()}
    rng_np, rng = np.random.default_rng(seed * 1000 + 7), random.Random(seed)
    labels, accuracy, curve, reached, streak, started = 0, 0.5, [], None, [], time.perf_counter()
    task_ids = list(task_completions)
    rows = {c: i for i, c in enumerate(features)}
    x = np.array([features[c] for c in rows])
    task_rows = [[rows[c] for c in task_completions[t]] for t in task_ids]
    exhausted: set[int] = set()
    while labels < max_labels and len(exhausted) < len(labelers):
        who = rng.randrange(len(labelers))
        if who in exhausted:
            continue
        labeler = labelers[who]
        got = hand_out(project, labeler.user)
        if got is None:
            exhausted.add(who)
            continue
        task_id, shown = got
        ids = task_completions[task_id]
        best_first = labeler.rank(np.array([true_reward[c] for c in ids]), rng_np)
        ratings = [
            {"completion": ids[pos], "likert": 7 - place, "rank": place + 1, "checks": {}}
            for place, pos in enumerate(best_first)
        ]
        annotation_submit(
            task=RankingTask(pk=task_id, project=project, project_id=project.pk), labeler=labeler.user, ratings=ratings
        )
        labels += 1
        if labels % refit == 0:
            better, worse = label_pairs(rows)
            w = fit_bradley_terry(x[better] - x[worse])
            accuracy = heldout_accuracy(world, w)
            curve.append((labels, accuracy))
            streak = streak + [labels] if accuracy >= target else []
            if len(streak) >= stable:
                reached = streak[0]
                break
            version = write_scores(w, features, labels // refit)
            write_uncertainty(version, dict(zip(task_ids, margins_of(x, w, better, worse, task_rows).tolist())))
    extended = RankingTask.objects.filter(project=project, extra_labels__gt=0).count()
    return {
        "strategy": strategy,
        "seed": seed,
        "labels_needed": reached,
        "labels": labels,
        "accuracy": accuracy,
        "tasks_extended": extended,
        "seconds": time.perf_counter() - started,
        "curve": curve,
    }


def setup_django(db_url: str) -> None:
    os.environ.update(DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="config.settings_test", DEBUG="0")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    import django

    django.setup()


def make_labelers(n: int, careless_share: float, temperature: tuple[float, float], rng: np.random.Generator):
    from django.contrib.auth.models import Group, User

    group = Group.objects.get_or_create(name="labeler")[0]
    careless = set(rng.choice(n, size=max(1, round(n * careless_share)), replace=False)) if careless_share else set()
    out = []
    for i in range(n):
        user, _ = User.objects.get_or_create(username=f"sim{i}")
        user.groups.add(group)
        out.append(Labeler(user, float(rng.uniform(*temperature)), i in careless))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from here (to spread a long run over runs)")
    ap.add_argument("--tasks", type=int, default=1000, help="tasks in the pool")
    ap.add_argument("--k", type=int, default=4, help="completions per task")
    ap.add_argument("--dims", type=int, default=8, help="features per completion")
    ap.add_argument("--labelers", type=int, default=20)
    ap.add_argument("--careless", type=float, default=0.1, help="share of labelers who rank at random")
    ap.add_argument(
        "--temperature", type=float, nargs=2, default=(0.05, 0.3), help="labelers' Bradley-Terry temperatures"
    )
    ap.add_argument("--spread", type=float, nargs=2, default=(0.05, 1.0), help="per-task spread of the completions")
    ap.add_argument("--target", type=float, default=0.97, help="held-out pairwise accuracy to reach")
    ap.add_argument("--stable", type=int, default=3, help="refits in a row the target must hold")
    ap.add_argument("--refit", type=int, default=10, help="labels between reward-model fits")
    ap.add_argument("--max-labels", type=int, default=1200)
    ap.add_argument("--overlap-max", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.34)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--keep-db", action="store_true", help="reuse the database (already migrated)")
    ap.add_argument("--json", type=Path, help="also write every run's result here")
    args = ap.parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server (the script makes its own database there)")
    from urllib.parse import urlsplit

    name = f"{urlsplit(admin_url).path.lstrip('/') or 'postgres'}_active"
    db_url = with_db(admin_url, name)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise SystemExit(f"unknown strategies {sorted(unknown)}; use some of {', '.join(STRATEGIES)}")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; database {name}",
        flush=True,
    )
    print(
        f"world: {args.tasks} tasks of K={args.k}, {args.dims} features, {args.labelers} labelers "
        f"({args.careless:.0%} careless, temperatures {args.temperature}), target accuracy {args.target}, "
        f"refit every {args.refit} labels, adaptive overlap 1..{args.overlap_max} at threshold {args.threshold}",
        flush=True,
    )
    if not args.keep_db:
        create_database(admin_url, name)
    setup_django(db_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rng = np.random.default_rng(seed)
        world = make_world(
            rng, n_tasks=args.tasks, heldout_tasks=300, k=args.k, dims=args.dims, spread=tuple(args.spread)
        )
        labelers = make_labelers(args.labelers, args.careless, tuple(args.temperature), rng)
        for strategy in strategies:
            r = run(
                world,
                labelers,
                strategy,
                seed=seed,
                k=args.k,
                target=args.target,
                refit=args.refit,
                max_labels=args.max_labels,
                overlap_max=args.overlap_max,
                threshold=args.threshold,
                stable=args.stable,
            )
            results.append(r)
            print(
                f"seed {seed} {strategy:13s} labels to {args.target:.0%}: {r['labels_needed'] or 'not reached'!s:>12}"
                f"  (accuracy {r['accuracy']:.3f} after {r['labels']} labels, {r['tasks_extended']} tasks extended, "
                f"{r['seconds']:.0f} s)",
                flush=True,
            )
    summary = {}
    for strategy in strategies:
        needed = [r["labels_needed"] or args.max_labels for r in results if r["strategy"] == strategy]
        summary[strategy] = statistics.median(needed)
    base = summary.get("oldest")
    print(
        f"\nlabels needed to reach {args.target:.0%} held-out pairwise accuracy (median over {args.seeds} seeds; "
        f"a run that never reached it counts as --max-labels = {args.max_labels}):"
    )
    for strategy in strategies:
        per_seed = [r["labels_needed"] or f">{args.max_labels}" for r in results if r["strategy"] == strategy]
        ratio = f"{summary[strategy] / base:.2f}x oldest-first" if base else ""
        print(f"  {strategy:13s} {summary[strategy]:7.0f}  {ratio:20s} per seed: {per_seed}")
    if base and "unc+adaptive" in summary:
        ratio = summary["unc+adaptive"] / base
        print(
            f"target (uncertainty-first + adaptive overlap <= 0.70x oldest-first): "
            f"{'met' if ratio <= 0.70 else 'MISSED'} ({ratio:.2f}x)"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results, "summary": summary},
                indent=1,
                default=str,
            )
        )
    return {"results": results, "summary": summary}


if __name__ == "__main__":
    main()
