"""The small study's statistics: rliable intervals (with few seeds about [smallest, largest seed]: they describe the
spread) and exact paired sign-flip tests over shared seeds, with Holm's correction within each family.
"""

import math

import numpy as np

from scripts.plot_results import Interval

ALPHA = 0.05  # family-wise error rate of a report's verdicts (Holm)


def verdict(a: Interval, b: Interval, lower_is_better: bool) -> str:
    """Is a better than b: "holds" (intervals separate, 2+ runs each), "direction only" (IQMs only), "does not
    hold", or "not measured" without runs."""
    if a.n == 0 or b.n == 0:
        return "not measured"
    if (a.iqm - b.iqm) * (1.0 if lower_is_better else -1.0) >= 0:
        return "does not hold"
    separated = a.high < b.low if lower_is_better else a.low > b.high
    return "holds" if separated and min(a.n, b.n) >= 2 else "direction only"  # one seed has no interval


def _mean_paired_difference(x, y, axis):
    return np.mean(x - y, axis=axis)


def paired(a: dict, b: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """The seeds both per-seed dicts {seed: value} hold finite values for, and the two arrays in that order."""
    seeds = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    return seeds, np.array([a[s] for s in seeds], dtype=float), np.array([b[s] for s in seeds], dtype=float)


def paired_p(a: dict, b: dict, alternative: str = "two-sided") -> float:
    """Exact sign-flip p-value of the mean of a[s] - b[s] over the shared seeds (all 2^n sign patterns; two-sided the
    smallest p is 2 / 2^n: 0.0625 with 5 seeds, 0.00195 with 10); alternative "less": a below b. NaN without seeds."""
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
    """Holm's step-down adjusted p-values of a family {name: p}; NaN entries stay NaN and do not count."""
    from statsmodels.stats.multitest import multipletests

    keys = [k for k, p in ps.items() if math.isfinite(p)]
    out = {k: math.nan for k in ps}
    if keys:
        adjusted = multipletests([ps[k] for k in keys], alpha=ALPHA, method="holm")[1]
        out |= {k: float(p) for k, p in zip(keys, adjusted, strict=True)}
    return out


def learned(init: dict, end: dict, lower_is_better: bool) -> dict:
    """Did a measure improve over update 0: per-seed change end - init, the seeds that improved, the one-sided paired
    sign-flip p, and `holds` where p < ALPHA (with 5 seeds: only when every seed improved)."""
    seeds, x, y = paired(end, init)
    change = {s: float(e - i) for s, e, i in zip(seeds, x, y, strict=True)}
    improved = [s for s, d in change.items() if (d < 0 if lower_is_better else d > 0)]
    p = paired_p(dict(zip(seeds, x, strict=True)), dict(zip(seeds, y, strict=True)),
                 "less" if lower_is_better else "greater") if seeds else math.nan  # fmt: skip
    return {"change": change, "improved_seeds": improved, "n": len(seeds), "p_one_sided_paired": p,
            "holds": bool(math.isfinite(p) and p < ALPHA)}  # fmt: skip


def read_test(p_adjusted: float, mean_difference: float, lower_is_better: bool) -> str:
    """The verdict of a two-sided test of "a better than b" from its Holm p and the mean of a - b: "holds" / "reversed"
    (significant, the claimed / the other direction), "direction only" / "not shown" (not significant)."""
    if not math.isfinite(p_adjusted) or not math.isfinite(mean_difference):
        return "not measured"
    claimed = mean_difference < 0 if lower_is_better else mean_difference > 0
    if p_adjusted < ALPHA:
        return "holds" if claimed else "reversed"
    return "direction only" if claimed else "not shown"
