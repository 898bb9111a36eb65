"""Few-seed statistics of the reports (scripts/plot_results.py, scripts/small/report.py), through rliable.

rliable (Agarwal et al., 2021, "Deep RL at the edge of the statistical precipice") is the well-kept library for
what a handful of seeds allows: the interquartile mean (IQM: the mean of the middle 50% of all runs x tasks) and
95% stratified percentile-bootstrap intervals of the IQM (runs resampled with replacement within each task).

    iv = interval(scores)                 # scores: [runs, tasks] (one column for one task) -> Interval
    verdict(a, b, lower_is_better=True)   # "holds" / "direction only" / "does not hold": is a better than b?

With 3 runs the IQM is the plain mean (a quarter of 3 runs trims nothing) and the percentile bootstrap interval is
exactly [smallest run, largest run] (about 75% coverage of the mean, not 95%); with 5 runs it is still close to the
range. So the interval describes the spread of the seeds, and is named so in the reports ("bootstrap interval");
whether one setting beats another is read from an exact permutation test instead:

    permutation_p(a, b, lower_is_better=True)   # one-sided exact p-value of "a better than b" (difference of means)
    holm(ps)                                    # Holm's step-down adjustment over a family of comparisons
    decide(p_adjusted, a, b, lower_is_better)   # "holds" / "direction only" / "does not hold"
"""

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

REPS = 2000  # bootstrap resamples (rliable's default is 50000; 2000 gives the 2.5% / 97.5% quantiles to ~1%)
CONFIDENCE = 0.95


@dataclass
class Interval:
    iqm: float  # interquartile mean over runs x tasks
    low: float  # rliable's 95% stratified percentile-bootstrap interval of the IQM (not a confidence interval:
    # with n seeds it spans at most [lowest, highest] and covers the mean less often than 95% when n is small)
    high: float
    n: int  # runs (seeds) per task

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if not math.isfinite(self.iqm):
            return "–"
        return f"{self.iqm:.3g} [{self.low:.3g}, {self.high:.3g}]"


def interval(scores, seed: int = 0, reps: int = REPS) -> Interval:
    """IQM and its 95% bootstrap interval of scores [runs, tasks] (a 1-D array is one task); NaN when there are no
    runs. The bootstrap is seeded (numpy's global generator too, for the call): the same scores give the same
    interval, whatever ran before."""
    from rliable import library as rly
    from rliable import metrics

    a = np.asarray(scores, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    a = a[np.isfinite(a).all(axis=1)]
    if a.shape[0] == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if a.shape[0] == 1:  # one run: no spread to resample
        v = float(metrics.aggregate_iqm(a))
        return Interval(v, v, v, 1)
    # rliable passes random_state on to arch, which still draws part of the resamples from numpy's global generator:
    # seeded here for the call (and restored after), so the same scores give the same interval in any process
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        point, ci = rly.get_interval_estimates(
            {"x": a},
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )
    finally:
        np.random.set_state(state)
    return Interval(float(point["x"][0]), float(ci["x"][0, 0]), float(ci["x"][1, 0]), a.shape[0])


def verdict(a: Interval, b: Interval, lower_is_better: bool) -> str:
    """Whether a is better than b: "holds" where the 95% intervals separate in that direction (each from 2 runs or
    more), "direction only" where the IQMs order that way but the intervals overlap (or a side has one run), "does
    not hold" otherwise (or "not measured")."""
    if a.n == 0 or b.n == 0:
        return "not measured"
    sign = 1.0 if lower_is_better else -1.0
    if sign * (a.iqm - b.iqm) >= 0:
        return "does not hold"
    separated = a.high < b.low if lower_is_better else a.low > b.high
    if min(a.n, b.n) < 2:  # one seed has no interval: an ordering, never a separation
        return "direction only"
    return "holds" if separated else "direction only"


ALPHA = 0.05  # family-wise error rate of a report's verdicts (Holm)


def permutation_p(a, b, lower_is_better: bool) -> float:
    """One-sided exact permutation p-value that `a` is better than `b` (lower or higher mean): the fraction of the
    C(n_a + n_b, n_a) relabellings of the pooled runs whose mean difference is at least as favourable to `a` as the
    observed one. With 5 runs a side the smallest possible p is 1/252 (3 a side: 1/20 = 0.05). NaN without runs."""
    a = [float(x) for x in a if math.isfinite(x)]
    b = [float(x) for x in b if math.isfinite(x)]
    if not a or not b:
        return math.nan
    sign = -1.0 if lower_is_better else 1.0  # the statistic: larger = more favourable to a
    pooled = np.array(a + b)
    total, n = pooled.sum(), len(a)
    observed = sign * (np.mean(a) - np.mean(b))
    hits = count = 0
    for idx in itertools.combinations(range(len(pooled)), n):
        sa = pooled[list(idx)].sum()
        stat = sign * (sa / n - (total - sa) / len(b))
        hits += stat >= observed - 1e-12
        count += 1
    return hits / count


def holm(ps: dict) -> dict:
    """Holm's step-down adjusted p-values of a family {name: p} (NaN entries stay NaN and do not count)."""
    finite = sorted((p, k) for k, p in ps.items() if math.isfinite(p))
    m, out, running = len(finite), {k: math.nan for k in ps}, 0.0
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def decide(p_adjusted: float, a: Interval, b: Interval, lower_is_better: bool) -> str:
    """ "holds" where a is better than b with a Holm-adjusted permutation p below ALPHA, "direction only" where the
    IQMs order that way without it, "does not hold" otherwise ("not measured" without runs)."""
    if a.n == 0 or b.n == 0 or not math.isfinite(p_adjusted):
        return "not measured"
    sign = 1.0 if lower_is_better else -1.0
    if sign * (a.iqm - b.iqm) >= 0:
        return "does not hold"
    return "holds" if p_adjusted < ALPHA else "direction only"
