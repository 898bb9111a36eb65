"""The reports' statistics: rliable's IQM and stratified bootstrap intervals (scripts/plot_results.py), and the small
study's exact paired permutation tests (scipy), Holm's correction (statsmodels) and the verdicts read from them
(studies/small/stats.py)."""

import math

import numpy as np
import pytest

from scripts.plot_results import Interval, interval
from studies.small.stats import holm, learned, paired_p, read_test, verdict


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


def test_holm_against_hand_counts():
    # Holm: sorted p times (m - rank), running maximum, capped at 1; NaN stays out of the count
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06) and math.isnan(adjusted["d"])


def test_paired_sign_flip_p_against_hand_counts():
    """Two-sided exact sign flip over the shared seeds: all differences of one sign are 1 (or its mirror) of the
    2^n patterns on each side."""
    a = {s: 1.0 + s for s in range(5)}
    b = {s: 2.0 + 2 * s for s in range(5)}  # a below b on every seed
    assert paired_p(a, b) == pytest.approx(2 / 32)  # the smallest two-sided p of 5 seeds: above 0.05
    assert paired_p(a, b, "less") == pytest.approx(1 / 32) and paired_p(a, b, "greater") == pytest.approx(1.0)
    ten_a, ten_b = {s: float(s) for s in range(10)}, {s: s + 0.5 + 0.1 * s for s in range(10)}
    assert paired_p(ten_a, ten_b) == pytest.approx(2 / 1024)
    # one seed of 4 the other way, the smallest |difference|: patterns at least as extreme are 2 per side of 16
    x, y = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}, {0: 2.0, 1: 3.0, 2: 4.0, 3: 0.5}
    assert paired_p(x, y, "less") == pytest.approx(2 / 16) and paired_p(x, y) == pytest.approx(4 / 16)
    # only the seeds both hold count; NaN where none is shared; no difference at all is p = 1
    assert paired_p({0: 1.0, 1: 2.0, 9: 5.0}, {0: 3.0, 1: 4.0, 2: 0.0}, "less") == pytest.approx(1 / 4)
    assert math.isnan(paired_p({0: 1.0}, {1: 1.0})) and paired_p(a, a) == 1.0
    # one seed: its two sign patterns (scipy needs two seeds)
    assert paired_p({0: 1.0}, {0: 2.0}) == 1.0 and paired_p({0: 1.0}, {0: 2.0}, "less") == 0.5
    assert paired_p({0: 1.0}, {0: 2.0}, "greater") == 1.0
    # a constant shift on every seed is significant when paired
    base = {s: float(10 * s) for s in range(6)}
    shifted = {s: v + 1.0 for s, v in base.items()}
    assert paired_p(base, shifted) == pytest.approx(2 / 64)


def test_learned_and_the_verdicts_of_a_two_sided_test():
    init = {s: 0.8 for s in range(5)}
    end = {0: 0.5, 1: 0.6, 2: 0.55, 3: 0.7, 4: 0.65}
    got = learned(init, end, lower_is_better=True)
    assert got["holds"] and got["p_one_sided_paired"] == pytest.approx(1 / 32) and len(got["improved_seeds"]) == 5
    assert got["change"][0] == pytest.approx(-0.3)
    worse = learned(init, {0: 0.5, 1: 0.6, 2: 0.55, 3: 0.7, 4: 0.9}, lower_is_better=True)  # one seed got worse
    assert not worse["holds"] and worse["improved_seeds"] == [0, 1, 2, 3]
    assert not learned(init, end, lower_is_better=False)["holds"]  # the same change, read as R²: got worse
    assert read_test(0.01, -1.0, lower_is_better=True) == "holds"
    assert read_test(0.01, 1.0, lower_is_better=True) == "reversed"
    assert read_test(0.2, -1.0, lower_is_better=True) == "direction only"
    assert read_test(0.2, 1.0, lower_is_better=True) == "not shown"
    assert read_test(0.01, 1.0, lower_is_better=False) == "holds"
    assert read_test(math.nan, 1.0, lower_is_better=False) == "not measured"
