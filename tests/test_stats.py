"""src/stats.py: rliable's IQM and stratified bootstrap intervals, and the verdicts read from them."""

import math

import numpy as np
import pytest

from src.stats import Interval, interval, verdict


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


def test_verdicts_from_intervals():
    low, high = Interval(1.0, 0.9, 1.1, 3), Interval(2.0, 1.8, 2.2, 3)
    overlapping = Interval(1.5, 1.0, 2.0, 3)
    assert verdict(low, high, lower_is_better=True) == "holds"
    assert verdict(high, low, lower_is_better=False) == "holds"
    assert verdict(low, overlapping, lower_is_better=True) == "direction only"
    assert verdict(high, low, lower_is_better=True) == "does not hold"
    assert verdict(Interval(1.0, 1.0, 1.0, 1), Interval(2.0, 2.0, 2.0, 1), True) == "direction only"  # one seed
    assert verdict(Interval(math.nan, math.nan, math.nan, 0), low, True) == "not measured"
