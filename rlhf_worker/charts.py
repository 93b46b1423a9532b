"""Which metric keys share a chart, with titles and axis labels so a chart reads without its numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True)
class ChartSpec:
    id: str
    title: str
    y_title: str
    match: Callable[[str], bool]
    y_range: tuple[float, float] | None = None


# Order = order on the page: PPO's objective first, then losses, then the rest.
CHARTS: list[ChartSpec] = [
    ChartSpec(
        "score",
        "Reward-model score of sampled responses (higher is better)",
        "mean score",
        lambda k: k.startswith("objective/scores") or k == "objective/rlhf_reward",
    ),
    ChartSpec(
        "kl",
        "KL divergence from the reference policy",
        "KL (nats)",
        lambda k: k in ("objective/kl", "policy/approxkl") or k.endswith("/kl"),
    ),
    ChartSpec("entropy", "Policy entropy", "entropy (nats per token)", lambda k: "entropy" in k),
    ChartSpec(
        "clipfrac",
        "Clip fraction (share of clipped probability ratios)",
        "fraction (0–1)",
        lambda k: "clipfrac" in k or "clip_frac" in k,
        (0.0, 1.0),
    ),
    ChartSpec("loss", "Loss (lower is better)", "loss (nats)", lambda k: k.endswith("/loss") or k == "loss"),
    ChartSpec(
        "accuracy",
        "Pairwise accuracy (higher is better)",
        "fraction of pairs (0–1)",
        lambda k: "accuracy" in k or "agreement" in k,
        (0.0, 1.0),
    ),
    ChartSpec("ppo_loss", "PPO losses", "loss", lambda k: k.startswith("loss/")),
    ChartSpec("lr", "Learning rate schedule", "learning rate", lambda k: "learning_rate" in k or k.endswith("/lr")),
    ChartSpec(
        "timing",
        "Time per step, by phase",
        "seconds",
        lambda k: k.startswith("time/") and k.endswith("_s") and not k.endswith("per_s"),
    ),
]
HIDDEN = ("/epoch", "/episodes")  # cumulative counters: the x axis already says how far the run is


def _trace_order(key: str) -> tuple[int, str]:
    return (0 if key.startswith("train/") else 1 if key.startswith("eval/") else 2, key)


def chart_groups(keys: Iterable[str]) -> list[dict]:
    """Group a job's metric keys into charts: known families share one; any other key gets its own."""
    remaining = sorted({k for k in keys if not k.endswith(HIDDEN)})
    charts = []
    for spec in CHARTS:
        matched = sorted((k for k in remaining if spec.match(k)), key=_trace_order)
        if not matched:
            continue
        remaining = [k for k in remaining if k not in matched]
        title = spec.title
        if spec.id == "accuracy" and any("agreement" in k for k in matched):
            title = "Pairwise accuracy vs. labelers' agreement (the ceiling)"
        charts.append(
            {
                "id": spec.id,
                "title": title,
                "y_title": spec.y_title,
                "keys": matched,
                "y_range": list(spec.y_range) if spec.y_range else None,
            }
        )
    for key in remaining:
        charts.append(
            {
                "id": "k-" + "".join(c if c.isalnum() else "-" for c in key),
                "title": key,
                "y_title": key.rsplit("/", 1)[-1].replace("_", " "),
                "keys": [key],
                "y_range": None,
            }
        )
    return charts
