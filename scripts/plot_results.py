"""Tables and figures of a sweep, from the results.json files under a runs directory (no wandb needed).

    python -m scripts.plot_results --runs_dir runs    # --out runs/results (the default: git-ignored, not the sources)

Writes results.md, the CSVs, summary.json (all of it, and what is missing) and the figures to --out
(docs/REPRODUCING.md). A sweep under a subfolder (e.g. runs/cross_embodied/...) is a "suite": its files get -<suite>.

How a run is identified, in order:
- method, suite: from the layout of scripts/sweeps, <suite...>/<method>/<env>/budget<N>|full/seed<S>, with a known
  method; else from the config sections (idm -> idm; lapo with labeled_data_path -> laom_labels; lapo with quantize
  -> lapo; other lapo -> laom; bc only -> bc, or bc_full when its data file is not a labeled subset).
- the run's data file: the labeled trajectories (decoder.data_path, else lapo.labeled_data_path; idm.data_path;
  bc.data_path), for bc_full its full set; a relative path is read from the current directory, else from the
  repository root (where the runs were launched).
- env: the data file's root attributes domain_name-task_name when the file is at hand; else its name
  (<env>-labeled-1000x<N>.hdf5; bc_full: <env>.hdf5); else the directory layout.
- budget: bc_full "full"; else the file name's N; else the layout's budget<N>; else the file's number of
  trajectories, at most the stage's max_trajectories (so the example runs on data/example-data.hdf5 count as
  cheetah-run, budget 14; example-bc as bc_full). A run none of these places is reported and left out.
- seed: the config's `seed`.
Statistics: mean and population std over seeds, and rliable's IQM with its 95% stratified bootstrap interval
(`interval`). The average over environments is the mean of the per-environment means, its std over the per-seed
averages of the seeds in every environment. Scores: the run's own (src/evaluation.py), else from the data file's
attributes (without the file, --setting picks the paper's Table 3 column).
"""

import csv
import functools
import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import pyrallis

from src.errors import ConfigError, MissingFileError, cli
from src.evaluation import NORMALIZING_RETURNS, normalized_score
from src.files import nan_to_none

METHODS = ("lapo", "laom", "laom_labels", "idm", "bc", "bc_full")
LABELS = dict(lapo="LAPO", laom="LAOM", laom_labels="LAOM+supervision", idm="IDM", bc="BC", bc_full="BC (full data)")
COLORS = dict(
    lapo="tab:blue", laom="tab:orange", laom_labels="tab:red", idm="tab:green", bc="tab:purple", bc_full="black"
)
LATENT = ("lapo", "laom", "laom_labels")
SHARED_LAM = ("lapo", "laom")  # one LAM per (env, seed), reused by every budget
# Final metrics of each method (the keys its script writes into results.json "metrics").
SCORE_KEY = {m: "decoder/normalized_score" if m in LATENT else "bc/normalized_score" for m in METHODS}
RETURN_KEY = {m: "decoder/eval_returns_mean" if m in LATENT else "bc/eval_returns_mean" for m in METHODS}
PROBES = {  # column -> (results.json key, the table's header)
    "action_probe_mse": ("lapo/final_action_probe_mse", "latent -> action"),
    "obs_action_probe_mse": ("lapo/final_obs_action_probe_mse", "obs -> action"),
    "state_probe_mse": ("lapo/final_state_probe_mse", "obs -> state"),
    "eval_action_probe_mse": ("lapo/eval_action_probe_mse", "novel"),
    "action_variance": ("lapo/action_variance", "action variance"),  # the online probes' baseline: the mean action
    "ridge_probe_mse": ("lapo/ridge_probe_mse", "ridge, held out"),  # closed form, held-out trajectories (probes.py)
    "ridge_probe_baseline_mse": ("lapo/ridge_probe_baseline_mse", "ridge baseline"),
    "eval_ridge_probe_mse": ("lapo/eval_ridge_probe_mse", "ridge, novel"),
    "eval_ridge_probe_baseline_mse": ("lapo/eval_ridge_probe_baseline_mse", "ridge novel baseline"),
}
NOVEL_KEY = {"idm": "idm/eval_action_mse", "laom_labels": "lapo/eval_action_mse"}  # novel-distractor action MSE
LABELED_RE = re.compile(r"^(?P<env>.+)-labeled-1000x(?P<budget>\d+)\.hdf5$")
FULL_RE = re.compile(r"^(?P<env>[A-Za-z_]+-[A-Za-z_]+)\.hdf5$")
BUDGET_DIR_RE = re.compile(r"^budget(?P<budget>\d+)$")
SEED_DIR_RE = re.compile(r"^seed(?P<seed>\d+)$")
ROOT = Path(__file__).resolve().parents[1]  # the repository root, where runs are launched
FULL = "full"  # budget of bc_full
AVERAGE = "average"  # env of the rows averaged over environments


@dataclass
class Config:
    runs_dir: str = "runs"  # folder searched (recursively) for results.json
    out: str = "runs/results"  # output folder of the tables, CSVs, summary.json and figures
    setting: str = "distractors"  # Table 3 column for runs that recorded no normalised score: distractors / vanilla
    # "paper": scores as the runs recorded them (return / paper Table 3's BC return); "bc_full": return / the mean
    # return of this sweep's own BC-on-all-data runs of the same suite and environment (studies/small/reproduce.sh)
    normalize_by: str = "paper"


@dataclass
class Run:
    path: Path  # results.json
    suite: str  # "" for the main sweep, else the folder prefix (e.g. "cross_embodied")
    method: str
    env: str
    budget: int | str  # number of labeled trajectories, or "full"
    seed: int
    metrics: dict
    lam_trained: bool  # the run trained its own LAM (not reused from another run)


# ---------------------------------------------------------------- reading runs


def _layout(rel: Path) -> dict | None:
    """suite / method / env / budget / seed from <suite...>/<method>/<env>/budget<N>|full/seed<S>, else None."""
    parts = rel.parent.parts
    if len(parts) < 4 or parts[-4] not in METHODS or not SEED_DIR_RE.match(parts[-1]):
        return None
    b = BUDGET_DIR_RE.match(parts[-2])
    if not b and parts[-2] != FULL:
        return None
    return {
        "suite": "/".join(parts[:-4]),
        "method": parts[-4],
        "env": parts[-3],
        "budget": int(b["budget"]) if b else FULL,
        "seed": int(SEED_DIR_RE.match(parts[-1])["seed"]),
    }


def method_from_config(config: dict) -> str:
    """The method of a run from its config sections (see the module docstring)."""
    if "idm" in config:
        return "idm"
    lam = config.get("lapo")
    if isinstance(lam, dict):
        if "labeled_data_path" in lam:
            return "laom_labels"
        return "lapo" if "quantize" in lam else "laom"
    data = Path(str(config.get("bc", {}).get("data_path", ""))).name
    return "bc" if LABELED_RE.match(data) else "bc_full"


def labeled_data(method: str, config: dict) -> tuple[str | None, int | None]:
    """The run's labeled trajectories (bc_full: its full set): (data file, max_trajectories of the stage reading it)."""
    if method in LATENT:
        decoder = config.get("decoder", {})
        if decoder.get("data_path"):
            return decoder["data_path"], decoder.get("max_trajectories")
        return config.get("lapo", {}).get("labeled_data_path"), None  # LAOM+supervision: all of it supervises
    section = config.get("idm" if method == "idm" else "bc", {})
    return section.get("data_path"), section.get("max_trajectories")


@functools.cache
def data_file_info(path: str | None) -> tuple[dict, int] | None:
    """(root attributes, number of trajectories) of a data file, or None when not at hand (module docstring)."""
    if not path:
        return None
    candidates = [Path(path)] if Path(path).is_absolute() else [Path.cwd() / path, ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            try:
                with h5py.File(candidate, "r") as f:
                    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
                    return attrs, sum(1 for k in f.keys() if k.isdigit())
            except OSError:
                return None
    return None


def score_attrs(env: str, setting: str) -> dict:
    """The dataset attributes src.evaluation.normalized_score reads, for a run known by its env and --setting."""
    domain, task = env.split("-", 1) if "-" in env else (env, "")
    return {"domain_name": domain, "task_name": task, "difficulty": "vanilla" if setting == "vanilla" else setting}


def read_run(path: Path, runs_dir: Path, setting: str) -> tuple[Run | None, str | None]:
    """A Run from one results.json, or (None, why it was left out)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path}: unreadable ({e})"
    config, metrics = data.get("config", {}), dict(data.get("metrics", {}))
    layout = _layout(path.relative_to(runs_dir))
    method = layout["method"] if layout else method_from_config(config)
    data_path, max_trajectories = labeled_data(method, config)
    name = Path(str(data_path or "")).name
    named = (FULL_RE if method == "bc_full" else LABELED_RE).match(name)
    info = data_file_info(data_path)
    attrs = info[0] if info and {"domain_name", "task_name"} <= set(info[0]) else None
    env = named["env"] if named else (layout or {}).get("env")
    env = f"{attrs['domain_name']}-{attrs['task_name']}" if attrs else env
    if method == "bc_full":
        budget = FULL
    elif named:
        budget = int(named["budget"])
    elif layout:
        budget = layout["budget"]
    elif info:
        budget = info[1] if max_trajectories is None else min(info[1], max_trajectories)
    else:
        budget = None
    if env is None or budget is None:
        return None, (
            f"{path}: {method} run left out: env and budget are said neither by its data file {data_path!r} (not "
            "found from here), nor by its name (<env>-labeled-1000x<N>.hdf5), nor by the run directory "
            "(<method>/<env>/budget<N>/seed<S>)"
        )
    if attrs and named and method != "bc_full" and named["env"] != env:  # any name fits bc_full's <env>.hdf5
        print(f"warning: {path}: the data file {name} is named for {named['env']}, its attributes say {env}")
    if layout and (layout["env"], layout["budget"]) != (env, budget):
        print(f"warning: {path}: the directory says {layout['env']}/{layout['budget']}, the data {env}/{budget}")
    score_key = SCORE_KEY[method]
    if metrics.get(score_key) is None:
        score_from = attrs if attrs and "difficulty" in attrs else score_attrs(env, setting)
        metrics[score_key] = normalized_score(score_from, metrics.get(RETURN_KEY[method]))
    seed = int(config.get("seed", layout["seed"] if layout else 0))
    # Its own LAM unless loaded from another run's checkpoint (a resumed run's "skipped" LAM stage was trained).
    lam_trained = not config.get("lapo", {}).get("checkpoint_path")
    return Run(path, layout["suite"] if layout else "", method, env, budget, seed, metrics, lam_trained), None


def collect_runs(runs_dir: str | Path, setting: str = "distractors") -> tuple[list[Run], list[str], list[str]]:
    """(runs, problems: results.json left out, unfinished: run folders without results.json)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise MissingFileError(f"--runs_dir={runs_dir}: no such folder; expected the folder of the runs to report")
    runs, problems, seen = [], [], {}
    data_file_info.cache_clear()  # data files may have changed since an earlier report in this process
    for path in sorted(runs_dir.rglob("results.json")):
        run, problem = read_run(path, runs_dir, setting)
        if problem:
            problems.append(problem)
            continue
        key = (run.suite, run.method, run.env, run.budget, run.seed)
        if key in seen:
            problems.append(f"{path}: duplicate of {seen[key]} ({'/'.join(map(str, key))}); left out")
            continue
        seen[key] = path
        runs.append(run)
    unfinished = sorted(
        str(p.parent)
        for p in runs_dir.rglob("config.json")
        if not (p.parent / "results.json").exists() and "wandb" not in p.parts
    )
    return runs, problems, unfinished


# ---------------------------------------------------------------- statistics


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
    """IQM and its 95% bootstrap interval of scores [runs, tasks] (1-D: one task); NaN without runs. Seeded (numpy's
    global generator too, for the call): the same scores give the same interval, whatever ran before."""
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
    # arch draws part of rliable's resamples from numpy's global generator: seeded for the call, then restored
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


def mean_std(values) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std())


def _budget_key(b) -> tuple:
    """Sort order of budgets: numbers ascending, then "full" (and "-")."""
    return (0, b, "") if isinstance(b, int) else (1, 0, str(b))


def aggregate(runs: list[Run], value, budget_of=lambda r: r.budget) -> list[dict]:
    """Rows {suite, method, env, budget, mean, std, n, seeds} of value(run) (None: left out), plus env "average"."""
    groups = defaultdict(dict)  # (suite, method, budget) -> env -> seed -> value
    for r in runs:
        v = value(r)
        if v is not None and math.isfinite(v):
            groups[(r.suite, r.method, budget_of(r))].setdefault(r.env, {})[r.seed] = float(v)
    rows = []
    for group, per_env in sorted(
        groups.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]), _budget_key(kv[0][2]))
    ):
        env_means = []
        for env, seeds in sorted(per_env.items()):
            mean, std = mean_std(seeds.values())
            env_means.append(mean)
            iv = interval(list(seeds.values()))  # rliable: IQM, 95% stratified bootstrap CI over seeds
            rows.append(_row(group, env, mean, std, sorted(seeds), iv))
        common = sorted(set.intersection(*(set(s) for s in per_env.values())))
        per_seed = [np.mean([per_env[e][s] for e in per_env]) for s in common]
        std = mean_std(per_seed)[1] if per_seed else math.nan
        # rliable over runs x environments: IQM of every (seed, env) score, bootstrap stratified by environment
        iv = interval(np.array([[per_env[e][s] for e in sorted(per_env)] for s in common]).reshape(len(common), -1))
        rows.append(_row(group, AVERAGE, float(np.mean(env_means)), std, common, iv, envs=sorted(per_env)))
    return rows


def _row(group: tuple, env: str, mean: float, std: float, seeds: list, iv: Interval, **envs) -> dict:
    suite, method, budget = group
    return {"suite": suite, "method": method, "env": env, "budget": budget, "mean": mean, "std": std, "n": len(seeds),
            "seeds": seeds, **envs, "iqm": iv.iqm, "ci_low": iv.low, "ci_high": iv.high}  # fmt: skip


def find_missing(runs: list[Run]) -> list[dict]:
    """Per suite: every (method, env, budget) that lacks some of the suite's seeds, envs or budgets."""
    missing = []
    for suite in sorted({r.suite for r in runs}):
        rs = [r for r in runs if r.suite == suite]
        seeds, envs = sorted({r.seed for r in rs}), sorted({r.env for r in rs})
        budgets = sorted({r.budget for r in rs if r.budget != FULL})
        for method in [m for m in METHODS if any(r.method == m for r in rs)]:
            have = {(r.env, r.budget, r.seed) for r in rs if r.method == method}
            for env in envs:
                for budget in [FULL] if method == "bc_full" else budgets:
                    lack = [s for s in seeds if (env, budget, s) not in have]
                    if lack:
                        missing.append(
                            {"suite": suite, "method": method, "env": env, "budget": budget, "missing_seeds": lack}
                        )
    return missing


def normalize_by_bc_full(runs: list[Run]) -> list[str]:
    """Replaces each run's score by return / the mean bc_full return of its suite and env; returns the problems
    (no bc_full runs, or a non-positive mean: no scores)."""
    refs = defaultdict(list)
    for r in runs:
        v = r.metrics.get(RETURN_KEY["bc_full"]) if r.method == "bc_full" else None
        if v is not None and math.isfinite(v):
            refs[(r.suite, r.env)].append(v)
    ref = {key: float(np.mean(refs[key])) if refs[key] else math.nan for key in {(r.suite, r.env) for r in runs}}
    problems = [
        f"{suite or 'main'}/{env}: no scores: normalising by BC on all data needs bc_full runs with a positive mean "
        f"return; found {len(refs[(suite, env)])} run(s), mean {value:g}"
        for (suite, env), value in sorted(ref.items())
        if not value > 0
    ]
    for r in runs:
        value, v = ref[(r.suite, r.env)], r.metrics.get(RETURN_KEY[r.method])
        ok = v is not None and math.isfinite(v) and value > 0
        r.metrics[SCORE_KEY[r.method]] = v / value if ok else None
        r.metrics["normalizing_return"] = value
    return problems


def summarize(runs: list[Run]) -> dict:
    """Every table of the report as lists of rows."""
    scores = aggregate(runs, lambda r: r.metrics.get(SCORE_KEY[r.method]))
    returns = aggregate(runs, lambda r: r.metrics.get(RETURN_KEY[r.method]))
    ret = {(x["suite"], x["method"], x["env"], x["budget"]): x for x in returns}
    for row in scores:
        other = ret.get((row["suite"], row["method"], row["env"], row["budget"]), {})
        row["return_mean"], row["return_std"] = other.get("mean", math.nan), other.get("std", math.nan)
    # Probes: one entry ("-") per LAPO / LAOM LAM (per env and seed, shared by budgets); LAOM+supervision per budget.
    lam_runs = [r for r in runs if r.method in LATENT and (r.method not in SHARED_LAM or r.lam_trained)]
    probes = {}
    for column, (key, _) in PROBES.items():
        probes[column] = aggregate(
            lam_runs, lambda r, key=key: r.metrics.get(key), lambda r: "-" if r.method in SHARED_LAM else r.budget
        )
    novel = aggregate(
        [r for r in runs if r.method in NOVEL_KEY], lambda r: r.metrics.get(NOVEL_KEY[r.method]), lambda r: r.budget
    )
    return {"scores": scores, "probes": probes, "novel_distractors": novel, "missing": find_missing(runs)}


# ---------------------------------------------------------------- writing


def _fmt(mean: float, std: float, n: int, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    s = f"{mean:.{digits}f}"
    if math.isfinite(std) and n > 1:
        s += f" ± {std:.{digits}f}"
    return f"{s} ({n})"


def _fmt_row(row: dict, digits: int = 2) -> str:
    """mean ± std (n), then rliable's IQM and 95% stratified bootstrap interval when there are several seeds."""
    s = _fmt(row["mean"], row["std"], row["n"], digits)
    if row.get("n", 0) > 1 and math.isfinite(row.get("iqm", math.nan)):
        s += f"; IQM {row['iqm']:.{digits}g} [{row['ci_low']:.{digits}g}, {row['ci_high']:.{digits}g}]"
    return s


def _cell(row: dict | None, num_envs: int) -> str:
    """A score cell; an average over fewer environments than the suite has says over how many."""
    if row is None:
        return ""
    s = _fmt_row(row)
    if "envs" in row and len(row["envs"]) < num_envs:
        s += f" [{len(row['envs'])}/{num_envs} envs]"
    return s


def _suffix(suite: str) -> str:
    return "" if not suite else "-" + suite.replace("/", "-")


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow(
                [" ".join(map(str, row[c])) if isinstance(row.get(c), list) else row.get(c, "") for c in columns]
            )


def markdown(
    summary: dict, runs_dir: str, num_runs: int, problems: list[str], unfinished: list[str], normalize_by: str = "paper"
) -> str:
    consts = ", ".join(f"{e} {v['distractors']:g}" for e, v in NORMALIZING_RETURNS.items())
    if normalize_by == "bc_full":
        norm = "the mean return of this sweep's BC runs on all the data of the same environment (`BC (full data)`)"
    else:
        norm = f"return of BC on the full labeled dataset (paper Table 3, with distractors: {consts})"
    lines = [
        "# Results",
        "",
        f"From {num_runs} results.json under `{runs_dir}` (scripts/plot_results.py). Normalised score = return / "
        f"{norm}. Cells: mean ± std "
        "over seeds (population std) and, in brackets, the number of seeds. `average`: mean over environments of the "
        "per-environment means; its std is over seeds of the per-seed average (seeds present in every environment); "
        "[k/n envs]: an average over only k of the n environments.",
    ]
    scores = summary["scores"]
    for suite in sorted({r["suite"] for r in scores}):
        rows = [r for r in scores if r["suite"] == suite]
        budgets = sorted({r["budget"] for r in rows}, key=_budget_key)
        num_envs = len({r["env"] for r in rows if r["env"] != AVERAGE})
        title = f" ({suite})" if suite else ""
        lines += ["", f"## Normalised score{title}", ""]
        for env in sorted({r["env"] for r in rows if r["env"] != AVERAGE}) + [AVERAGE]:
            cells = {(r["method"], r["budget"]): r for r in rows if r["env"] == env}
            if not cells:
                continue
            header = ["budget (labeled trajectories)"] + [str(b) for b in budgets]
            lines += [f"### {env}", "", _md(header), "|" + "---|" * len(header)]
            for method in [m for m in METHODS if any(k[0] == m for k in cells)]:
                lines.append(_md([LABELS[method]] + [_cell(cells.get((method, b)), num_envs) for b in budgets]))
            lines.append("")
    probe_rows = {}  # one line per (suite, method, env, budget) that has any probe, in the aggregate's order
    for column in PROBES:
        for r in summary["probes"][column]:
            probe_rows.setdefault(_rkey(r), r)
    if probe_rows:
        lines += ["## Linear-probe MSE, latent action -> true action (Fig. 5 / 6)", ""]
        lines += [
            "LAPO and LAOM train one LAM per (env, seed) for every budget (budget `-`); LAOM+supervision one per "
            "budget. The online probes (trained with Adam next to the LAM, as the paper): `latent -> action`, "
            "`obs -> action` (from the observation embedding), `obs -> state`, `novel` (the action probe on the "
            "evaluation set with novel distractors); `action variance`: the MSE of predicting the mean action, the "
            "baseline of the online action probes. The closed-form ridge probe (src/probes.py): `ridge, held out` "
            "on trajectories it was not fitted on, beside its `ridge baseline` (the fitted mean action on them), and "
            "on the novel-distractor set. A probe at or above its baseline found nothing in the latents.",
            "",
        ]
        heads = " | ".join(header for _, header in PROBES.values())
        lines += [f"| suite | method | budget | env | {heads} |", "|---|---|---|---|" + "---|" * len(PROBES)]
        other = {c: {_rkey(r): r for r in summary["probes"][c]} for c in PROBES}
        for key in sorted(
            probe_rows, key=lambda k: (k[0], METHODS.index(k[1]), _budget_key(k[3]), k[2] == AVERAGE, k[2])
        ):
            r, cells = probe_rows[key], [other[c].get(key) for c in PROBES]
            fmt = [_fmt_row(c, 4) if c else "–" for c in cells]
            lines.append(_md([r["suite"] or "main", LABELS[r["method"]], str(r["budget"]), r["env"], *fmt]))
        lines.append("")
    novel = summary["novel_distractors"]
    if novel:
        lines += ["## Action MSE on novel distractors (Fig. 9a): IDM vs LAOM+supervision", ""]
        lines += ["| suite | env | budget | IDM | LAOM+supervision |", "|---|---|---|---|---|"]
        cells = {_rkey(r): r for r in novel}
        keys = sorted({(r["suite"], r["env"], r["budget"]) for r in novel}, key=lambda k: (k[0], k[1] == AVERAGE, k))
        for suite, env, budget in keys:
            vals = [cells.get((suite, m, env, budget)) for m in ("idm", "laom_labels")]
            fmt = [_fmt_row(v, 4) if v else "–" for v in vals]
            lines.append(_md([suite or "main", env, str(budget), *fmt]))
        lines.append("")
    if summary["missing"] or problems or unfinished:
        lines += ["## Missing or left out", ""]
        lines += [f"- {_missing(m)}: no seeds {m['missing_seeds']}" for m in summary["missing"]]
        lines += [f"- left out: {p}" for p in problems]
        lines += [f"- unfinished (no results.json): {u}" for u in unfinished]
        lines.append("")
    return "\n".join(lines)


def _md(cells: list[str]) -> str:
    """A row of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def _missing(m: dict) -> str:
    return f"{m['suite']}/" * bool(m["suite"]) + f"{m['method']} {m['env']} budget {m['budget']}"


def _rkey(r: dict) -> tuple:
    return (r["suite"], r["method"], r["env"], r["budget"])


def _line_with_band(ax, rows: list[dict], method: str) -> np.ndarray:
    """Mean vs budget of one method with a +-std band (rows with a finite mean, in budget order); returns the x."""
    pts = sorted((r for r in rows if math.isfinite(r["mean"])), key=lambda r: r["budget"])
    x = np.array([r["budget"] for r in pts], dtype=float)
    if not pts:
        return x
    y = np.array([r["mean"] for r in pts])
    s = np.nan_to_num(np.array([r["std"] for r in pts]))
    ax.plot(x, y, marker="o", ms=3, color=COLORS[method], label=LABELS[method])
    ax.fill_between(x, y - s, y + s, color=COLORS[method], alpha=0.15, lw=0)
    ax.errorbar(x, y, yerr=s, fmt="none", ecolor=COLORS[method], capsize=3, lw=1)  # visible at a single budget too
    return x


def _panels(rows: list[dict], width: float, height: float = 3.3) -> tuple:
    """A figure with one titled panel per environment of rows and the average last: (figure, [(axis, env), ...])."""
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in rows if r["env"] != AVERAGE}) + [AVERAGE]
    fig, axes = plt.subplots(1, len(envs), figsize=(width * len(envs), height), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        ax.set_title("average over environments" if env == AVERAGE else env, fontsize=10)
    return fig, list(zip(axes[0], envs, strict=True))


def _budget_axis(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labeled trajectories")
    ax.grid(alpha=0.3)


def _save(fig, path: Path, dpi: int = 120, **layout) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout(**layout)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_scores(rows: list[dict], path: Path) -> None:
    """Fig. 1 / 8: normalised score vs budget (log2 axis), one panel per environment plus the average."""
    budgets = sorted({r["budget"] for r in rows if r["budget"] != FULL})
    fig, panels = _panels(rows, 3.6)
    for ax, env in panels:
        for method in METHODS:
            pts = [r for r in rows if r["env"] == env and r["method"] == method]
            if method == "bc_full":
                for r in pts:
                    ax.axhline(r["mean"], color=COLORS[method], ls="--", lw=1, label=LABELS[method])
                continue
            _line_with_band(ax, pts, method)
        _budget_axis(ax)
        if budgets:
            ax.set_xticks(budgets, [str(b) for b in budgets])
    panels[0][0].set_ylabel("normalised score")
    legend = {}  # one entry per label: the average's panel first, then the others'
    for ax, _ in [panels[-1], *panels]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    _save(fig, path, rect=(0, 0.08, 1, 1))


def plot_bars(rows: list[dict], path: Path, ylabel: str, title: str, baselines: dict | None = None) -> None:
    """Fig. 5 / 6: one bar per (method, budget) with std over seeds, one panel per environment plus the average;
    baselines: rows by _rkey, drawn as a black dash across their bar."""
    bars = sorted({(r["method"], r["budget"]) for r in rows}, key=lambda k: (METHODS.index(k[0]), _budget_key(k[1])))
    fig, panels = _panels(rows, max(3.0, 0.5 * len(bars) + 1.5), 3.6)
    for ax, env in panels:
        cells = {(r["method"], r["budget"]): r for r in rows if r["env"] == env}
        for i, key in enumerate(bars):
            r = cells.get(key)
            if r is None or not math.isfinite(r["mean"]):
                continue
            err = r["std"] if math.isfinite(r["std"]) else 0.0
            ax.bar(i, r["mean"], yerr=err, color=COLORS[key[0]], capsize=3)
            b = (baselines or {}).get(_rkey(r))
            if b is not None and math.isfinite(b["mean"]):
                ax.hlines(b["mean"], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2)
        names = [LABELS[m] + ("" if b == "-" else f"\n{b} traj.") for m, b in bars]
        ax.set_xticks(range(len(bars)), names, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    panels[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_novel(rows: list[dict], path: Path) -> None:
    """Fig. 9a: action MSE on novel distractors vs budget, IDM and LAOM+supervision."""
    fig, panels = _panels(rows, 3.6)
    for ax, env in panels:
        for method in ("idm", "laom_labels"):
            x = _line_with_band(ax, [r for r in rows if r["env"] == env and r["method"] == method], method)
            if len(x):
                ax.set_xticks(x, [str(int(b)) for b in x])
        _budget_axis(ax)
    panels[0][0].set_ylabel("action MSE, novel distractors")
    panels[0][0].legend(fontsize=8)
    _save(fig, path)


def write_report(
    runs_dir: str | Path, out: str | Path, setting: str = "distractors", normalize_by: str = "paper"
) -> dict:
    """Reads every run under runs_dir and writes the tables, CSVs, summary.json and figures to out."""
    import matplotlib

    matplotlib.use("Agg")
    if setting not in ("distractors", "vanilla"):
        raise ConfigError(f"--setting={setting!r}; expected 'distractors' or 'vanilla'")
    if normalize_by not in ("paper", "bc_full"):
        raise ConfigError(f"--normalize_by={normalize_by!r}; expected 'paper' or 'bc_full'")
    runs, problems, unfinished = collect_runs(runs_dir, setting)
    if not runs:
        left_out = f" (left out: {'; '.join(problems)})" if problems else ""
        raise MissingFileError(f"no usable results.json under {runs_dir}{left_out}")
    if normalize_by == "bc_full":
        problems += normalize_by_bc_full(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    summary.update(
        normalize_by=normalize_by,
        runs_dir=str(runs_dir),
        num_runs=len(runs),
        left_out=problems,
        unfinished=unfinished,
        runs=[
            {"path": str(r.path), **{k: getattr(r, k) for k in ("suite", "method", "env", "budget", "seed")}}
            for r in runs
        ],
    )
    cols = ["suite", "method", "env", "budget", "mean", "std", "iqm", "ci_low", "ci_high", "n", "seeds"]
    _write_csv(out / "scores.csv", summary["scores"], cols + ["return_mean", "return_std"])
    probe_rows = [{**r, "metric": column} for column, rows in summary["probes"].items() for r in rows]
    _write_csv(out / "probes.csv", probe_rows, cols[:4] + ["metric"] + cols[4:])
    _write_csv(out / "novel_distractors.csv", summary["novel_distractors"], cols[:8])
    (out / "results.md").write_text(markdown(summary, str(runs_dir), len(runs), problems, unfinished, normalize_by))
    (out / "summary.json").write_text(json.dumps(nan_to_none(summary), indent=2, default=str))
    figures, probes = [], summary["probes"]
    bars = {  # figure -> (probe column, its baseline, y label, title)
        "probe_mse": ("action_probe_mse", "action_variance", "linear-probe MSE",
                      "online linear probe, latent action -> true action (dash: predicting the mean action)"),
        "ridge_probe_mse": ("ridge_probe_mse", "ridge_probe_baseline_mse", "ridge-probe MSE",
                            "closed-form ridge probe on held-out trajectories (dash: predicting the mean action)"),
    }  # fmt: skip
    plots = [("scores", [r for r in summary["scores"] if math.isfinite(r["mean"])], plot_scores)]
    for name, (column, base, ylabel, title) in bars.items():
        baselines = {_rkey(r): r for r in probes[base]}
        plot = functools.partial(plot_bars, ylabel=ylabel, title=title, baselines=baselines)
        plots.append((name, probes[column], plot))
    plots.append(("novel_distractors", summary["novel_distractors"], plot_novel))
    for suite in sorted({r.suite for r in runs}):
        for name, rows, plot in plots:
            rows = [r for r in rows if r["suite"] == suite]
            if rows:
                plot(rows, out / f"{name}{_suffix(suite)}.png")
                figures.append(f"{name}{_suffix(suite)}.png")
    print(
        f"{len(runs)} runs from {runs_dir} -> {out}: results.md, scores.csv, probes.csv, novel_distractors.csv, "
        f"summary.json, {', '.join(figures)}"
    )
    for m in summary["missing"]:
        print(f"missing: {_missing(m)}: seeds {m['missing_seeds']}")
    for p in problems:
        print(f"left out: {p}")
    for u in unfinished:
        print(f"unfinished (no results.json): {u}")
    return summary


if __name__ == "__main__":
    cfg = cli(pyrallis.parse, config_class=Config)
    cli(write_report, cfg.runs_dir, cfg.out, cfg.setting, cfg.normalize_by)
