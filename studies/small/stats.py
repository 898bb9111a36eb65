"""The small study's statistics: its verdicts from rliable intervals and from exact permutation tests.

The interquartile mean and its 95% stratified percentile-bootstrap interval (rliable; Agarwal et al., 2021, "Deep RL
at the edge of the statistical precipice") are scripts/plot_results.py's `interval`, shared with the sweeps' report:

    iv = interval(scores)                 # scores: [runs, tasks] (one column for one task) -> Interval
    verdict(a, b, lower_is_better=True)   # "holds" / "direction only" / "does not hold": is a better than b?

With 3 runs the IQM is the plain mean (a quarter of 3 runs trims nothing) and the percentile bootstrap interval is
exactly [smallest run, largest run] (about 75% coverage of the mean, not 95%); with 5 runs it is still close to the
range. So the interval describes the spread of the seeds, and is named so in the reports ("bootstrap interval");
whether one setting beats another is read from an exact permutation test instead:

    paired_p(a, b)                      # two-sided exact sign-flip p over the seeds a and b share ({seed: value})
    learned(init, end, lower_is_better) # did a measure improve over update 0 on the seeds (one-sided, paired)?
    holm(ps)                            # Holm's step-down adjustment over a family of comparisons
    read_test(p_holm, mean_diff, lower_is_better)  # "holds" / "reversed" / "direction only" / "not shown"
    permutation_p(a, b, lower_is_better=True)      # one-sided exact p of "a better than b" for unpaired runs

Where the arms share seeds (every latent-action model of a seed starts from the same seeded networks where the
architectures allow), the test is paired: scipy.stats.permutation_test flipping the sign of each seed's difference,
every pattern (exact), two-sided; Holm's correction (statsmodels) within each family of comparisons.
"""

import math

import numpy as np

from scripts.plot_results import Interval


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


def _mean_difference(x, y, axis):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _mean_paired_difference(x, y, axis):
    return np.mean(x - y, axis=axis)


def permutation_p(a, b, lower_is_better: bool) -> float:
    """One-sided exact permutation p-value that `a` is better than `b` (lower or higher mean), for runs that share
    nothing (unpaired): the fraction of the C(n_a + n_b, n_a) relabellings of the pooled runs whose mean difference
    is at least as favourable to `a` as the observed one (scipy.stats.permutation_test, every relabelling). With 5
    runs a side the smallest possible p is 1/252 (3 a side: 1/20 = 0.05). NaN without runs."""
    from scipy.stats import permutation_test

    a = [float(x) for x in a if math.isfinite(x)]
    b = [float(x) for x in b if math.isfinite(x)]
    if not a or not b:
        return math.nan
    sign = -1.0 if lower_is_better else 1.0  # larger = more favourable to a
    if min(len(a), len(b)) < 2:  # scipy needs two runs a side: the relabellings of the lone run, counted
        total, lone_a = sum(a) + sum(b), len(a) == 1
        stats = [sign * (v - (total - v) / len(b) if lone_a else (total - v) / len(a) - v) for v in a + b]
        observed = sign * (np.mean(a) - np.mean(b))
        return float(np.mean(np.array(stats) >= observed - 1e-12 * max(1.0, abs(observed))))
    alternative = "less" if lower_is_better else "greater"
    res = permutation_test((np.array(a), np.array(b)), _mean_difference, permutation_type="independent",
                           vectorized=True, n_resamples=np.inf, alternative=alternative)  # fmt: skip
    return float(res.pvalue)


def paired(a: dict, b: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """The seeds both per-seed dicts {seed: value} hold finite values for, and the two arrays in that order."""
    seeds = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    return seeds, np.array([a[s] for s in seeds], dtype=float), np.array([b[s] for s in seeds], dtype=float)


def paired_p(a: dict, b: dict, alternative: str = "two-sided") -> float:
    """Exact sign-flip permutation p-value of the mean of a[s] - b[s] over the seeds both share ({seed: value}):
    every one of the 2^n sign patterns of the per-seed differences (scipy.stats.permutation_test,
    permutation_type="samples"). alternative: "two-sided" (the default: either direction), "less" (a below b) or
    "greater". Two-sided, the smallest possible p is 2 / 2^n: 0.0625 with 5 seeds, 0.00195 with 10. NaN with no
    shared seed."""
    from scipy.stats import permutation_test

    seeds, x, y = paired(a, b)
    if not seeds:
        return math.nan
    if np.all(x == y):  # no difference at all: every sign pattern ties
        return 1.0
    if len(seeds) == 1:  # scipy needs two seeds: the two sign patterns of one difference, counted
        d = float(x[0] - y[0])
        return {"less": 0.5 if d < 0 else 1.0, "greater": 0.5 if d > 0 else 1.0, "two-sided": 1.0}[alternative]
    res = permutation_test((x, y), _mean_paired_difference, permutation_type="samples", vectorized=True,
                           n_resamples=np.inf, alternative=alternative)  # fmt: skip
    return float(min(1.0, res.pvalue))


def holm(ps: dict) -> dict:
    """Holm's step-down adjusted p-values of a family {name: p} (statsmodels' multipletests, method "holm"); NaN
    entries stay NaN and do not count."""
    from statsmodels.stats.multitest import multipletests

    keys = [k for k, p in ps.items() if math.isfinite(p)]
    out = {k: math.nan for k in ps}
    if keys:
        adjusted = multipletests([ps[k] for k in keys], alpha=ALPHA, method="holm")[1]
        out |= {k: float(p) for k, p in zip(keys, adjusted, strict=True)}
    return out


def learned(init: dict, end: dict, lower_is_better: bool) -> dict:
    """Whether a measure improved over update 0 (the initialised network) on the seeds ({seed: value} at update 0
    and at the end): per seed the change end - init, the seeds that improved, and the one-sided exact sign-flip p of
    "better than at update 0". `holds` where that p is below ALPHA (with 5 seeds: only when every seed improved; with
    10, p is 1/1024 when every seed improved and rises with the number and size of the changes the other way).
    The precondition of a finding's verdict: an arm that did not learn is not read."""
    seeds, x, y = paired(end, init)
    change = {s: float(e - i) for s, e, i in zip(seeds, x, y, strict=True)}
    improved = [s for s, d in change.items() if (d < 0 if lower_is_better else d > 0)]
    p = paired_p(dict(zip(seeds, x, strict=True)), dict(zip(seeds, y, strict=True)),
                 "less" if lower_is_better else "greater") if seeds else math.nan  # fmt: skip
    return {"change": change, "improved_seeds": improved, "n": len(seeds), "p_one_sided_paired": p,
            "holds": bool(math.isfinite(p) and p < ALPHA)}  # fmt: skip


def read_test(p_adjusted: float, mean_difference: float, lower_is_better: bool) -> str:
    """The verdict of a two-sided test of "a better than b" from its Holm-adjusted p and the mean of a - b: "holds"
    (significant, the claimed direction), "reversed" (significant, the other direction), "direction only" (not
    significant, the claimed direction), "not shown" (not significant, the other direction or no difference), "not
    measured" (no shared seeds)."""
    if not math.isfinite(p_adjusted) or not math.isfinite(mean_difference):
        return "not measured"
    claimed = mean_difference < 0 if lower_is_better else mean_difference > 0
    if p_adjusted < ALPHA:
        return "holds" if claimed else "reversed"
    return "direction only" if claimed else "not shown"
