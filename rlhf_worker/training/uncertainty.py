"""How sure the reward model is of each task's order: a last-layer Laplace approximation over the score head.

The reward model scores a completion as s = w·h (+ b), h the pooled hidden state that feeds the score head
(`RewardModel.pooled`). Keep the trunk fixed and treat the head's weights w as the only uncertain part
(last-layer Laplace; Daxberger et al. 2021, "Laplace Redux"): the Bradley–Terry likelihood of the human
pairs, log σ(s_better − s_worse), with a Gaussian prior w ~ N(0, λ⁻¹I), has at the trained weights the
Hessian (the posterior precision)

    H = Σ_pairs p(1 − p) d dᵀ + λI,     d = h_better − h_worse,  p = σ(s_better − s_worse)

and the posterior variance of any score difference s_i − s_j = w·d_ij is d_ijᵀ H⁻¹ d_ij (b cancels). A task's
margin is the mean over its completion pairs of |s_i − s_j| / sqrt(d_ijᵀ H⁻¹ d_ij): how many posterior
standard deviations apart the model puts each pair. Small = the model may well order the pair wrong, and the
labels can move it. A plain |s_i − s_j| would favour near-identical completions (tiny gap, but also tiny
variance: labels on them are coin flips that teach nothing); dividing by the standard deviation does not.

Each pair counts once in H, as a likelihood term (the reward job's loss weights a ranking's pairs by
1 / its pair count so that every ranking counts once; for the curvature we count what was observed). Scores
here are the model's raw scores (before the stored normalisation), the scale the likelihood was trained on;
the margin is a ratio, so it has no unit either way.

Plain torch (float64 on the CPU for the D×D algebra); used by the score job (`rlhf_worker/jobs/score.py`) and
by `benchmarks/active_learning.py`.
"""

from __future__ import annotations

from typing import Sequence

import torch

# λ, the prior precision of the head's weights (w ~ N(0, λ⁻¹I)). 1.0 = a unit Gaussian prior, the same L2
# strength as the benchmark's Bradley–Terry fit; larger = the labels move the posterior less.
DEFAULT_PRIOR_PRECISION = 1.0
# Smallest posterior standard deviation a pair's score difference is divided by: two completions with the same
# features (d = 0, so σ = 0 and |s_i − s_j| = 0) give 0 (the model cannot tell them apart), never 0/0.
SIGMA_FLOOR = 1e-6
PAIRS_PER_STEP = 8192  # pairs whose D-vectors are held at once (memory: PAIRS_PER_STEP × D float64)


def _as_float64(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)


def laplace_precision(
    features,
    scores,
    better: Sequence[int],
    worse: Sequence[int],
    *,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
) -> torch.Tensor:
    """H = Σ p(1 − p) d dᵀ + λI (D×D, float64) over the labelled pairs (better[k], worse[k]): row indices into
    `features` (N×D, the pooled hidden states) and `scores` (N, the raw scores). Ties give no pair."""
    if prior_precision <= 0:
        raise ValueError(f"prior_precision must be above 0 (it is the prior's inverse variance), got {prior_precision}")
    features = torch.as_tensor(features)
    scores = torch.as_tensor(scores)
    if features.dim() != 2 or scores.shape != features.shape[:1]:
        raise ValueError(f"features must be N×D and scores N, got {tuple(features.shape)} and {tuple(scores.shape)}")
    better_idx = torch.as_tensor(list(better), dtype=torch.long)
    worse_idx = torch.as_tensor(list(worse), dtype=torch.long)
    if better_idx.shape != worse_idx.shape:
        raise ValueError(f"{len(better_idx)} better but {len(worse_idx)} worse indices")
    dims = features.shape[1]
    hessian = prior_precision * torch.eye(dims, dtype=torch.float64)
    for start in range(0, len(better_idx), PAIRS_PER_STEP):
        b, w = better_idx[start : start + PAIRS_PER_STEP], worse_idx[start : start + PAIRS_PER_STEP]
        d = _as_float64(features[b]) - _as_float64(features[w])
        p = torch.sigmoid(_as_float64(scores[b]) - _as_float64(scores[w]))
        hessian += (d * (p * (1 - p)).unsqueeze(1)).T @ d
    return hessian


def task_margins(
    features,
    scores,
    tasks: Sequence[Sequence[int]],
    precision: torch.Tensor,
    *,
    sigma_floor: float = SIGMA_FLOOR,
) -> torch.Tensor:
    """Per task (a sequence of row indices into `features` / `scores`: its completions), the mean over its
    completion pairs of |s_i − s_j| / max(sqrt(d_ijᵀ H⁻¹ d_ij), sigma_floor), H = `precision` (from
    `laplace_precision`). float64, one per task; NaN for a task of fewer than two completions."""
    features = torch.as_tensor(features)
    scores = torch.as_tensor(scores)
    precision = _as_float64(precision)
    if precision.shape != (features.shape[1], features.shape[1]):
        raise ValueError(f"precision must be {features.shape[1]}×{features.shape[1]}, got {tuple(precision.shape)}")
    # H = L Lᵀ, so dᵀH⁻¹d = |L⁻¹d|²: one triangular solve per pair instead of an inverse.
    chol = torch.linalg.cholesky(precision)
    first, second, owner = [], [], []
    for t, rows in enumerate(tasks):
        rows = list(rows)
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                first.append(rows[i])
                second.append(rows[j])
                owner.append(t)
    totals = torch.zeros(len(tasks), dtype=torch.float64)
    counts = torch.zeros(len(tasks), dtype=torch.float64)
    first_idx = torch.as_tensor(first, dtype=torch.long)
    second_idx = torch.as_tensor(second, dtype=torch.long)
    owner_idx = torch.as_tensor(owner, dtype=torch.long)
    for start in range(0, len(first_idx), PAIRS_PER_STEP):
        a, b = first_idx[start : start + PAIRS_PER_STEP], second_idx[start : start + PAIRS_PER_STEP]
        d = _as_float64(features[a]) - _as_float64(features[b])
        whitened = torch.linalg.solve_triangular(chol, d.T, upper=False)
        sigma = whitened.square().sum(dim=0).sqrt().clamp_min(sigma_floor)
        gap = (_as_float64(scores[a]) - _as_float64(scores[b])).abs()
        owners = owner_idx[start : start + PAIRS_PER_STEP]
        totals.index_add_(0, owners, gap / sigma)
        counts.index_add_(0, owners, torch.ones_like(gap))
    return totals / counts  # 0/0 = NaN for a task without pairs
