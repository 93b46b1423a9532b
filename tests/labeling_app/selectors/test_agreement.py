"""Each agreement statistic against values computed by hand (the arithmetic is written out)."""

from __future__ import annotations

import pytest

from labeling_app.selectors import agreement as a

T, F = True, False


def test_ranking_pair_agreement_counts_pairs_ordered_alike():
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); only (0,1) is reversed in b -> 5 of 6 agree
    assert a.ranking_pair_agreement([1, 2, 3, 4], [2, 1, 3, 4]) == (5, 6)


def test_ranking_pair_agreement_leaves_out_tied_pairs():
    # (0,1) tied in the first ranking: not comparable; (0,2) and (1,2) agree -> 2 of 2
    assert a.ranking_pair_agreement([1, 1, 2], [1, 2, 3]) == (2, 2)
    assert a.ranking_pair_agreement([1, 2], [2, 1]) == (0, 1)


def test_kendall_tau_b_without_ties():
    # concordant 5, discordant 1, n0 = 6: (5 - 1) / 6
    assert a.kendall_tau_b([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(4 / 6)


def test_kendall_tau_b_with_ties():
    # x=[1,1,2,3], y=[1,2,2,3]: (0,1) tied in x, (1,2) tied in y, the other 4 pairs concordant.
    # n0 = 6, tx = 1, ty = 1: tau_b = (4 - 0) / sqrt((6 - 1) * (6 - 1)) = 4 / 5
    assert a.kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert a.kendall_tau_b([1, 1], [1, 2]) is None  # no untied pair in x: undefined


def test_krippendorff_alpha_ordinal_by_hand():
    # Units (coder1, coder2): (1,1) (2,3) (3,3), plus a unit with one value (not pairable).
    # Coincidences, each pair weighted 1/(m_u - 1) = 1: o11 = 2, o23 = o32 = 1, o33 = 2.
    # Marginals: n1 = 2, n2 = 1, n3 = 3, n = 6.
    # Ordinal delta^2: d(1,2) = (n1 + n2 - (n1 + n2)/2)^2 = (3 - 1.5)^2 = 2.25
    #                  d(2,3) = (n2 + n3 - (n2 + n3)/2)^2 = (4 - 2)^2 = 4
    #                  d(1,3) = (n1 + n2 + n3 - (n1 + n3)/2)^2 = (6 - 2.5)^2 = 12.25
    # Observed: o23*4 + o32*4 = 8.
    # Expected: 2 * (n1 n2 d12 + n1 n3 d13 + n2 n3 d23) / (n - 1) = 2 * (4.5 + 73.5 + 12) / 5 = 36.
    # alpha = 1 - 8 / 36 = 7/9
    units = [[1, 1], [2, 3], [3, 3], [5, None]]
    assert a.krippendorff_alpha_ordinal(units) == pytest.approx(7 / 9)


def test_krippendorff_alpha_is_one_for_perfect_agreement_and_none_without_variation():
    assert a.krippendorff_alpha_ordinal([[1, 1], [4, 4], [7, 7]]) == pytest.approx(1.0)
    assert a.krippendorff_alpha_ordinal([[3, 3], [3, 3]]) is None
    assert a.krippendorff_alpha_ordinal([[3, None]]) is None


def test_cohen_kappa_by_hand():
    # agree on 6 of 8: p_o = 0.75. Both raters say yes 5 times, no 3 times:
    # p_e = (5*5 + 3*3) / 64 = 34/64 = 0.53125; kappa = (0.75 - 0.53125) / (1 - 0.53125) = 7/15
    ra = [T, T, F, F, T, F, T, T]
    rb = [T, F, F, F, T, T, T, T]
    assert a.cohen_kappa(ra, rb) == pytest.approx(7 / 15)


def test_fleiss_kappa_and_percent_agreement_by_hand():
    # Items with 3 answers: [yes yes yes], [yes yes no], [no no no].
    # p_yes = 5/9, p_no = 4/9 -> P_e = 25/81 + 16/81 = 41/81.
    # P_i = (sum n_ij^2 - n) / (n (n - 1)): 1, (4 + 1 - 3)/6 = 1/3, 1 -> P_bar = 7/9.
    # kappa = (7/9 - 41/81) / (1 - 41/81) = (22/81) / (40/81) = 0.55
    items = [[T, T, T], [T, T, F], [F, F, F]]
    assert a.fleiss_kappa(items) == pytest.approx(0.55)
    # percent agreement: share of equal answer pairs per item 1, 1/3, 1 -> mean 7/9
    assert a.percent_agreement(items) == pytest.approx(7 / 9)


def test_binary_agreement_picks_cohen_for_two_answers_and_fleiss_for_more():
    two = a.binary_agreement([[T, T], [T, F], [F, F], [F, F], [T, T], [F, T], [T, T], [T, T]])
    assert two["kappa_kind"] == "Cohen" and two["kappa"] == pytest.approx(7 / 15)
    assert two["percent"] == pytest.approx(6 / 8)
    three = a.binary_agreement([[T, T, T], [T, T, F], [F, F, F], [T]])  # the single answer is not an item
    assert three["kappa_kind"] == "Fleiss" and three["kappa"] == pytest.approx(0.55) and three["items"] == 3
    with pytest.raises(ValueError):
        a.fleiss_kappa([[T, T], [T, T, F]])


def test_position_bias_and_rating_contradictions():
    assert a.first_shown_ranked_best([30, 10, 20], {10: 1, 20: 2, 30: 1}) is True  # tied for best counts
    assert a.first_shown_ranked_best([20, 10, 30], {10: 1, 20: 2, 30: 3}) is False
    assert a.first_shown_ranked_best([], {10: 1}) is None
    # ranks [1,2,3], likert [5,6,2]: completion 0 ranked above 1 but rated lower -> 1 contradicting pair
    assert a.rating_contradictions([1, 2, 3], [5, 6, 2]) == 1
    assert a.rating_contradictions([1, 1, 2], [3, 6, 2]) == 0  # a tie contradicts nothing
    assert a.rating_contradictions([1, 2], [None, 7]) == 0
    assert a.median([4, 1, 3]) == 3 and a.median([4, 1, 3, 10]) == 3.5 and a.median([]) is None
