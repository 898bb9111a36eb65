"""src/stats.py: rliable's IQM and stratified bootstrap intervals, and the verdicts read from them."""

import math

import numpy as np
import pytest

from src.stats import Interval, decide, holm, interval, permutation_p, verdict


def test_iqm_and_interval_of_few_seeds():
    iv = interval([0.2, 0.4, 0.6])
    assert iv.iqm == pytest.approx(0.4) and iv.n == 3  # a quarter of 3 runs trims nothing: the mean
    assert iv.low == pytest.approx(0.2) and iv.high == pytest.approx(0.6)  # 1/27 of resamples are all-low
    eight = interval(np.arange(8.0))
    assert eight.iqm == pytest.approx(np.mean([2, 3, 4, 5]))  # the middle half of 8 runs
    assert interval([0.2, 0.4, 0.6]) == iv  # seeded: the same scores, the same interval
    assert interval([]).n == 0 and math.isnan(interval([math.nan]).iqm)
    # runs x tasks: the bootstrap is stratified by task (each column resampled on its own)
    two = interval(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]))
    assert two.n == 3 and two.low < two.iqm < two.high


def test_the_same_scores_give_the_same_interval_whatever_the_global_random_state():
    """arch draws part of rliable's resamples from numpy's global generator: interval() seeds it for the call, so
    a report's intervals do not depend on what ran before them in the process, and restores it after."""
    scores = [0.0682, 0.0765, 0.0578, 0.0654, 0.0598]  # five seeds: the resamples decide the interval's ends
    first = interval(scores)
    np.random.seed(5)
    np.random.rand(10)
    after = np.random.get_state()[1].copy()
    assert interval(scores) == first
    assert (np.random.get_state()[1] == after).all()  # the caller's global state is left as it was
    interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert interval(scores) == first


def test_verdicts_from_intervals():
    low, high = Interval(1.0, 0.9, 1.1, 3), Interval(2.0, 1.8, 2.2, 3)
    overlapping = Interval(1.5, 1.0, 2.0, 3)
    assert verdict(low, high, lower_is_better=True) == "holds"
    assert verdict(high, low, lower_is_better=False) == "holds"
    assert verdict(low, overlapping, lower_is_better=True) == "direction only"
    assert verdict(high, low, lower_is_better=True) == "does not hold"
    assert verdict(Interval(1.0, 1.0, 1.0, 1), Interval(2.0, 2.0, 2.0, 1), True) == "direction only"  # one seed
    assert verdict(Interval(math.nan, math.nan, math.nan, 0), low, True) == "not measured"


def test_exact_permutation_p_and_holm_against_hand_counts():
    # 3 against 3, completely separated: only 1 of the C(6, 3) = 20 relabellings is as extreme
    assert permutation_p([1, 2, 3], [4, 5, 6], lower_is_better=True) == pytest.approx(1 / 20)
    assert permutation_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], lower_is_better=True) == pytest.approx(1 / 252)
    assert permutation_p([4, 5, 6], [1, 2, 3], lower_is_better=False) == pytest.approx(1 / 20)
    assert permutation_p([4, 5, 6], [1, 2, 3], lower_is_better=True) == 1.0  # the wrong direction
    # one swap of ranks: the observed difference (6 - 3) / 2 is reached by 2 of the C(4, 2) = 6 splits
    assert permutation_p([1, 3], [2, 4], lower_is_better=True) == pytest.approx(2 / 6)
    assert math.isnan(permutation_p([], [1.0], lower_is_better=True))
    assert permutation_p([1.0, math.nan, 2.0], [3.0, 4.0], lower_is_better=True) == pytest.approx(1 / 6)
    # Holm: sorted p times (m - rank), running maximum, capped at 1; NaN stays out of the count
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06) and math.isnan(adjusted["d"])
    a, b = Interval(1.0, 0.9, 1.1, 5), Interval(2.0, 1.8, 2.2, 5)
    assert decide(0.01, a, b, lower_is_better=True) == "holds"
    assert decide(0.2, a, b, lower_is_better=True) == "direction only"
    assert decide(0.01, b, a, lower_is_better=True) == "does not hold"
    assert decide(math.nan, a, Interval(math.nan, math.nan, math.nan, 0), lower_is_better=True) == "not measured"
