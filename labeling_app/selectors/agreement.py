"""Inter-labeler agreement statistics as plain functions over plain data (no Django, no I/O).

Conventions shared by the functions:
- A ranking is a sequence of ranks, one per completion in a fixed order; 1 = best, equal ranks are ties.
- A statistic that is undefined on its input (no comparable pairs, no variation) returns None,
  never a made-up 0 or 1: the pages show "—".
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations
from typing import Hashable, Iterable, NamedTuple, Sequence


def ranking_pair_agreement(ranks_a: Sequence[int], ranks_b: Sequence[int]) -> tuple[int, int]:
    """(agreeing, comparable): of the completion pairs both rankings order strictly (no tie in either),
    how many they order the same way. InstructGPT's inter-labeler figure is agreeing / comparable
    summed over all pairs of labelers on the same task."""
    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"the two rankings rank different numbers of completions ({len(ranks_a)} vs {len(ranks_b)})")
    agreeing = comparable = 0
    for i, j in combinations(range(len(ranks_a)), 2):
        da, db = ranks_a[i] - ranks_a[j], ranks_b[i] - ranks_b[j]
        if da == 0 or db == 0:
            continue
        comparable += 1
        agreeing += (da > 0) == (db > 0)
    return agreeing, comparable


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties corrected): (concordant - discordant) / sqrt((n0 - tx) (n0 - ty))."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    concordant = discordant = tied_x = tied_y = 0
    n0 = 0
    for i, j in combinations(range(len(x)), 2):
        n0 += 1
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0:
            tied_x += 1
        if dy == 0:
            tied_y += 1
        if dx and dy:
            if (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def krippendorff_alpha_ordinal(units: Iterable[Sequence[int | None]]) -> float | None:
    """Krippendorff's alpha with the ordinal difference function.

    `units`: one sequence per rated thing (here: a completion of a task), holding each coder's value
    or None where that coder gave none. Units with fewer than two values are not pairable and are
    dropped. alpha = 1 - D_o / D_e from the coincidence matrix o_ck (Krippendorff 2011,
    "Computing Krippendorff's Alpha-Reliability"), with the ordinal metric
    delta^2(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2.
    """
    coincidence: Counter = Counter()
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for a in range(m):
            for b in range(m):
                if a != b:
                    coincidence[(values[a], values[b])] += 1 / (m - 1)
    return krippendorff_alpha_from_coincidence(coincidence)


def krippendorff_alpha_from_coincidence(coincidence: dict[tuple[int, int], float]) -> float | None:
    """Ordinal alpha from the coincidence matrix {(c, k): o_ck} (what SQL sums per unit:
    n_uc * (n_uk - [c == k]) / (m_u - 1)); see `krippendorff_alpha_ordinal`."""
    coincidence = {ck: w for ck, w in coincidence.items() if w}
    if not coincidence:
        return None
    categories = sorted({c for c, _ in coincidence})
    n_c = {c: sum(w for (a, _), w in coincidence.items() if a == c) for c in categories}
    n = sum(n_c.values())
    index = {c: i for i, c in enumerate(categories)}

    def delta2(c, k) -> float:
        lo, hi = sorted((index[c], index[k]))
        between = sum(n_c[categories[g]] for g in range(lo, hi + 1))
        return (between - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(w * delta2(c, k) for (c, k), w in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in categories for k in categories) / (n - 1)
    if expected == 0:
        return None
    return 1 - observed / expected


def percent_agreement(items: Iterable[Sequence[Hashable]]) -> float | None:
    """Mean over items (with two or more answers) of the share of answer pairs that are equal."""
    shares = []
    for answers in items:
        pairs = list(combinations(answers, 2))
        if pairs:
            shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else None


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa for two raters over the same items: (p_o - p_e) / (1 - p_e)."""
    if len(a) != len(b):
        raise ValueError(f"the raters answered different numbers of items ({len(a)} vs {len(b)})")
    if not a:
        return None
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    p_e = sum(count_a[c] * count_b[c] for c in set(count_a) | set(count_b)) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(items: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa: every item answered by the same number n >= 2 of (not necessarily the same) raters."""
    if not items:
        return None
    n = len(items[0])
    if n < 2 or any(len(answers) != n for answers in items):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of answers for every item")
    counts = [Counter(answers) for answers in items]
    categories = set().union(*counts)
    big_n = len(items)
    p_j = {c: sum(cnt[c] for cnt in counts) / (big_n * n) for c in categories}
    p_i = [(sum(v * v for v in cnt.values()) - n) / (n * (n - 1)) for cnt in counts]
    p_bar = sum(p_i) / big_n
    p_e = sum(p * p for p in p_j.values())
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def binary_agreement(items: Sequence[Sequence[Hashable]]) -> dict:
    """Percent agreement plus the kappa that fits: Cohen's when every item has two answers, Fleiss'
    over the items with the most common number of answers (>= 3) otherwise."""
    items = [list(answers) for answers in items if len(answers) >= 2]
    out = {"items": len(items), "percent": percent_agreement(items), "kappa": None, "kappa_kind": ""}
    if not items:
        return out
    n, _ = Counter(len(a) for a in items).most_common(1)[0]
    same_n = [a for a in items if len(a) == n]
    if n == 2:
        out["kappa"], out["kappa_kind"] = cohen_kappa([a[0] for a in same_n], [a[1] for a in same_n]), "Cohen"
    else:
        out["kappa"], out["kappa_kind"] = fleiss_kappa(same_n), "Fleiss"
    out["kappa_items"] = len(same_n)
    return out


def first_shown_ranked_best(shown_order: Sequence[int], ranks: dict[int, int]) -> bool | None:
    """Whether the completion shown first got rank 1 (ties for best count); None when unknown."""
    if not shown_order or shown_order[0] not in ranks:
        return None
    return ranks[shown_order[0]] == min(ranks.values())


def rating_contradictions(ranks: Sequence[int], likerts: Sequence[int | None]) -> int:
    """Pairs where one completion is ranked strictly better but rated strictly worse on the Likert scale."""
    count = 0
    for i, j in combinations(range(len(ranks)), 2):
        if likerts[i] is None or likerts[j] is None:
            continue
        if (ranks[i] < ranks[j] and likerts[i] < likerts[j]) or (ranks[j] < ranks[i] and likerts[j] < likerts[i]):
            count += 1
    return count


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


class BinaryTally(NamedTuple):
    """Items of a yes/no question that share these figures: `items` items, each with `answers` answers of which
    `yes` are True; `first` and `second` the answers of its two raters in label order when it has exactly two (for
    Cohen's kappa; None when it has more, Fleiss' kappa needs only `yes`); `first_seen`
    orders the groups as the items came (the first group of the most common size wins a tie, as in Counter)."""

    answers: int
    yes: int
    first: bool | None
    second: bool | None
    items: int
    first_seen: Sequence = ()


def binary_agreement_from_tallies(tallies: Iterable[BinaryTally]) -> dict:
    """`binary_agreement` from grouped counts instead of one list per item (what SQL returns)."""
    tallies = [t for t in tallies if t.answers >= 2]
    n_items = sum(t.items for t in tallies)
    out = {"items": n_items, "percent": None, "kappa": None, "kappa_kind": ""}
    if not n_items:
        return out

    def pairs(n: int) -> int:
        return n * (n - 1) // 2

    out["percent"] = (
        sum(t.items * (pairs(t.yes) + pairs(t.answers - t.yes)) / pairs(t.answers) for t in tallies) / n_items
    )
    per_size: dict[int, int] = Counter()
    seen: dict[int, Sequence] = {}
    for t in tallies:
        per_size[t.answers] += t.items
        seen[t.answers] = min(seen.get(t.answers, t.first_seen), t.first_seen)
    n = max(per_size, key=lambda size: (per_size[size], [-x for x in seen[size]]))
    same_n = [t for t in tallies if t.answers == n]
    big_n = per_size[n]
    if n == 2:
        p_o = sum(t.items for t in same_n if t.first == t.second) / big_n
        count_a, count_b = Counter(), Counter()
        for t in same_n:
            count_a[t.first] += t.items
            count_b[t.second] += t.items
        p_e = sum(count_a[c] * count_b[c] for c in (True, False)) / (big_n * big_n)
        out["kappa"], out["kappa_kind"] = (None if p_e == 1 else (p_o - p_e) / (1 - p_e)), "Cohen"
    else:
        yes = sum(t.items * t.yes for t in same_n)
        p_e = sum((c / (big_n * n)) ** 2 for c in (yes, big_n * n - yes))
        p_bar = sum(t.items * (t.yes**2 + (n - t.yes) ** 2 - n) / (n * (n - 1)) for t in same_n) / big_n
        out["kappa"], out["kappa_kind"] = (None if p_e == 1 else (p_bar - p_e) / (1 - p_e)), "Fleiss"
    out["kappa_items"] = big_n
    return out
