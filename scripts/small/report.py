"""The report of the reduced-scale study (scripts/small/reproduce.sh, scripts/small/tune.sh): tuning table and
choices, precondition checks, verdicts on the paper's findings F1-F5 from rliable intervals, figures, summary.json.

    python -m scripts.small.report --small_dir runs/small --out runs/small/report            # the study
    python -m scripts.small.report --small_dir runs/small --out runs/small/report --tuning   # the tuning only

Reads results.json of the runs under <small_dir>/tune (tuning seed) and <small_dir>/runs (the seeds reported, the
layout of scripts/small/reproduce.sh). Writes to --out: results.md (every table), summary.json (the same numbers,
machine-readable: per LAM and setting the held-out ridge-probe MSE and baseline per seed, the interval of each
aggregate, one verdict per finding), tuning.md / tuning.json, and the figures latents.png (latent actions in 2-D,
UMAP, PCA without umap-learn), probe_curves.png (ridge probe against updates), tuning_curves.png.

Quality of latent actions is the ridge probe's MSE on held-out test trajectories divided by the MSE of predicting
the mean action on them (the fraction of the action variance left unexplained: 1 = nothing found), so the data
with and without distractors compare on one scale. Returns are normalised by this sweep's own BC on all data
(the paper's normaliser at this scale). Every aggregate is an IQM with a 95% stratified bootstrap interval
(src/stats.py); a verdict "holds" only where the intervals separate.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import pyrallis

from src.files import write_json
from src.stats import ALPHA, Interval, decide, holm, interval, permutation_p, verdict

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
OPTIONAL = ("laom_noaug",)  # run only when asked (NOAUG=1): not "missing" when absent
# Leakage targets (src/probes.py): the action, the agent's own state change, each distractor's change.
TARGETS = ("action", "agent_state", "background", "camera", "color")
DISTRACTOR_TARGETS = ("background", "camera", "color")
# The second family of tests: less distractor leakage than LAPO (lower test R²), for each distractor.
LEAKAGE_TESTS = [(a, "lapo", t) for a in ("laom", "lapo_mask") for t in DISTRACTOR_TARGETS]
DECODABLE = 0.02  # a leakage comparison is read only where one side's test R² (IQM) reaches this
# The other direction (src/probes.py): the share of each latent's variance that the agent (action and agent-state
# change), or the distractors' changes, explain linearly on the test trajectories.
SHARES = ("latent_from_agent", "latent_from_distractors")
# The third family: the paper's mechanism read as "whose latent is more about the agent" (higher agent share):
# distractors take LAPO's latent from the agent; LAOM, supervision and the true masks give it back.
SHARE_TESTS = [("lapo_vanilla", "lapo"), ("laom", "lapo"), ("laom_labels", "laom"), ("lapo_mask", "lapo")]
RETURN_KEY = {m: "decoder/eval_returns_mean" for m in ("lapo", "laom", "laom_labels")} | {
    m: "bc/eval_returns_mean" for m in ("idm", "bc", "bc_full")
}
OTHERS = ("lapo", "laom", "idm", "bc")  # what LAOM + supervision's return is compared with (F4)
PAPER = {"F2": 8.0, "F4": 4.2}  # the paper's ratios (abstract): LAOM's probe 8x LAPO's; supervision 4.2x return


@dataclass
class Config:
    small_dir: str = "runs/small"  # SMALL_DIR of scripts/small/reproduce.sh
    out: str = "runs/small/report"  # output folder
    seeds: str = "0 1 2"  # the reported seeds
    budget: int = 2  # labeled trajectories
    tuning: bool = False  # only the tuning table (after scripts/small/tune.sh)
    latents: bool = True  # the latent picture (loads the LAM checkpoints of the first seed)


def _read(path: Path) -> Optional[dict]:
    f = path / "results.json"
    return json.loads(f.read_text()) if f.exists() else None


def _num(x) -> float:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else math.nan


def _rel(m: dict, key: str = "lapo/ridge_probe_mse", base: str = "lapo/ridge_probe_baseline_mse") -> float:
    return _num(m.get(key)) / _num(m.get(base)) if key in m and base in m else math.nan


# ---------------------------------------------------------------- tuning


def tuning(small_dir: Path) -> dict:
    """Rows of every tuning run and the choice per method by its paper criterion (validation data only)."""
    rows = []
    for f in sorted((small_dir / "tune").glob("*/*/results.json")):
        method, tag = f.parent.parent.name, f.parent.name
        r = json.loads(f.read_text())
        m, cfg = r["metrics"], r["config"]
        row = {"method": method, "setting": tag, "seconds": round(r.get("total_seconds", 0.0))}
        if "lapo/ridge_probe_val_mse" in m:
            row["init_value"] = _rel(m, "lapo/init/ridge_probe_val_mse", "lapo/init/ridge_probe_val_baseline_mse")
            row["criterion"] = "validation ridge MSE / baseline (lower is better)"
            row["value"] = _rel(m, "lapo/ridge_probe_val_mse", "lapo/ridge_probe_val_baseline_mse")
            row["test_not_used"] = _rel(m)
            curve = r["stages"]["lapo"].get("lapo/ridge_probe_curve") or []
            base = _num(m["lapo/ridge_probe_val_baseline_mse"])
            row["curve"] = [[p[0], p[1] / base] for p in curve]
            row["lower_is_better"] = True
        elif "idm/eval_action_mse" in m:
            row["criterion"] = "validation action MSE (lower is better)"
            row["value"], row["lower_is_better"] = _num(m["idm/eval_action_mse"]), True
        elif "bc/eval_returns_mean" in m:
            episodes = len(r["stages"].get("bc", {}).get("bc/eval_returns") or []) or "?"
            row["criterion"] = f"online return, {episodes} episodes (higher is better)"
            row["value"], row["lower_is_better"] = _num(m["bc/eval_returns_mean"]), False
            row["train_loss"] = _num(m.get("bc/final_train_loss"))
        else:
            continue
        row["config"] = {k: cfg.get(k) for k in ("seed",)}
        rows.append(row)
    choices = {}
    for method in sorted({r["method"] for r in rows} - {"precision"}):  # the precision check chooses nothing
        cand = [r for r in rows if r["method"] == method and math.isfinite(r["value"])]
        if cand:
            best = (min if cand[0]["lower_is_better"] else max)(cand, key=lambda r: r["value"])
            choices[method] = best["setting"]
    return {"rows": rows, "choices": choices}


def tuning_markdown(t: dict) -> str:
    lines = ["| method | setting | criterion | value | (test, not used) | s |", "|---|---|---|---|---|---|"]
    for r in t["rows"]:
        chosen = " **chosen**" if t["choices"].get(r["method"]) == r["setting"] else ""
        test = f"{r['test_not_used']:.3f}" if "test_not_used" in r else ""
        lines.append(
            f"| {r['method']} | {r['setting']}{chosen} | {r['criterion']} | {r['value']:.3f} | {test} | "
            f"{r['seconds']} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the study


def study(small_dir: Path, seeds: list[int], budget: int) -> dict:
    runs = {}
    for v, (rel, _) in VARIANTS.items():
        sub = "full" if v == "bc_full" else f"budget{budget}"
        runs[v] = {}
        for s in seeds:  # seed<S>, or seed<S>-lam: a seed whose returns were not measured (RETURN_SEEDS)
            for d in (
                small_dir / "runs" / rel / ENV / sub / f"seed{s}",
                small_dir / "runs" / rel / ENV / sub / f"seed{s}-lam",
            ):
                if (r := _read(d)) is not None:
                    runs[v][s] = r | {"_dir": str(d)}
                    break
    return runs


def per_seed(runs: dict, variant: str, value) -> dict[int, float]:
    return {s: value(r["metrics"]) for s, r in runs.get(variant, {}).items()}


_INTERVALS: dict[tuple, Interval] = {}  # the bootstrap is seeded: the same values give the same interval


def _iv(values: dict) -> Interval:
    """IQM and bootstrap interval of the finite per-seed values, computed once per set of values (the tables and
    the comparisons read the same ones)."""
    key = tuple(v for v in values.values() if math.isfinite(v))
    if key not in _INTERVALS:
        _INTERVALS[key] = interval(list(key))
    return _INTERVALS[key]


def _ratio(num: Interval, den: Interval) -> float:
    return num.iqm / den.iqm if den.n and num.n and den.iqm else math.nan


def dataset_info(path: Path) -> dict:
    if not path.exists():
        return {}
    with h5py.File(path, "r") as f:
        acts = np.concatenate([f[k]["actions"][:] for k in f.keys() if isinstance(f[k], h5py.Group)])
        return {"dataset_return": _num(f.attrs.get("dataset_return")), "action_variance": float(acts.var(0).mean())}


def novel_baseline(eval_path: Path, labeled_path: Path) -> dict:
    """The novel-distractor action MSE of a head that learned nothing, in F5's units (squared errors summed over
    the action dimensions, averaged over the transitions (o_t, o_{t+1}) of the evaluation set): predicting the
    labeled set's mean action (what the supervised head and the IDM are trained on), and the evaluation set's own
    mean action (the best constant)."""
    if not eval_path.exists() or not labeled_path.exists():
        return {}
    with h5py.File(labeled_path, "r") as f:
        mean = np.concatenate([f[k]["actions"][:] for k in f if k.isdigit()]).mean(0)
    with h5py.File(eval_path, "r") as f:
        acts = np.concatenate([f[k]["actions"][:-1] for k in sorted((k for k in f if k.isdigit()), key=int)])
    return {
        "labeled_mean_action": float(((acts - mean) ** 2).sum(1).mean()),
        "own_mean_action": float(((acts - acts.mean(0)) ** 2).sum(1).mean()),
        "transitions": len(acts),
    }


def _pca_key(m: dict) -> str:
    """The probe on 128 principal components; latents of 128 dimensions or fewer (LAPO) have only their full probe."""
    return "lapo/ridge_probe_pca128_mse" if "lapo/ridge_probe_pca128_mse" in m else "lapo/ridge_probe_mse"


def compare(claim: str, a: str, b: str, measure: str, va: dict, vb: dict, lower: bool, paper=None) -> dict:
    """a better than b on `measure` (per-seed values va, vb): IQMs with their bootstrap intervals, the ratio of worse
    to better, the one-sided exact permutation p (the verdict is set once the family's p-values are adjusted)."""
    ia, ib = _iv(va), _iv(vb)
    ratio = _ratio(ib, ia) if lower else _ratio(ia, ib)
    return {"claim": claim, "a": a, "b": b, "measure": measure, "a_interval": ia.as_dict(), "b_interval": ib.as_dict(),
            "a_per_seed": va, "b_per_seed": vb, "ratio": ratio, "paper_ratio": paper, "lower_is_better": lower,
            "p": permutation_p(list(va.values()), list(vb.values()), lower)}  # fmt: skip


def adjust(family: dict, unreadable: Optional[str] = None) -> None:
    """Holm over the family's p-values; each finding's verdict from its adjusted p (src/stats.py: decide).
    unreadable: for R² measures, the verdict where neither side's IQM reaches DECODABLE (an ordering of two values
    of ~0 says nothing about what either latent holds); the test's own verdict is kept as verdict_from_test."""
    adjusted = holm({k: f["p"] for k, f in family.items()})
    m = sum(1 for f in family.values() if math.isfinite(f["p"]))
    for k, f in family.items():
        f["p_holm"], f["comparisons"] = adjusted[k], m
        a, b = Interval(**f["a_interval"]), Interval(**f["b_interval"])
        f["verdict"] = decide(adjusted[k], a, b, f["lower_is_better"])
        if unreadable is not None and max(a.iqm, b.iqm) < DECODABLE:
            f["verdict_from_test"], f["verdict"] = f["verdict"], unreadable


def analyse(small_dir: Path, seeds: list[int], budget: int) -> dict:
    runs = study(small_dir, seeds, budget)
    data = small_dir / "data"
    full, labeled = dataset_info(data / f"{ENV}.hdf5"), dataset_info(data / f"{ENV}-labeled-1000x{budget}.hdf5")
    expert = full.get("dataset_return", math.nan)
    baseline = novel_baseline(data / f"{ENV}-eval.hdf5", data / f"{ENV}-labeled-1000x{budget}.hdf5")

    probes, P = {}, {}
    for v in LAMS:
        probes[v] = {
            "ridge_mse": per_seed(runs, v, lambda m: _num(m.get("lapo/ridge_probe_mse"))),
            "ridge_baseline_mse": per_seed(runs, v, lambda m: _num(m.get("lapo/ridge_probe_baseline_mse"))),
            "ridge_val_baseline_mse": per_seed(runs, v, lambda m: _num(m.get("lapo/ridge_probe_val_baseline_mse"))),
            "novel_ridge_baseline_mse": per_seed(runs, v, lambda m: _num(m.get("lapo/eval_ridge_probe_baseline_mse"))),
            "ridge_relative": per_seed(runs, v, _rel),
            "init_ridge_relative": per_seed(
                runs, v, lambda m: _rel(m, "lapo/init/ridge_probe_mse", "lapo/init/ridge_probe_baseline_mse")
            ),
            # the latents projected on their top 128 principal components (LAPO's own width: its full probe)
            "pca128_relative": per_seed(runs, v, lambda m: _rel(m, _pca_key(m))),
            "novel_ridge_relative": per_seed(
                runs, v, lambda m: _rel(m, "lapo/eval_ridge_probe_mse", "lapo/eval_ridge_probe_baseline_mse")
            ),
            "online_probe_mse": per_seed(runs, v, lambda m: _num(m.get("lapo/final_action_probe_mse"))),
            "action_variance": per_seed(runs, v, lambda m: _num(m.get("lapo/action_variance"))),
        }
        P[v] = _iv(probes[v]["ridge_relative"])
        probes[v]["interval"] = P[v].as_dict()
        probes[v]["init_interval"] = _iv(probes[v]["init_ridge_relative"]).as_dict()
        probes[v]["novel_interval"] = _iv(probes[v]["novel_ridge_relative"]).as_dict()
    leakage = {
        v: {
            t: {
                when: per_seed(runs, v, lambda m, k=f"lapo/{pre}leakage/{t}_{sfx}": _num(m.get(k, math.nan)))
                for when, pre, sfx in (("end", "", "r2"), ("init", "init/", "r2"), ("novel", "", "eval_r2"))
            }
            for t in TARGETS + SHARES
        }
        for v in LAMS
    }
    for v in LAMS:
        for t in TARGETS + SHARES:
            for when in ("end", "init", "novel"):
                leakage[v][t][f"{when}_interval"] = _iv(leakage[v][t][when]).as_dict()
    returns = {v: per_seed(runs, v, lambda m, k=k: _num(m.get(k))) for v, k in RETURN_KEY.items()}
    bc_full = [x for x in returns["bc_full"].values() if math.isfinite(x)]
    norm = float(np.mean(bc_full)) if bc_full else math.nan
    # a normaliser at or below zero makes every ratio meaningless: no scores then (the precondition says why)
    scores = {v: {s: x / norm if norm > 0 else math.nan for s, x in r.items()} for v, r in returns.items()}
    novel = {
        "laom_labels": per_seed(runs, "laom_labels", lambda m: _num(m.get("lapo/eval_action_mse"))),
        "idm": per_seed(runs, "idm", lambda m: _num(m.get("idm/eval_action_mse"))),
    }

    S = {v: _iv(scores[v]) for v in scores}
    N = {v: _iv(novel[v]) for v in novel}
    rel, pr = "ridge relative MSE", probes
    findings = {
        "F1": compare("distractors hurt LAPO: its held-out ridge probe (relative MSE) is worse with distractors",
                      "lapo_vanilla", "lapo", rel, pr["lapo_vanilla"]["ridge_relative"], pr["lapo"]["ridge_relative"],
                      lower=True),
        "F2": compare("LAOM's latents beat LAPO's with distractors (ridge relative MSE)", "laom", "lapo", rel,
                      pr["laom"]["ridge_relative"], pr["lapo"]["ridge_relative"], lower=True, paper=PAPER["F2"]),
        "F2@128": compare("F2 at one width: LAOM's latents on their top 128 principal components against LAPO's 128",
                          "laom", "lapo", "ridge relative MSE, 128 dimensions", pr["laom"]["pca128_relative"],
                          pr["lapo"]["pca128_relative"], lower=True),
        "F3": compare("supervision improves LAOM's latents (ridge relative MSE)", "laom_labels", "laom", rel,
                      pr["laom_labels"]["ridge_relative"], pr["laom"]["ridge_relative"], lower=True),
        "F5": compare("LAOM + supervision predicts actions on novel distractors better than the IDM (Fig. 9a)",
                      "laom_labels", "idm", "action MSE on the novel-distractor set", novel["laom_labels"],
                      novel["idm"], lower=True),
        "F6": compare("masked LAPO (true masks) beats LAPO with distractors (ridge relative MSE)", "lapo_mask",
                      "lapo", rel, pr["lapo_mask"]["ridge_relative"], pr["lapo"]["ridge_relative"], lower=True),
    }  # fmt: skip
    adjust(findings)
    # F5 reads the supervised head: only where it beats a head that learned nothing (the mean action)
    nothing = baseline.get("labeled_mean_action", math.nan)
    findings["F5"]["mean_action_baseline"] = nothing
    if not N["laom_labels"].iqm < nothing:
        findings["F5"]["verdict_from_test"] = findings["F5"]["verdict"]
        findings["F5"]["verdict"] = "not readable (LAOM + supervision's head is not below the mean action's MSE)"
    findings["F4"] = {
        "claim": f"LAOM + supervision has the best normalised return at {budget} labeled trajectories",
        "a": "laom_labels", "b": "lapo, laom, idm, bc", "measure": "normalised return",
        "verdict": _all([verdict(S["laom_labels"], S[o], lower_is_better=False) for o in OTHERS]),
        "ratio": _ratio(S["laom_labels"], S["laom"]), "paper_ratio": PAPER["F4"],
        "against": {o: verdict(S["laom_labels"], S[o], lower_is_better=False) for o in OTHERS},
        "a_interval": S["laom_labels"].as_dict(),
    }  # fmt: skip
    leak_tests = {
        f"{a} < {b}: {t}": compare(f"{VARIANTS[a][1]}'s latents hold less {t} motion than {VARIANTS[b][1]}'s "
                                   "(test R², lower = less leakage)", a, b, f"{t} R²", leakage[a][t]["end"],
                                   leakage[b][t]["end"], lower=True)
        for a, b, t in LEAKAGE_TESTS
    }  # fmt: skip
    adjust(leak_tests, unreadable=f"not readable (neither decodes it: R² below {DECODABLE})")
    share = {v: leakage[v]["latent_from_agent"]["end"] for v in LAMS}
    share_tests = {
        f"{a} > {b}: agent share": compare(f"the agent explains more of {VARIANTS[a][1]}'s latent than of "
                                           f"{VARIANTS[b][1]}'s (test R² of the latent from the agent, higher = "
                                           "more about the agent)", a, b, "agent share", share[a], share[b],
                                           lower=False)
        for a, b in SHARE_TESTS
    }  # fmt: skip
    adjust(share_tests, unreadable=f"not readable (the agent explains less than {DECODABLE} of either latent)")
    extra = {
        "augmentations_help_laom": verdict(P["laom"], P["laom_noaug"], lower_is_better=True),
        "distractors_hurt_laom": verdict(P["laom_vanilla"], P["laom"], lower_is_better=True),
    }
    # preconditions
    above = [f"{v} seed {s}: {x:.3f}" for v in LAMS for s, x in probes[v]["ridge_relative"].items() if not x < 1]
    missing = [v for v in VARIANTS if len(runs[v]) < len(seeds) and not (v in OPTIONAL and not runs[v])]
    dec = {
        v: {s: x for s, x in per_seed(runs, v, lambda m: _num(m.get("decoder/final_train_loss"))).items()
            if "decoder/updates" in runs[v][s]["metrics"]}  # seeds that trained a decoder (RETURN_SEEDS)
        for v in ("lapo", "laom", "laom_labels")
    }  # fmt: skip
    var_l = labeled.get("action_variance", math.nan)
    dec_bad = [f"{v} seed {s}: {x:.2f}" for v, d in dec.items() for s, x in d.items() if not x < var_l]
    bc_full_return = float(norm)
    ran = [v for v in LAMS if runs[v]]
    pre = {
        "every LAM's held-out ridge probe below its mean-action baseline": {
            "holds": not above and all(probes[v]["ridge_relative"] for v in ran),
            "exceptions": above,
        },
        "BC on all data reaches at least half the expert's return": {
            "holds": bool(bc_full_return >= 0.5 * expert) if bc_full else None,
            "bc_full_return": bc_full_return,
            "expert": expert,
        },
        "each decoder's training loss below the labeled actions' variance": {
            "holds": (not dec_bad and all(dec.values())) if any(dec.values()) else None,
            "labeled_action_variance": var_l,
            "exceptions": dec_bad,
            "losses": dec,
        },
    }  # fmt: skip  (holds None: not measured, no run of that kind, e.g. RETURN_SEEDS=none)
    p2 = "BC on all data reaches at least half the expert's return"
    if pre[p2]["holds"] is None:  # no policy was trained: there is no return to order
        findings["F4"]["verdict"] = "not measured (no policy runs: RETURN_SEEDS)"
    elif not pre[p2]["holds"]:  # the scores are ratios to a near-zero return: no ordering can be read from them
        findings["F4"]["verdict_from_intervals"] = findings["F4"]["verdict"]
        findings["F4"]["verdict"] = "not readable (precondition 2 failed)"
    curves = {v: {s: r["stages"]["lapo"].get("lapo/ridge_probe_curve") or [] for s, r in runs[v].items()} for v in ran}
    return {
        "seeds": seeds,
        "runs_found": {v: sorted(runs[v]) for v in VARIANTS},
        "missing": missing,
        "expert_return": expert,
        "bc_full_return": bc_full_return,
        "novel_baseline": baseline,
        "probes": probes,
        "leakage": leakage,
        "leakage_tests": leak_tests,
        "agent_share_tests": share_tests,
        "probe_curves": curves,
        "returns": returns,
        "scores": {v: {"per_seed": scores[v], "interval": S[v].as_dict()} for v in scores},
        "novel_action_mse": {v: {"per_seed": novel[v], "interval": N[v].as_dict()} for v in novel},
        "findings": findings,
        "other": extra,
        "preconditions": pre,
        "_runs": runs,
    }


def _all(vs: list[str]) -> str:
    if "not measured" in vs:
        return "not measured"
    if all(v == "holds" for v in vs):
        return "holds"
    return "direction only" if all(v in ("holds", "direction only") for v in vs) else "does not hold"


def _f(x, d=3) -> str:
    return f"{x:.{d}g}" if isinstance(x, float) and math.isfinite(x) else "–"


def _p(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) and math.isfinite(x) else "–"


def _finding_rows(fam: dict, label=lambda f: f["claim"]) -> list[str]:
    L = VARIANTS
    rows = []
    for k, f in fam.items():
        paper = f" ({f['paper_ratio']:g}x)" if f.get("paper_ratio") else ""
        rows.append(
            f"| {k}{': ' + label(f) if label(f) else ''} | {f['measure']} | {L[f['a']][1]} | {L[f['b']][1]} | "
            f"{Interval(**f['a_interval'])} | {Interval(**f['b_interval'])} | {_f(f['ratio'])}x{paper} | "
            f"{_p(f['p'])} | {_p(f['p_holm'])} | **{f['verdict']}** |"
        )
    return rows


def markdown(a: dict) -> str:
    L = VARIANTS
    fam = {k: f for k, f in a["findings"].items() if k != "F4"}
    m = next((f["comparisons"] for f in fam.values()), 0)
    head = ("| finding | measure | a | b | a: IQM [bootstrap interval] | b: IQM [bootstrap interval] | ratio (paper) "
            "| p (one-sided, exact) | p (Holm) | verdict |")  # fmt: skip
    out = [
        "## Verdicts",
        "",
        f"Seeds {', '.join(map(str, a['seeds']))}. Each finding is an exact one-sided permutation test of the seeds' "
        f"means (all relabellings of the pooled seeds), Holm-adjusted over the {m} comparisons of this table; "
        f'"holds" where the adjusted p is below {ALPHA}, "direction only" where the IQMs order as the paper '
        "says without it. The bracketed intervals are rliable's stratified percentile-bootstrap intervals of the IQM: "
        "with 5 seeds they describe the seeds' spread (they are close to [lowest, highest]), not a calibrated 95% "
        "confidence interval.",
        "",
        head,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += _finding_rows(fam)
    f4 = a["findings"]["F4"]
    ib = ", ".join(f"{L[o][1]} {Interval(**a['scores'][o]['interval'])}" for o in OTHERS)
    out.append(f"| F4: {f4['claim']} | normalised return | {L['laom_labels'][1]} | {ib} | "
               f"{Interval(**f4['a_interval'])} | | {_f(f4['ratio'])}x ({f4['paper_ratio']:g}x) | – | – | "
               f"**{f4['verdict']}** |")  # fmt: skip
    nb = a.get("novel_baseline") or {}
    out += ["", f"F5's floor: a head that learned nothing, predicting the labeled set's mean action, has a novel-set "
            f"action MSE of {_f(nb.get('labeled_mean_action', math.nan), 4)} (the novel set's own mean action: "
            f"{_f(nb.get('own_mean_action', math.nan), 4)}; {nb.get('transitions', '–')} transitions)."]  # fmt: skip
    out += ["", "Other readings (interval separation only): "
            + ", ".join(f"{k.replace('_', ' ')}: **{v}**" for k, v in a["other"].items()), ""]  # fmt: skip
    out += ["## Preconditions", "", "| precondition | held | detail |", "|---|---|---|"]
    for k, p in a["preconditions"].items():
        detail = {kk: vv for kk, vv in p.items() if kk not in ("holds", "losses")}
        held = "not measured" if p["holds"] is None else "yes" if p["holds"] else "**no**"
        out.append(f"| {k} | {held} | {json.dumps(_clean(detail))} |")
    out += ["", "## What the latent actions encode (leakage probes, held-out test trajectories)", ""]
    lt = a["leakage_tests"]
    mm = next((f["comparisons"] for f in lt.values()), 0)
    out += [f"R² of a ridge probe from the latent action of (o_t, o_t+1) to each target (src/probes.py): 1 = "
            "decodable, 0 = no better than the mean; per target the IQM over seeds at update 0 (the initialised "
            "network) and at the end, and on the novel-distractor set. Tests: exact one-sided permutation, Holm over "
            f"the {mm} comparisons below.", ""]  # fmt: skip
    out += ["| LAM | " + " | ".join(f"{t}: update 0 → end" for t in TARGETS) + " |",
            "|---|" + "---|" * len(TARGETS)]  # fmt: skip
    for v in LAMS:
        if not a["_runs"][v]:
            continue
        cells = []
        for t in TARGETS:
            d = a["leakage"][v][t]
            i0, i1 = Interval(**d["init_interval"]), Interval(**d["end_interval"])
            cells.append(f"{_f(i0.iqm, 2)} → {i1}" if i1.n else "not recorded")
        out.append(f"| {L[v][1]} | " + " | ".join(cells) + " |")
    out += ["", head.replace("finding", "comparison"), "|---|---|---|---|---|---|---|---|---|---|"]
    out += _finding_rows(lt, label=lambda f: "")
    out += ["", "## How much of each latent is about the agent (held-out test trajectories)", ""]
    st = a["agent_share_tests"]
    ms = next((f["comparisons"] for f in st.values()), 0)
    out += ["The other direction: a ridge fit from the agent's targets (the action and the agent-state change, "
            "standardised) to the whole latent, and the share of the latent's variance it explains (R², summed over "
            "the latent's dimensions); the same from every distractor's change. What the agent leaves unexplained "
            "is the rest of the latent: the distractors, a non-linear code of the agent, or noise; the LAMs without "
            "distractors are the control. IQM over seeds at update 0 → the end, and on the novel-distractor set. "
            f"Tests: exact one-sided permutation, Holm over the {ms} comparisons below.", ""]  # fmt: skip
    out += ["| LAM | agent: update 0 → end | agent, novel distractors | distractors: update 0 → end |",
            "|---|---|---|---|"]  # fmt: skip
    for v in LAMS:
        if not a["_runs"][v]:
            continue
        d, dd = a["leakage"][v]["latent_from_agent"], a["leakage"][v]["latent_from_distractors"]
        cells = []
        for x in (d, dd):
            i0, i1 = Interval(**x["init_interval"]), Interval(**x["end_interval"])
            cells.append(f"{_f(i0.iqm, 2)} → {i1}" if i1.n else "not recorded")
        cells.insert(1, str(Interval(**d["novel_interval"])) if d["novel_interval"]["n"] else "–")
        out.append(f"| {L[v][1]} | " + " | ".join(cells) + " |")
    out += ["", head.replace("finding", "comparison"), "|---|---|---|---|---|---|---|---|---|---|"]
    out += _finding_rows(st, label=lambda f: "")
    out += ["", "## Latent-action quality per seed (ridge probe, held-out test trajectories)", ""]
    out += [
        "| LAM | MSE per seed | baseline per seed | relative at update 0 | relative: IQM [bootstrap interval] "
        "| on 128 principal components | novel distractors, relative | online probe MSE |"
    ]
    out.append("|---|---|---|---|---|---|---|---|")
    for v in LAMS:
        p = a["probes"][v]
        if not p["ridge_mse"]:
            continue
        seeds = ", ".join(_f(x) for x in p["ridge_mse"].values())
        base = ", ".join(_f(x) for x in p["ridge_baseline_mse"].values())
        online = ", ".join(_f(x) for x in p["online_probe_mse"].values())
        out.append(
            f"| {L[v][1]} | {seeds} | {base} | {Interval(**p['init_interval'])} | {Interval(**p['interval'])} | "
            f"{_iv(p['pca128_relative'])} | {Interval(**p['novel_interval'])} | {online} |"
        )
    out += [
        "",
        f"## Returns (expert: {_f(a['expert_return'], 4)}; normaliser: BC on all data, {_f(a['bc_full_return'])})",
        "",
    ]
    out += ["| method | return per seed | normalised: IQM [bootstrap interval] |", "|---|---|---|"]
    for v in RETURN_KEY:
        r = ", ".join(_f(x) for x in a["returns"][v].values())
        out.append(f"| {L[v][1]} | {r} | {Interval(**a['scores'][v]['interval'])} |")
    out += [
        "",
        "## Action MSE on novel distractors (Fig. 9a)",
        "",
        "| method | per seed | IQM [bootstrap interval] |",
        "|---|---|---|",
    ]
    for v, d in a["novel_action_mse"].items():
        out.append(f"| {L[v][1]} | {', '.join(_f(x) for x in d['per_seed'].values())} | {Interval(**d['interval'])} |")
    if a["missing"]:
        out += ["", f"Runs missing for some seed: {', '.join(a['missing'])}."]
    return "\n".join(out) + "\n"


def precision_markdown(t: dict) -> str:
    """The precision check of the tuning (fp32 against bf16 autocast, tuning seed): probes and wall time."""
    rows = {r["setting"]: r for r in t["rows"] if r["method"] == "precision"}
    if not rows:
        return ""
    out = [
        "| LAM | fp32: validation / test relative MSE | bf16: validation / test | bf16 - fp32 (test) | s fp32 / bf16 |",
        "|---|---|---|---|---|",
    ]
    for lam in ("lapo", "laom", "laom_labels"):
        a, b = rows.get(f"{lam}-fp32"), rows.get(f"{lam}-bf16")
        if not a or not b:
            continue
        out.append(f"| {lam} | {a['value']:.3f} / {a['test_not_used']:.3f} | {b['value']:.3f} / "
                   f"{b['test_not_used']:.3f} | {b['test_not_used'] - a['test_not_used']:+.3f} | "
                   f"{a['seconds']} / {b['seconds']} |")  # fmt: skip
    return "\n".join(out)


def _json_num(o):
    return o if not isinstance(o, float) or math.isfinite(o) else None


def _clean(obj):
    """NaN / inf -> None (JSON null) everywhere: a missing number, not an invalid file."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return _json_num(obj)


# ---------------------------------------------------------------- figures


def plot_curves(a: dict, t: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    for v in LAMS:
        curves = [r["stages"]["lapo"].get("lapo/ridge_probe_curve") for r in a["_runs"][v].values()]
        bases = [r["metrics"].get("lapo/ridge_probe_baseline_mse") for r in a["_runs"][v].values()]
        curves = [np.array([[p[0], p[2] / b] for p in c]) for c, b in zip(curves, bases, strict=True) if c and b]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        c = np.stack([c[:n] for c in curves])  # [seeds, points, 2]
        ax.plot(c[0, :, 0], c[:, :, 1].mean(0), marker="o", label=VARIANTS[v][1])
        ax.fill_between(c[0, :, 0], c[:, :, 1].min(0), c[:, :, 1].max(0), alpha=0.15)
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="mean action")
    ax.set(xlabel="updates", ylabel="ridge probe MSE / baseline (test)", title="Reported seeds: mean, min-max band")
    ax.legend(fontsize=7)
    ax = axes[1]
    for r in t["rows"]:
        if r.get("curve"):
            c = np.array(r["curve"])
            ax.plot(c[:, 0], c[:, 1], marker=".", label=f"{r['method']} {r['setting']}")
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set(xlabel="updates", ylabel="ridge probe MSE / baseline (validation)", title="Tuning seed")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_leakage(a: dict, path: Path) -> None:
    """For each LAM, the test R² of each leakage target at update 0 (hatched) and at the end (solid), seeds as
    dots: what each latent space holds, with and without distractors (the latter have no distractor to hold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = [v for v in LAMS if a["_runs"][v]]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(lams) * 1.2) * 1.6, 4.5),
                                  gridspec_kw={"width_ratios": [1.6, 1]})  # fmt: skip
    _bars(ax, a, lams, TARGETS)
    ax.set_title("What the latent action of (o_t, o_t+1) encodes: the action, the agent's state change and each "
                 "distractor's change", fontsize=9)  # fmt: skip
    _bars(ax2, a, lams, SHARES)
    ax2.set_title("How much of the latent the agent (or the distractors' changes) explains", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    """A finished run's LAM, built as its script builds it: with lam.pt's weights, or (trained=False) seeded as the
    script seeds before it builds its networks (src/run.py), i.e. the run's update-0 network. In eval mode."""
    import importlib

    from src.checkpoint import load_checkpoint
    from src.run import set_seed

    mod = importlib.import_module(module)
    cfg = pyrallis.parse(config_class=mod.Config, config_path=str(run_dir / "config.yaml"), args=[])
    if not trained:
        set_seed(cfg.seed)
    lam = mod.build_models(cfg, shapes, "lam")["lam"]
    if trained:
        lam.load_state_dict(load_checkpoint(run_dir / "lam.pt")["objects"]["lam"])
    return lam.eval()


def latent_points(run_dir: Path, module: str, config: dict, max_points: int = 1500):
    """Latent actions of (o_t, o_{t+1}) on the test trajectories (the ridge probe's last tenth) of the run's own
    data (config: the run's, from its results.json), from its finished LAM checkpoint, with the true actions."""
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


def plot_latents(a: dict, small_dir: Path, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        import umap

        method = "UMAP"
    except ImportError:
        umap, method = None, "PCA"
    panels = [("lapo", "train_lapo"), ("lapo_vanilla", "train_lapo"), ("laom", "train_laom"),
              ("laom_vanilla", "train_laom")]  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (v, module) in zip(axes, panels, strict=True):
        runs = a["_runs"][v]
        if not runs:
            ax.set_title(f"{VARIANTS[v][1]}: not run")
            continue
        seed = min(runs)
        run_dir = Path(runs[seed]["_dir"])
        z, acts = latent_points(run_dir, module, runs[seed]["config"])
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return method


def main(c: Config) -> None:
    small_dir, out = Path(c.small_dir), Path(c.out)
    if not small_dir.is_dir():
        raise SystemExit(f"error: --small_dir={c.small_dir} is not a folder (scripts/small/reproduce.sh makes it)")
    out.mkdir(parents=True, exist_ok=True)
    t = tuning(small_dir)
    (out / "tuning.md").write_text(tuning_markdown(t) + "\n")
    write_json(out / "tuning.json", _clean(t))
    print(tuning_markdown(t))
    print("choices:", t["choices"])
    if c.tuning:
        return
    seeds = [int(s) for s in c.seeds.split()]
    a = analyse(small_dir, seeds, c.budget)
    a["budget"] = c.budget
    plot_curves(a, t, out / "probe_curves.png")
    plot_leakage(a, out / "leakage.png")
    if c.latents:
        a["latent_projection"] = plot_latents(a, small_dir, out / "latents.png")
    md = markdown(a)
    prec = precision_markdown(t)
    prec = f"\n## Precision check (tuning seed)\n\n{prec}\n" if prec else ""
    sources = out / "latent_sources.json"  # scripts/small/latent_sources.py, run before this report
    if sources.exists():
        table = json.loads(sources.read_text())["markdown"]
        md += ("\n## What moves each latent (true foreground masks; scripts/small/latent_sources.py)\n\n"
               "How far each latent action moves when, in o_t+1, the step's change is undone (all of it, the "
               "background's or the agent's, with the true masks): the step's share of the latent's variance, and "
               "the background's and the agent's shares of the latent's response to the step, on held-out test "
               "transitions, IQM over seeds [bootstrap interval]; the first row is the frame difference itself.\n\n"
               f"{table}\n")  # fmt: skip
    (out / "results.md").write_text("# Results of scripts/small/reproduce.sh\n\n" + md + "\n## Tuning\n\n" +
                                    tuning_markdown(t) + "\n" + prec)  # fmt: skip
    (out / "verdicts.md").write_text(md.split("## Preconditions")[0])
    summary = {k: v for k, v in a.items() if k != "_runs"} | {"tuning": t}
    write_json(out / "summary.json", _clean(summary))
    print(md.split("## Latent-action quality")[0])
    print(f"report: {out}/results.md, {out}/summary.json, figures {out}/probe_curves.png, {out}/leakage.png, "
          f"{out}/latents.png")  # fmt: skip


if __name__ == "__main__":
    main(pyrallis.parse(config_class=Config))
