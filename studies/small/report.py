"""The report of the small study (studies/small/reproduce.sh, tune.sh): the tuning table and choices, the
preconditions, verdicts on the paper's findings F1-F6 and on its mechanism, figures, summary.json.

    python -m studies.small.report --small_dir runs/small --out runs/small/report            # the study
    python -m studies.small.report --small_dir runs/small --out runs/small/report --tuning   # the tuning only

Latent quality: the held-out ridge probe's MSE over the mean action's; returns over this sweep's BC on all data.
Findings compare paired arms by each one's change from update 0, with exact sign-flip tests and Holm (stats.py); an
arm that did not learn is "not readable". The mechanism: held-out canonical correlations (src/probes.py).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyrallis

from scripts.plot_results import RETURN_KEY, Interval, _md, _save, interval
from src.files import nan_to_none, write_json
from studies.small.stats import holm, learned, paired, paired_p, read_test, verdict

ENV = "cheetah-run"
# variant -> (path below runs/, label)
VARIANTS = {
    "lapo": ("lapo", "LAPO"),
    "laom": ("laom", "LAOM"),
    "laom_labels": ("laom_labels", "LAOM + supervision"),
    "idm": ("idm", "IDM"),
    "bc": ("bc", "BC (labeled)"),
    "bc_full": ("bc_full", "BC on all data"),
    "lapo_vanilla": ("vanilla/lapo", "LAPO, no distractors"),
    "laom_vanilla": ("vanilla/laom", "LAOM, no distractors"),
    "laom_noaug": ("noaug/laom", "LAOM, no augmentations"),
    "lapo_mask": ("lapo_mask", "masked LAPO (true masks)"),
}
LAMS = ("lapo", "lapo_vanilla", "laom", "laom_vanilla", "laom_noaug", "laom_labels", "lapo_mask")
OPTIONAL = ("laom_noaug", "laom_vanilla")  # run only when asked (NOAUG=1, ONLY): not "missing" when absent
# Leakage targets (src/probes.py): the action, the agent's own state change, each distractor's change.
TARGETS = ("action", "agent_state", "background", "camera", "color")
DISTRACTOR_TARGETS = ("background", "camera", "color")
# The second family of tests: less distractor leakage than LAPO (lower test R²), for each distractor.
LEAKAGE_TESTS = [(a, "lapo", t) for a in ("laom", "lapo_mask") for t in DISTRACTOR_TARGETS]
DECODABLE = 0.02  # a leakage comparison is read only where one side's test R² (IQM) reaches this
# The share of each latent's variance the agent's or the distractors' changes explain linearly (src/probes.py).
SHARES = ("latent_from_agent", "latent_from_distractors")
# Held-out canonical correlations of the latent (src/probes.py: cca_<source>), measures that rescaling cannot change.
CCA_SOURCES = ("agent", "distractors")
# The third family, the mechanism: distractors take LAPO's latent from the agent; LAOM, supervision and the true
# masks give it back. (a, b, source, higher is better)
MECHANISM_TESTS = [("lapo_vanilla", "lapo", "agent", True), ("laom", "lapo", "agent", True),
                   ("laom_labels", "laom", "agent", True), ("lapo_mask", "lapo", "agent", True),
                   ("laom", "lapo", "distractors", False), ("laom_labels", "laom", "distractors", False),
                   ("lapo_mask", "lapo", "distractors", False)]  # fmt: skip
OTHERS = ("lapo", "laom", "idm", "bc")  # what LAOM + supervision's return is compared with (F4)
PAPER_F2 = 8.0  # the paper's ratio (abstract): LAOM's probe 8x better than LAPO's


@dataclass
class Config:
    small_dir: str = "runs/small"  # SMALL_DIR of studies/small/reproduce.sh
    out: str = "runs/small/report"  # output folder
    seeds: str = "0 1 2 3 4 5 6 7 8 9"  # the reported seeds
    budget: int = 2  # labeled trajectories
    tuning: bool = False  # only the tuning table (after studies/small/tune.sh)
    latents: bool = True  # the latent picture (loads the LAM checkpoints of the first seed)


def _num(x) -> float:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else math.nan


def _rel(m: dict, key: str = "lapo/ridge_probe_mse", base: str = "") -> float:
    """A probe's MSE over its baseline's (by default the key with _baseline_mse for _mse)."""
    base = base or key.replace("_mse", "_baseline_mse")
    return _num(m.get(key)) / _num(m.get(base)) if key in m and base in m else math.nan


def _pca128(m: dict, pre: str = "lapo/") -> float:
    """The probe on the top 128 principal components; latents of 128 dimensions or fewer (LAPO) have only the full."""
    key = "ridge_probe_pca128_mse" if "lapo/ridge_probe_pca128_mse" in m else "ridge_probe_mse"
    return _rel(m, pre + key, pre + "ridge_probe_baseline_mse")


def tuning(small_dir: Path) -> dict:
    """Rows of every tuning run and the choice per method by its paper criterion (validation data only)."""
    rows = []
    for f in sorted((small_dir / "tune").glob("*/*/results.json")):
        r = json.loads(f.read_text())
        m = r["metrics"]
        row = {"method": f.parent.parent.name, "setting": f.parent.name, "seconds": round(r.get("total_seconds", 0.0))}
        if "lapo/ridge_probe_val_mse" in m:
            base = _num(m["lapo/ridge_probe_val_baseline_mse"])
            row |= {
                "init_value": _rel(m, "lapo/init/ridge_probe_val_mse"),
                "criterion": "validation ridge MSE / baseline (lower is better)",
                "value": _rel(m, "lapo/ridge_probe_val_mse"),
                "test_not_used": _rel(m),
                "curve": [[p[0], p[1] / base] for p in r["stages"]["lapo"].get("lapo/ridge_probe_curve") or []],
                "lower_is_better": True,
            }
        elif "idm/eval_action_mse" in m:
            row |= {"criterion": "validation action MSE (lower is better)", "value": _num(m["idm/eval_action_mse"])}
            row["lower_is_better"] = True
        elif "bc/eval_returns_mean" in m:
            episodes = len(r["stages"].get("bc", {}).get("bc/eval_returns") or []) or "?"
            row["criterion"] = f"online return, {episodes} episodes (higher is better)"
            row["value"], row["lower_is_better"] = _num(m["bc/eval_returns_mean"]), False
            row["train_loss"] = _num(m.get("bc/final_train_loss"))
        else:
            continue
        rows.append(row | {"config": {"seed": r["config"].get("seed")}})
    choices = {}
    for method in sorted({r["method"] for r in rows} - {"precision"}):  # the precision check chooses nothing
        cand = [r for r in rows if r["method"] == method and math.isfinite(r["value"])]
        if cand:
            choices[method] = (min if cand[0]["lower_is_better"] else max)(cand, key=lambda r: r["value"])["setting"]
    return {"rows": rows, "choices": choices}


def tuning_markdown(t: dict) -> str:
    lines = ["| method | setting | criterion | value | (test, not used) | s |", "|---|---|---|---|---|---|"]
    for r in t["rows"]:
        chosen = " **chosen**" if t["choices"].get(r["method"]) == r["setting"] else ""
        test = f"{r['test_not_used']:.3f}" if "test_not_used" in r else ""
        cells = [r["method"], r["setting"] + chosen, r["criterion"], f"{r['value']:.3f}", test, str(r["seconds"])]
        lines.append(_md(cells))
    return "\n".join(lines)


def study(small_dir: Path, seeds: list[int], budget: int) -> dict:
    """{variant: {seed: results.json | {"_dir": its folder}}}, from seed<S> or seed<S>-lam (returns not measured)."""
    runs = {}
    for v, (rel, _) in VARIANTS.items():
        base = small_dir / "runs" / rel / ENV / ("full" if v == "bc_full" else f"budget{budget}")
        runs[v] = {}
        for s in seeds:
            d = next((d for d in (base / f"seed{s}", base / f"seed{s}-lam") if (d / "results.json").exists()), None)
            if d is not None:
                runs[v][s] = json.loads((d / "results.json").read_text()) | {"_dir": str(d)}
    return runs


def per_seed(runs: dict, variant: str, value) -> dict[int, float]:
    return {s: value(r["metrics"]) for s, r in runs.get(variant, {}).items()}


_INTERVALS: dict[tuple, Interval] = {}  # the bootstrap is seeded: the same values give the same interval


def _iv(values: dict) -> Interval:
    """IQM and bootstrap interval of the finite per-seed values, computed once per set of values."""
    key = tuple(v for v in values.values() if math.isfinite(v))
    if key not in _INTERVALS:
        _INTERVALS[key] = interval(list(key))
    return _INTERVALS[key]


def _ratio(num: Interval, den: Interval) -> float:
    return num.iqm / den.iqm if den.n and num.n and den.iqm else math.nan


def _actions(f: h5py.File, last: int | None = None) -> np.ndarray:
    return np.concatenate([f[k]["actions"][:last] for k in sorted((k for k in f if k.isdigit()), key=int)])


def dataset_info(path: Path) -> dict:
    if not path.exists():
        return {}
    with h5py.File(path, "r") as f:
        return {
            "dataset_return": _num(f.attrs.get("dataset_return")),
            "action_variance": float(_actions(f).var(0).mean()),
        }


def novel_baseline(eval_path: Path, labeled_path: Path) -> dict:
    """F5's stand-in for update 0, in its units (squared errors summed over action dimensions, averaged over the
    evaluation set): the labeled set's mean action (what the head and IDM learn from), the set's own (best constant)."""
    if not eval_path.exists() or not labeled_path.exists():
        return {}
    with h5py.File(labeled_path, "r") as f:
        mean = _actions(f).mean(0)
    with h5py.File(eval_path, "r") as f:
        acts = _actions(f, -1)
    return {
        "labeled_mean_action": float(((acts - mean) ** 2).sum(1).mean()),
        "own_mean_action": float(((acts - acts.mean(0)) ** 2).sum(1).mean()),
        "transitions": len(acts),
    }


def _mean_difference(x: dict, y: dict) -> float:
    seeds, a, b = paired(x, y)
    return float(np.mean(a - b)) if seeds else math.nan


def compare(
    claim, a, b, measure, va, vb, init_a, init_b, lower=True, log=False, reference="update 0", requires_learning=True
) -> dict:
    """a better than b on `measure` from per-seed values {seed: value} at the end (va, vb) and update 0 (init_a,
    init_b): per arm the change (end - init, or log(end / init) with log=True) and whether it learned; paired two-sided
    p of the changes (primary), end and update-0 values. reference: what stands for update 0 (F5). Verdicts: adjust."""
    ia, ib = _iv(va), _iv(vb)
    f = {"claim": claim, "a": a, "b": b, "measure": measure, "a_interval": ia.as_dict(), "b_interval": ib.as_dict(),
         "a_per_seed": va, "b_per_seed": vb, "lower_is_better": lower, "paper_ratio": None, "reference": reference,
         "ratio": _ratio(ib, ia) if lower else _ratio(ia, ib), "pairing": "paired over seeds",
         "requires_learning": requires_learning, "sidedness": "two-sided",
         "test": "exact sign-flip permutation test of the mean per-seed difference"}  # fmt: skip
    f |= {"seeds_paired": paired(va, vb)[0], "mean_difference_end": _mean_difference(va, vb), "p_end": paired_p(va, vb)}
    if init_a is None or init_b is None:
        return f | {"p_change": math.nan, "p_init": math.nan}
    f["a_init_per_seed"], f["b_init_per_seed"] = init_a, init_b
    f["a_init_interval"], f["b_init_interval"] = _iv(init_a).as_dict(), _iv(init_b).as_dict()
    ref = "update 0" if reference == "update 0" else "the reference"
    f["change"] = f"log(end / {ref})" if log else f"end - {ref}"
    for arm, end, init in (("a", va, init_a), ("b", vb, init_b)):
        f[f"{arm}_learned"] = learned(init, end, lower)
        f[f"{arm}_change"] = {s: _change(end[s], init[s], log) for s in paired(end, init)[0]}
    f["mean_difference_change"] = _mean_difference(f["a_change"], f["b_change"])
    f["p_change"] = paired_p(f["a_change"], f["b_change"])
    f["mean_difference_init"], f["p_init"] = _mean_difference(init_a, init_b), paired_p(init_a, init_b)
    return f


def _change(end: float, init: float, log: bool) -> float:
    if not log:
        return float(end - init)
    return float(math.log(end / init)) if end > 0 and init > 0 else math.nan


def adjust(family: dict, unreadable: str | None = None) -> None:
    """Holm within the family, per test (change, end, update 0); verdict from the change's test (stats.read_test), or
    "not readable" where an arm that must learn did not, or `unreadable` where neither side reaches DECODABLE."""
    for test in ("change", "end", "init"):
        ps = {k: f.get(f"p_{test}", math.nan) for k, f in family.items()}
        adjusted, m = holm(ps), sum(math.isfinite(p) for p in ps.values())
        for k, f in family.items():
            f[f"p_{test}_holm"], f[f"comparisons_{test}"] = adjusted[k], m
    for f in family.values():
        lower = f["lower_is_better"]
        f["verdict_end"] = read_test(f["p_end_holm"], f["mean_difference_end"], lower)
        f["primary"] = "change"
        f["verdict"] = read_test(f["p_change_holm"], f.get("mean_difference_change", math.nan), lower)
        stuck = [VARIANTS[f[arm]][1] for arm in ("a", "b")
                 if f["requires_learning"] and f.get(f"{arm}_learned", {}).get("holds") is False]  # fmt: skip
        if stuck:
            f["verdict_from_test"] = f["verdict"]
            f["verdict"] = f"not readable: did not learn ({', '.join(stuck)})"
        if unreadable is not None and max(f["a_interval"]["iqm"], f["b_interval"]["iqm"]) < DECODABLE:
            f["verdict_from_test"], f["verdict"] = f["verdict"], unreadable


def analyse(small_dir: Path, seeds: list[int], budget: int) -> dict:
    runs = study(small_dir, seeds, budget)
    data, labeled_path = small_dir / "data", small_dir / "data" / f"{ENV}-labeled-1000x{budget}.hdf5"
    expert = dataset_info(data / f"{ENV}.hdf5").get("dataset_return", math.nan)
    var_l = dataset_info(labeled_path).get("action_variance", math.nan)
    baseline = novel_baseline(data / f"{ENV}-eval.hdf5", labeled_path)

    def metric(v: str, key: str) -> dict:
        return per_seed(runs, v, lambda m: _num(m.get(key)))

    def series(v: str, name: str, novel: str, top1: bool = False) -> dict:
        """lapo/leakage/<name> per seed at the end, at update 0, on the novel set (<novel>), and their intervals."""
        keys = {"end": f"lapo/leakage/{name}", "init": f"lapo/init/leakage/{name}", "novel": f"lapo/leakage/{novel}"}
        if top1:
            keys |= {"end_top1": f"lapo/leakage/{name}_top1", "init_top1": f"lapo/init/leakage/{name}_top1"}
        d = {when: metric(v, key) for when, key in keys.items()}
        return d | {f"{w}_interval": _iv(d[w]).as_dict() for w in ("end", "init", "novel")}

    probes, leakage, cca = {}, {}, {}
    for v in LAMS:
        p = probes[v] = {
            "ridge_mse": metric(v, "lapo/ridge_probe_mse"),
            "ridge_baseline_mse": metric(v, "lapo/ridge_probe_baseline_mse"),
            "ridge_val_baseline_mse": metric(v, "lapo/ridge_probe_val_baseline_mse"),
            "novel_ridge_baseline_mse": metric(v, "lapo/eval_ridge_probe_baseline_mse"),
            "ridge_relative": per_seed(runs, v, _rel),
            "init_ridge_relative": per_seed(runs, v, lambda m: _rel(m, "lapo/init/ridge_probe_mse")),
            "pca128_relative": per_seed(runs, v, _pca128),  # LAPO's own width: its full probe
            "init_pca128_relative": per_seed(runs, v, lambda m: _pca128(m, "lapo/init/")),
            "novel_ridge_relative": per_seed(runs, v, lambda m: _rel(m, "lapo/eval_ridge_probe_mse")),
            "online_probe_mse": metric(v, "lapo/final_action_probe_mse"),
            "action_variance": metric(v, "lapo/action_variance"),
        }
        p |= {f"{w}interval": _iv(p[f"{w}ridge_relative"]).as_dict() for w in ("", "init_", "novel_")}
        leakage[v] = {t: series(v, f"{t}_r2", f"{t}_eval_r2") for t in TARGETS + SHARES}
        cca[v] = {}
        for src in CCA_SOURCES:
            d = cca[v][src] = series(v, f"cca_{src}", f"cca_{src}_eval", top1=True)
            d["change"] = learned(d["init"], d["end"], lower_is_better=False)  # per seed; p one-sided (up)
            d["p_change_two_sided"] = paired_p(d["end"], d["init"])  # paired over seeds, two-sided
    returns = {v: metric(v, k) for v, k in RETURN_KEY.items()}
    bc_full = [x for x in returns["bc_full"].values() if math.isfinite(x)]
    norm = float(np.mean(bc_full)) if bc_full else math.nan
    # a normaliser at or below zero makes every ratio meaningless: no scores then (the precondition says why)
    scores = {v: {s: x / norm if norm > 0 else math.nan for s, x in r.items()} for v, r in returns.items()}
    novel = {"laom_labels": metric("laom_labels", "lapo/eval_action_mse"), "idm": metric("idm", "idm/eval_action_mse")}
    S = {v: _iv(scores[v]) for v in scores}
    nothing = baseline.get("labeled_mean_action", math.nan)

    def probe(a: str, b: str, claim: str, k: str = "ridge", measure: str = "ridge relative MSE") -> dict:
        pa, pb = probes[a], probes[b]  # a finding read from the ridge probe
        return compare(claim, a, b, measure, pa[f"{k}_relative"], pb[f"{k}_relative"], pa[f"init_{k}_relative"],
                       pb[f"init_{k}_relative"], log=True)  # fmt: skip

    # F5's stand-in for update 0: a head that predicts the labeled set's mean action (None without the data)
    floor = {v: {s: nothing for s in novel[v]} if math.isfinite(nothing) else None for v in novel}
    findings = {
        "F1": probe("lapo_vanilla", "lapo", "distractors hurt LAPO: its held-out ridge probe (relative MSE) is worse "
                    "with distractors"),
        "F2": probe("laom", "lapo", "LAOM's latents beat LAPO's with distractors (ridge relative MSE)"),
        "F3": probe("laom_labels", "laom", "supervision improves LAOM's latents (ridge relative MSE)"),
        "F5": compare("LAOM + supervision predicts actions on novel distractors better than the IDM (Fig. 9a)",
                      "laom_labels", "idm", "action MSE on the novel-distractor set", novel["laom_labels"],
                      novel["idm"], floor["laom_labels"], floor["idm"], log=True,
                      reference="a head that learned nothing (the labeled set's mean action; the runs record no "
                                "update-0 head)"),
        "F6": probe("lapo_mask", "lapo", "masked LAPO (true masks) beats LAPO with distractors (ridge relative MSE)"),
    }  # fmt: skip
    findings["F2"]["paper_ratio"] = PAPER_F2
    adjust(findings)
    findings["F5"]["mean_action_baseline"] = nothing
    # Descriptive, not a finding: top principal components are biased against actions in low-variance directions.
    pca128 = probe("laom", "lapo", "LAOM's top 128 principal components against LAPO's 128 dimensions (descriptive)",
                   k="pca128", measure="ridge relative MSE, 128 dimensions")  # fmt: skip
    adjust({"F2@128": pca128})
    against = {o: verdict(S["laom_labels"], S[o], lower_is_better=False) for o in OTHERS}
    findings["F4"] = {
        "claim": f"LAOM + supervision has the best normalised return at {budget} labeled trajectories",
        "a": "laom_labels", "b": "lapo, laom, idm, bc", "measure": "normalised return",
        "verdict": next((v for v in ("not measured", "does not hold", "direction only") if v in against.values()),
                        "holds"), "against": against, "a_interval": S["laom_labels"].as_dict(),
        "seeds": sorted(k for k, x in returns["laom_labels"].items() if math.isfinite(x)),
        "test": "none (returns of the seeds of RETURN_SEEDS only; interval separation)",
    }  # fmt: skip
    leak_tests = {
        f"{a} < {b}: {t}": compare(f"{VARIANTS[a][1]}'s latents hold less {t} motion than {VARIANTS[b][1]}'s "
                                   "(test R², lower = less leakage)", a, b, f"{t} R²", leakage[a][t]["end"],
                                   leakage[b][t]["end"], leakage[a][t]["init"], leakage[b][t]["init"],
                                   requires_learning=False)
        for a, b, t in LEAKAGE_TESTS
    }  # fmt: skip
    adjust(leak_tests, unreadable=f"not readable (neither decodes it: R² below {DECODABLE})")
    mechanism = {
        f"{a} {'>' if up else '<'} {b}: {src}": compare(
            f"{VARIANTS[a][1]}'s latent has {'more' if up else 'less'} held-out canonical correlation with the "
            f"{src} than {VARIANTS[b][1]}'s", a, b, f"CCA with the {src} (mean squared held-out canonical "
            "correlation)", cca[a][src]["end"], cca[b][src]["end"], cca[a][src]["init"], cca[b][src]["init"],
            lower=not up, requires_learning=False)
        for a, b, src, up in MECHANISM_TESTS
    }  # fmt: skip
    adjust(mechanism)
    laom_noaug = verdict(_iv(probes["laom"]["ridge_relative"]), _iv(probes["laom_noaug"]["ridge_relative"]), True)
    # preconditions (holds None: not measured, no run of that kind, e.g. RETURN_SEEDS=none)
    above = [f"{v} seed {s}: {x:.3f}" for v in LAMS for s, x in probes[v]["ridge_relative"].items() if not x < 1]
    missing = [v for v in VARIANTS if len(runs[v]) < len(seeds) and not (v in OPTIONAL and not runs[v])]
    dec = {
        v: {s: x for s, x in metric(v, "decoder/final_train_loss").items()
            if "decoder/updates" in runs[v][s]["metrics"]}  # seeds that trained a decoder (RETURN_SEEDS)
        for v in ("lapo", "laom", "laom_labels")
    }  # fmt: skip
    dec_bad = [f"{v} seed {s}: {x:.2f}" for v, d in dec.items() for s, x in d.items() if not x < var_l]
    ran = [v for v in LAMS if runs[v]]
    p2 = "BC on all data reaches at least half the expert's return"
    pre = {
        "every LAM's held-out ridge probe below its mean-action baseline": {
            "holds": not above and all(probes[v]["ridge_relative"] for v in ran), "exceptions": above},
        p2: {"holds": bool(norm >= 0.5 * expert) if bc_full else None, "bc_full_return": norm, "expert": expert},
        "each decoder's training loss below the labeled actions' variance": {
            "holds": (not dec_bad and all(dec.values())) if any(dec.values()) else None,
            "labeled_action_variance": var_l, "exceptions": dec_bad, "losses": dec},
    }  # fmt: skip
    if pre[p2]["holds"] is None:  # no policy was trained: there is no return to order
        findings["F4"]["verdict"] = "not measured (no policy runs: RETURN_SEEDS)"
    elif not pre[p2]["holds"]:  # the scores are ratios to a near-zero return: no ordering can be read from them
        findings["F4"]["verdict_from_intervals"] = findings["F4"]["verdict"]
        findings["F4"]["verdict"] = "not readable (precondition 2 failed)"
    return {
        "seeds": seeds,
        "runs_found": {v: sorted(runs[v]) for v in VARIANTS},
        "missing": missing,
        "expert_return": expert,
        "bc_full_return": norm,
        "novel_baseline": baseline,
        "probes": probes,
        "leakage": leakage,
        "leakage_tests": leak_tests,
        "cca": cca,
        "mechanism_tests": mechanism,
        "pca128": pca128,
        "probe_curves": {
            v: {s: r["stages"]["lapo"].get("lapo/ridge_probe_curve") or [] for s, r in runs[v].items()} for v in ran
        },
        "returns": returns,
        "scores": {v: {"per_seed": scores[v], "interval": S[v].as_dict()} for v in scores},
        "novel_action_mse": {v: {"per_seed": novel[v], "interval": _iv(novel[v]).as_dict()} for v in novel},
        "findings": findings,
        "other": {"augmentations_help_laom": laom_noaug},
        "preconditions": pre,
        "_runs": runs,
    }


def _f(x, d=3) -> str:
    return f"{x:.{d}g}" if isinstance(x, float) and math.isfinite(x) else "–"


def _seeds(values: dict) -> str:
    return ", ".join(_f(x) for x in values.values())


def _span(d: dict) -> str:
    """IQM at update 0 → IQM [bootstrap interval] at the end."""
    end = Interval(**d["end_interval"])
    return f"{_f(d['init_interval']['iqm'], 2)} → {end}" if end.n else "not recorded"


HEAD = (
    "| {what} | measure | a | b | a: update 0 → end | b: update 0 → end | learned (seeds improved; p one-sided, "
    "paired) a / b | a − b: change | p change (two-sided, paired) | Holm | a − b: end | p end (two-sided, paired) "
    "| Holm | p update 0 (two-sided, paired) | verdict |"
)
RULE = "|---" * 15 + "|"
NUMBERS = "mean_difference_change p_change p_change_holm mean_difference_end p_end p_end_holm p_init".split()


def _learned(f: dict, arm: str) -> str:
    d = f.get(f"{arm}_learned")
    if not d or not f.get("requires_learning", True):  # a measure read by its change, not gated on it
        return "–"
    return f"{'yes' if d['holds'] else '**no**'} ({len(d['improved_seeds'])}/{d['n']}; {_f(d['p_one_sided_paired'])})"


def _finding_rows(fam: dict, claims: bool = True) -> list[str]:
    """One row per comparison: each arm from update 0 to the end, learned or not, the mean differences of changes
    and end values with paired two-sided p (raw, Holm), the update-0 test, the verdict."""
    rows = []
    for k, f in fam.items():
        paper = f" (paper: {f['paper_ratio']:g}x better)" if f.get("paper_ratio") else ""
        cells = [(f"{k}: {f['claim']}" if claims else k) + paper, f["measure"]]
        cells += [VARIANTS[f["a"]][1], VARIANTS[f["b"]][1]]
        for arm in ("a", "b"):
            init = f.get(f"{arm}_init_interval")
            start = _f(init["iqm"]) if init and f.get("reference", "update 0") == "update 0" else "–"
            cells.append(f"{start} → {Interval(**f[f'{arm}_interval'])}")
        cells.append(f"{_learned(f, 'a')} / {_learned(f, 'b')}")
        rows.append(_md(cells + [_f(f.get(n, math.nan)) for n in NUMBERS] + [f"**{f['verdict']}**"]))
    return rows


def _per_seed_changes(fam: dict) -> list[str]:
    """Per finding, each arm's change from update 0 on every seed."""
    out = ["| finding | change | arm | per seed (seed: change) |", "|---|---|---|---|"]
    for k, f in fam.items():
        for arm in ("a", "b"):
            if f"{arm}_change" in f:
                cells = ", ".join(f"{s}: {_f(x, 2)}" for s, x in f[f"{arm}_change"].items())
                out.append(f"| {k} | {f['change']} | {VARIANTS[f[arm]][1]} | {cells} |")
    return out


TESTS_TEXT = (
    "Every p-value below is of an exact sign-flip permutation test over the seeds the two arms share (paired: the "
    "arms of a seed start from the same seeded networks where their architectures allow), two-sided, of the mean "
    "per-seed difference; Holm's correction within the family of the table, separately for the tests of the "
    "changes, of the end values and of the update-0 values. With n seeds the smallest two-sided p is 2 / 2^n "
    "(5 seeds: 0.0625, so nothing can pass; 10 seeds: 0.00195). The primary test of a finding is of the change "
    "from update 0 (log(end / update 0) for an MSE: the factor training shrank it by), so a gap already in the "
    'initialised network does not count as learned. "learned": the arm\'s measure is better at the end than at '
    "update 0 with a one-sided paired sign-flip p below 0.05 (the number of seeds that improved, then that p); an "
    'arm that did not learn gets no verdict ("not readable: did not learn"). Verdicts of a test: "holds" (Holm '
    'p below 0.05 in the paper\'s direction), "reversed" (the same, the other direction), "direction only" '
    '(not significant, the paper\'s direction), "not shown" (not significant, the other direction). Intervals '
    "are rliable's stratified percentile-bootstrap intervals of the IQM: with few seeds they describe the seeds' "
    "spread, not a calibrated confidence interval."
)


def markdown(a: dict) -> str:
    L = VARIANTS
    ran = [v for v in LAMS if a["_runs"][v]]
    fam = {k: f for k, f in a["findings"].items() if k != "F4"}
    m = next((f["comparisons_change"] for f in fam.values()), 0)
    out = ["## Verdicts", "", f"Seeds {', '.join(map(str, a['seeds']))}; {m} findings in the family. {TESTS_TEXT}", ""]
    out += [HEAD.format(what="finding"), RULE, *_finding_rows(fam)]
    f4 = a["findings"]["F4"]
    ib = ", ".join(f"{L[o][1]} {Interval(**a['scores'][o]['interval'])}" for o in OTHERS)
    f4_seeds = ", ".join(map(str, f4.get("seeds", []))) or "–"
    out += ["", f"F4 ({f4['claim']}; returns of seed(s) {f4_seeds} only, no test): {L['laom_labels'][1]} "
            f"{Interval(**f4['a_interval'])} against {ib}: **{f4['verdict']}**."]  # fmt: skip
    f5 = a["findings"]["F5"]
    nb = a.get("novel_baseline") or {}
    out += ["", f"F5 has no update-0 value in the runs: its reference is {f5['reference']}, a novel-set action MSE "
            f"of {_f(nb.get('labeled_mean_action', math.nan), 4)} (the novel set's own mean action: "
            f"{_f(nb.get('own_mean_action', math.nan), 4)}; {nb.get('transitions', '–')} transitions); \"learned\" "
            "there means below it."]  # fmt: skip
    out += ["", "Each arm's change from update 0, per seed:", ""] + _per_seed_changes(fam)
    pc = a["pca128"]
    out += ["", f"Descriptive, not a finding: LAOM's latents on their top 128 principal components (by variance) "
            f"against LAPO's 128 dimensions, {_f(pc['a_init_interval']['iqm'])} → {Interval(**pc['a_interval'])} "
            f"against {_f(pc['b_init_interval']['iqm'])} → {Interval(**pc['b_interval'])} (paired two-sided p of the "
            f"end values {_f(pc['p_end'])}). Keeping the directions of most variance is biased against a latent "
            "whose action lies in directions of little variance: this is no test of width."]  # fmt: skip
    out += ["", "Other readings (interval separation only, no test): "
            + ", ".join(f"{k.replace('_', ' ')}: **{v}**" for k, v in a["other"].items()), ""]  # fmt: skip
    out += ["## Preconditions", "", "| precondition | held | detail |", "|---|---|---|"]
    for k, p in a["preconditions"].items():
        detail = {kk: vv for kk, vv in p.items() if kk not in ("holds", "losses")}
        held = "not measured" if p["holds"] is None else "yes" if p["holds"] else "**no**"
        out.append(f"| {k} | {held} | {json.dumps(nan_to_none(detail))} |")
    out += ["", "## What the latent actions encode: held-out canonical correlations", ""]
    px = a.get("pixel_baseline") or {}
    out += ["Ridge CCA between the latent action of (o_t, o_t+1) and the agent (the action and the agent-state "
            "change) or every recorded distractor change, fitted on the fit trajectories with each latent dimension "
            "standardised, measured on the test trajectories (src/probes.py): the mean squared held-out canonical "
            "correlation, 0 to 1. A rescaling of the latent's dimensions cannot change it; agent-free dimensions "
            "only add estimation noise, which lowers it a little for wide latents (tests/test_probes.py), so "
            "latents of different widths compare through their change from update 0. IQM over seeds [bootstrap "
            "interval] at update 0 (the initialised network) → the end; the change's paired two-sided p "
            "(uncorrected); on the novel-distractor set. Baselines: update 0, and the pixel read-out (2,048 random "
            "projections of the pixels of o_t and o_t+1 - o_t, `pixel_ceiling.json`): "
            + (", ".join(f"{d}: {_f(px[d].get('agent', {}).get('cca', math.nan))} agent, "
                         f"{_f(px[d].get('distractors', {}).get('cca', math.nan))} distractors" for d in px)
               or "not measured") + ".", ""]  # fmt: skip
    out += ["| LAM | agent: update 0 → end | p change (two-sided, paired) | agent, novel | distractors: update 0 → end "
            "| p change (two-sided, paired) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for v in ran:
        agent, distractors = (a["cca"][v][src] for src in CCA_SOURCES)
        novel = str(Interval(**agent["novel_interval"])) if agent["novel_interval"]["n"] else "–"
        cells = [_span(agent), _f(agent["p_change_two_sided"]), novel, _span(distractors)]
        out.append(_md([L[v][1], *cells, _f(distractors["p_change_two_sided"])]))
    mt = a["mechanism_tests"]
    out += ["", f"The paper's mechanism as {len(mt)} comparisons (one family; the verdict reads the change from "
            "update 0, no precondition of learning):", "", HEAD.format(what="comparison"), RULE]  # fmt: skip
    out += _finding_rows(mt, claims=False)
    out += ["", "## Leakage probes and agent shares (held-out test trajectories)", ""]
    out += ["R² of a ridge probe from the latent action of (o_t, o_t+1) to each target (src/probes.py): 1 = "
            "decodable, 0 = no better than the mean; per target the IQM over seeds at update 0 (the initialised "
            "network) and at the end. The agent share (`latent_from_agent`) is the other direction, a ridge from the "
            "agent's targets to the whole latent, a share of the latent's variance: it moves with the scale and the "
            "number of the latent's agent-free dimensions, not only with what the latent holds, so it is shown, not "
            "tested; the canonical correlations above replace it.", ""]  # fmt: skip
    cols = TARGETS + ("latent_from_agent",)
    out += [_md(["LAM", *(f"{t}: update 0 → end" for t in cols)]), "|---|" + "---|" * len(cols)]
    out += [_md([L[v][1], *(_span(a["leakage"][v][t]) for t in cols)]) for v in ran]
    out += ["", "Leakage comparisons (one family):", "", HEAD.format(what="comparison"), RULE]
    out += _finding_rows(a["leakage_tests"], claims=False)
    out += ["", "## Latent-action quality per seed (ridge probe, held-out test trajectories)", ""]
    out += [
        "| LAM | MSE per seed | baseline per seed | relative at update 0 | relative: IQM [bootstrap interval] "
        "| on 128 principal components | novel distractors, relative | online probe MSE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in ran:
        p = a["probes"][v]
        ivs = [Interval(**p["init_interval"]), Interval(**p["interval"]), _iv(p["pca128_relative"])]
        ivs.append(Interval(**p["novel_interval"]))
        cells = [_seeds(p["ridge_mse"]), _seeds(p["ridge_baseline_mse"]), *map(str, ivs), _seeds(p["online_probe_mse"])]
        out.append(_md([L[v][1], *cells]))
    out += [
        "",
        f"## Returns (expert: {_f(a['expert_return'], 4)}; normaliser: BC on all data, {_f(a['bc_full_return'])})",
        "",
        "| method | return per seed | normalised: IQM [bootstrap interval] |",
        "|---|---|---|",
    ]
    out += [_md([L[v][1], _seeds(a["returns"][v]), str(Interval(**a["scores"][v]["interval"]))]) for v in RETURN_KEY]
    out += ["", "## Action MSE on novel distractors (Fig. 9a)", "", "| method | per seed | IQM [bootstrap interval] |"]
    out.append("|---|---|---|")
    for v, d in a["novel_action_mse"].items():
        out.append(_md([L[v][1], _seeds(d["per_seed"]), str(Interval(**d["interval"]))]))
    if a["missing"]:
        out += ["", f"Runs missing for some seed: {', '.join(a['missing'])}."]
    return "\n".join(out) + "\n"


def precision_markdown(t: dict) -> str:
    """The precision check of the tuning (fp32 against bf16 autocast, tuning seed): probes and wall time."""
    rows = {r["setting"]: r for r in t["rows"] if r["method"] == "precision"}
    out = [
        "| LAM | fp32: validation / test relative MSE | bf16: validation / test | bf16 - fp32 (test) | s fp32 / bf16 |",
        "|---|---|---|---|---|",
    ]
    for lam in ("lapo", "laom", "laom_labels"):
        a, b = rows.get(f"{lam}-fp32"), rows.get(f"{lam}-bf16")
        if a and b:
            out.append(f"| {lam} | {a['value']:.3f} / {a['test_not_used']:.3f} | {b['value']:.3f} / "
                       f"{b['test_not_used']:.3f} | {b['test_not_used'] - a['test_not_used']:+.3f} | "
                       f"{a['seconds']} / {b['seconds']} |")  # fmt: skip
    return "\n".join(out) if rows else ""


def plot_curves(a: dict, t: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for v in LAMS:
        curves = []
        for r in a["_runs"][v].values():
            c, b = r["stages"]["lapo"].get("lapo/ridge_probe_curve"), r["metrics"].get("lapo/ridge_probe_baseline_mse")
            if c and b:
                curves.append(np.array([[p[0], p[2] / b] for p in c]))
        if not curves:
            continue
        n = min(len(c) for c in curves)
        c = np.stack([c[:n] for c in curves])  # [seeds, points, 2]
        ax.plot(c[0, :, 0], c[:, :, 1].mean(0), marker="o", label=VARIANTS[v][1])
        ax.fill_between(c[0, :, 0], c[:, :, 1].min(0), c[:, :, 1].max(0), alpha=0.15)
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="mean action")
    ax.set(xlabel="updates", ylabel="ridge probe MSE / baseline (test)", title="Reported seeds: mean, min-max band")
    ax.legend(fontsize=7)
    for r in t["rows"]:
        if r.get("curve"):
            c = np.array(r["curve"])
            ax2.plot(c[:, 0], c[:, 1], marker=".", label=f"{r['method']} {r['setting']}")
    ax2.axhline(1.0, color="grey", ls="--", lw=1)
    ax2.set(xlabel="updates", ylabel="ridge probe MSE / baseline (validation)", title="Tuning seed")
    ax2.legend(fontsize=6, ncol=2)
    _save(fig, path)


def plot_leakage(a: dict, path: Path) -> None:
    """Per LAM, what its latent holds (the test R² of each leakage target) and how much of it the agent explains."""
    import matplotlib.pyplot as plt

    lams = [v for v in LAMS if a["_runs"][v]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(lams) * 1.2) * 1.6, 4.5),
                                  gridspec_kw={"width_ratios": [1.6, 1]})  # fmt: skip
    _bars(ax, a, lams, TARGETS)
    ax.set_title("What the latent action of (o_t, o_t+1) encodes: the action, the agent's state change and each "
                 "distractor's change", fontsize=9)  # fmt: skip
    _bars(ax2, a, lams, SHARES)
    ax2.set_title("How much of the latent the agent (or the distractors' changes) explains", fontsize=9)
    _save(fig, path)


def _bars(ax, a: dict, lams: list[str], targets) -> None:
    """Grouped bars per LAM: each target's test R² at the end (solid, IQM) and at update 0 (hatched), seeds as dots."""
    import matplotlib.pyplot as plt

    width = 0.8 / len(targets)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, t in enumerate(targets):
        for i, v in enumerate(lams):
            d = a["leakage"][v][t]
            x = i + (j - (len(targets) - 1) / 2) * width
            end, init = Interval(**d["end_interval"]), Interval(**d["init_interval"])
            if not end.n:
                continue
            ax.bar(x, end.iqm, width * 0.9, color=colours[j], label=t if i == 0 else None)
            ax.bar(x, init.iqm, width * 0.9, fill=False, hatch="///", edgecolor="k", lw=0.5,
                   label="update 0" if i == 0 and j == 0 else None)  # fmt: skip
            vals = [y for y in d["end"].values() if math.isfinite(y)]
            ax.scatter([x] * len(vals), vals, s=8, color="k", zorder=3)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(len(lams)), [VARIANTS[v][1] for v in lams], fontsize=8, rotation=12)
    ax.set_ylabel("held-out R² (IQM over seeds; dots: seeds)")
    ax.set_ylim(bottom=max(-0.5, ax.get_ylim()[0]))
    ax.legend(fontsize=7, ncol=3)


def run_lam(run_dir: Path, module: str, shapes, trained: bool = True):
    """A finished run's LAM in eval mode, built as its script builds it: lam.pt's weights, or (trained=False) its
    update-0 network, seeded as the script's stage 1 (src/checkpoint.py)."""
    import importlib

    from src.checkpoint import load_checkpoint, seed_stage

    mod = importlib.import_module(module)
    cfg = pyrallis.parse(config_class=mod.Config, config_path=str(run_dir / "config.yaml"), args=[])
    if not trained:
        seed_stage(cfg.seed, "lapo")
    lam = mod.build_models(cfg, shapes, "lam")["lam"]
    if trained:
        lam.load_state_dict(load_checkpoint(run_dir / "lam.pt")["objects"]["lam"])
    return lam.eval()


def latent_points(run_dir: Path, module: str, config: dict, max_points: int = 1500):
    """The finished LAM's latent actions of (o_t, o_{t+1}) on the ridge probe's test trajectories of the run's data
    (config: its results.json's), with the true actions."""
    import torch

    from src.data import load_dataset, normalize_obs
    from src.probes import pair_indices, split_trajectories

    k = config["lapo"]["frame_stack"]
    data = load_dataset(config["lapo"]["data_path"], torch.device("cpu"), k, load_states=False)
    lam = run_lam(run_dir, module, data.shapes)
    idx = pair_indices(data, split_trajectories(data)[2], max_points, seed=0)
    zs = []
    with torch.no_grad():
        for chunk in idx.split(256):
            b = data.batch(chunk, k, next_obs=True)
            zs.append(lam.label(normalize_obs(b["obs"]), normalize_obs(b["next_obs"])).float())
    return torch.cat(zs).numpy(), data.actions[idx].numpy()


def plot_latents(a: dict, path: Path) -> str:
    import matplotlib.pyplot as plt

    try:
        import umap

        method = "UMAP"
    except ImportError:
        umap, method = None, "PCA"
    panels = {"lapo": "train_lapo", "lapo_vanilla": "train_lapo", "laom": "train_laom", "laom_vanilla": "train_laom"}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (v, module) in zip(axes, panels.items(), strict=True):
        runs = a["_runs"][v]
        if not runs:
            ax.set_title(f"{VARIANTS[v][1]}: not run")
            continue
        seed = min(runs)
        z, acts = latent_points(Path(runs[seed]["_dir"]), module, runs[seed]["config"])
        if umap is not None:
            xy = umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(z)
        else:
            zc = z - z.mean(0)
            xy = zc @ np.linalg.svd(zc, full_matrices=False)[2][:2].T
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=acts[:, 0], s=3, cmap="coolwarm")
        rel = a["probes"][v]["ridge_relative"].get(seed, math.nan)
        ax.set_title(f"{VARIANTS[v][1]} (seed {seed})\nridge MSE / baseline {rel:.2f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(sc, ax=ax, fraction=0.046, label="true action, dim 0")
    fig.suptitle(f"Latent actions of the test trajectories, {method} to 2-D, coloured by the first true action")
    _save(fig, path, dpi=110)
    return method


def main(c: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    small_dir, out = Path(c.small_dir), Path(c.out)
    if not small_dir.is_dir():
        raise SystemExit(f"error: --small_dir={c.small_dir} is not a folder (studies/small/reproduce.sh makes it)")
    out.mkdir(parents=True, exist_ok=True)
    t = tuning(small_dir)
    (out / "tuning.md").write_text(tuning_markdown(t) + "\n")
    write_json(out / "tuning.json", nan_to_none(t))
    print(tuning_markdown(t))
    print("choices:", t["choices"])
    if c.tuning:
        return
    a = analyse(small_dir, [int(s) for s in c.seeds.split()], c.budget)
    a["budget"] = c.budget
    # the pixel read-out baseline (studies/small/pixel_ceiling.py, run before this report)
    a["pixel_baseline"] = {
        name: json.loads(f.read_text()).get("cca", {})
        for name, f in (("with distractors", out / "pixel_ceiling.json"),
                        ("without", out / "pixel_ceiling_vanilla.json"))
        if f.exists()
    }  # fmt: skip
    plot_curves(a, t, out / "probe_curves.png")
    plot_leakage(a, out / "leakage.png")
    if c.latents:
        a["latent_projection"] = plot_latents(a, out / "latents.png")
    md = markdown(a)
    prec = precision_markdown(t)
    prec = f"\n## Precision check (tuning seed)\n\n{prec}\n" if prec else ""
    sources = out / "latent_sources.json"  # studies/small/latent_sources.py, run before this report
    if sources.exists():
        table = json.loads(sources.read_text())["markdown"]
        md += ("\n## What moves each latent (true foreground masks; studies/small/latent_sources.py)\n\n"
               "How far each latent action moves when, in o_t+1, the step's change is undone (all of it, the "
               "background's or the agent's, with the true masks): the step's share of the latent's variance, and "
               "the background's and the agent's shares of the latent's response to the step, on held-out test "
               "transitions, IQM over seeds [bootstrap interval]; the first row is the frame difference itself. "
               "These shares sum squared changes over the latent's dimensions and move with their scale; the last "
               "three columns measure the same in the action probe's output (cross-fitted, each latent dimension "
               "standardised), which a rescaling of the latent's dimensions cannot change.\n\n"
               f"{table}\n")  # fmt: skip
    (out / "results.md").write_text("# Results of studies/small/reproduce.sh\n\n" + md + "\n## Tuning\n\n" +
                                    tuning_markdown(t) + "\n" + prec)  # fmt: skip
    (out / "verdicts.md").write_text(md.split("## Preconditions")[0])
    summary = {k: v for k, v in a.items() if k != "_runs"} | {"tuning": t}
    write_json(out / "summary.json", nan_to_none(summary))
    print(md.split("## Latent-action quality")[0])
    print(f"report: {out}/results.md, {out}/summary.json, figures {out}/probe_curves.png, {out}/leakage.png, "
          f"{out}/latents.png")  # fmt: skip


if __name__ == "__main__":
    main(pyrallis.parse(config_class=Config))
