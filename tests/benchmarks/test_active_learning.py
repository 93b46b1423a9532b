"""benchmarks/active_learning.py, in small: its reward model learns, its queues hand out through the app, its runs label."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "active_learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("active_learning_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_bradley_terry_fit_recovers_the_true_reward_from_noiseless_rankings(bench):
    rng = np.random.default_rng(0)
    world = bench.make_world(rng, n_tasks=200, heldout_tasks=100, k=4, dims=5, spread=(0.1, 1.0))
    careful = bench.Labeler(user=None, temperature=1e-6, careless=False)
    diffs = []
    for x in world.tasks:
        order = careful.rank(x @ world.w_true, rng)
        diffs += [x[order[i]] - x[order[j]] for i in range(4) for j in range(i + 1, 4)]
    w = bench.fit_bradley_terry(np.array(diffs))
    assert bench.heldout_accuracy(world, w) > 0.97
    assert bench.heldout_accuracy(world, -w) < 0.03
    careless = bench.Labeler(user=None, temperature=1.0, careless=True)
    assert sorted(careless.rank(np.arange(4.0), rng)) == [0, 1, 2, 3]


@pytest.mark.django_db
@pytest.mark.parametrize("strategy", ["oldest", "unc+adaptive"])
def test_a_tiny_run_labels_through_the_app_and_keeps_the_overlap_rules(bench, strategy):
    from labeling_app.models import Annotation, RankingTask

    rng = np.random.default_rng(1)
    world = bench.make_world(rng, n_tasks=40, heldout_tasks=20, k=3, dims=3, spread=(0.05, 1.0))
    labelers = bench.make_labelers(5, 0.2, (0.05, 0.3), rng)
    result = bench.run(
        world, labelers, strategy, seed=1, k=3, target=1.01, refit=10, max_labels=30, overlap_max=2, threshold=0.34
    )
    assert result["labels"] == 30 == Annotation.objects.filter(status="submitted").count()
    assert len(result["curve"]) == 3 and all(0 <= acc <= 1 for _, acc in result["curve"])
    tasks = RankingTask.objects.all()
    assert all(t.submitted_count <= t.overlap == 1 + t.extra_labels <= 2 for t in tasks)
    if strategy == "oldest":
        assert result["tasks_extended"] == 0


@pytest.mark.django_db
def test_the_real_queue_hands_out_the_smallest_written_margin_first_and_started_tasks_before(bench):
    from labeling_app.models import Project, RankingTask

    rng = np.random.default_rng(2)
    world = bench.make_world(rng, n_tasks=5, heldout_tasks=2, k=3, dims=3, spread=(0.1, 1.0))
    project, features, task_completions = bench.reset_and_seed(world, k=3, overlap_max=1, threshold=0.34)
    first, second, third, fourth = bench.make_labelers(4, 0.0, (0.1, 0.1), rng)
    project = bench.set_queue_order(project, "uncertainty")
    assert Project.objects.get(pk=project.pk).queue_order == "uncertainty"
    ids = sorted(task_completions)
    margins = {
        t: 10.0 - i for i, t in enumerate(ids[:-1])
    }  # the newest scored task is the least sure; the last unscored
    version = bench.write_scores(np.ones(3), features, 1)
    assert bench.write_uncertainty(version, margins) == len(margins)
    assert dict(RankingTask.objects.filter(pk__in=ids).values_list("pk", "uncertainty_margin")) == {
        **margins,
        ids[-1]: None,
    }
    task_id, shown = bench.hand_out(project, first.user)
    assert task_id == ids[-2] and sorted(shown) == sorted(task_completions[task_id])
    RankingTask.objects.filter(pk=ids[0]).update(overlap=2, submitted_count=1)  # started by someone: finished first
    assert bench.hand_out(project, second.user)[0] == ids[0]
    assert bench.hand_out(project, third.user)[0] == ids[2]  # the next smallest margin with room
    RankingTask.objects.filter(pk=ids[1]).update(submitted_count=1)  # the last scored task is full
    assert bench.hand_out(project, fourth.user)[0] == ids[-1]  # never scored: after every scored one
