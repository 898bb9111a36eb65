"""The closed-form probes of a LAM's latents, written by every LAM script at the end of stage 1 (and along its
training, ProbeCurve). The paper's measure (Sections 4-5) is an online linear probe trained next to the LAM; with few
updates it may not have converged, so this one is solved exactly: ridge regression on the frozen latents.

    metrics = ridge_probe(lam.label, data, frame_stack, batch_size, device, max_samples, eval_data=eval_data)

Latents of (o_t, o_{t+1}), without augmentation, -> a_t. The trajectories are split whole: the last tenth (at least
one) is the test set, the tenth before it the validation set (it picks the penalty of L2_GRID), the rest the fit set;
up to max_samples transitions of each, drawn with their own generators. W = (Cov(z) + l2 * mean(diag Cov(z)) I)^-1
Cov(z, a), in float64 from sums (`Moments`), which ranks of a distributed run add. Each MSE comes with its baseline,
the MSE of the fitted mean action.

Leakage (what else the latents encode), where the data records the distractors (docs/DATA.md): the same fit to each
of LEAKAGE_TARGETS (changes over the transition), reported as out-of-sample R² per column averaged over the columns
that vary; the share of the latent's variance that the agent's targets (or the distractors') explain
(`latent_from_<source>_r2`, variance-weighted); and held-out ridge CCA (`cca_<source>`, the mean squared test
correlation of the k canonical pairs fitted on standardised latents, CCA_L2_GRID chosen on validation), which a
per-dimension rescaling of the latent cannot change. tests/test_probes.py pins their properties."""

import json
import math
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from src import dist
from src.data import DatasetError, TrajectoryData, normalize_obs
from src.optim import autocast

Labeler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (o_t, o_{t+1}) in [-1, 1] -> latent [B, Z]
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative ridge penalties tried; the validation trajectories choose
# Latents wider than this also get the probe on their top PCA_DIMS principal components (`ridge_probe_pca128_mse`):
# latents of different widths (LAOM 1024 or 8192, LAPO 128) then compare at one dimension and one sample count.
PCA_DIMS = 128
SHARE_L2_GRID = (1e-4, 1e-2, 1.0, 100.0)  # penalties of the reverse fit (targets -> latent), on standardised targets
# Held-out canonical correlations (`CanonicalFit`): penalties tried on the latent's standardised covariance (the
# validation trajectories choose), and the fixed one on the targets' (collinear target columns stay invertible).
CCA_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
CCA_TARGET_L2 = 1e-3
DISTRACTORS_GROUP = "distractors"  # per trajectory group: one float dataset [T, k] per distraction (docs/DATA.md)
# Leakage targets of the transition (o_t, o_{t+1}): the action, then changes over the transition of the agent's state
# and of each distractor's state. background: the frame advance only (its other columns, the video and the playback
# direction, are constant over a transition except where the video bounces).
LEAKAGE_TARGETS = ("action", "agent_state", "background", "camera", "color")
_DISTRACTOR_COLUMNS = {"background": [1], "camera": None, "color": None}  # None: every column


def split_trajectories(data: TrajectoryData) -> tuple[list[int], list[int], list[int]]:
    """(fit, validation, held-out test) trajectory numbers: the last tenth (at least one) is the test set, the tenth
    before it (at least one) chooses the ridge penalty, the rest fits. Needs three trajectories."""
    n = data.num_trajectories
    if n < 3:
        raise DatasetError(
            f"{data.path}: the ridge probe holds out whole trajectories (fit / validation / test) and needs at "
            f"least 3; it has {n}"
        )
    k = max(1, n // 10)
    return list(range(n - 2 * k)), list(range(n - 2 * k, n - k)), list(range(n - k, n))


def pair_indices(data: TrajectoryData, trajectories: list[int], max_samples: int, seed: int) -> torch.Tensor:
    """Indices t of (o_t, o_{t+1}) within the given trajectories: all, or a fixed random subset of max_samples."""
    starts, lens = data.traj_starts.tolist(), data.traj_lens.tolist()
    idx = torch.cat([torch.arange(starts[i], starts[i] + lens[i] - 1) for i in trajectories])
    if len(idx) > max_samples:
        gen = torch.Generator().manual_seed(seed)
        idx = idx[torch.randperm(len(idx), generator=gen)[:max_samples]].sort().values
    return idx.to(data.index_device)


class Moments:
    """Sums of z, a and their products over batches (float64): all a linear probe's fit and its squared error
    need. Only sums, so batches (and the ranks of a distributed run) can simply add theirs."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, z: torch.Tensor, a: torch.Tensor) -> None:
        """One batch: latents z [B, Z] and targets a [B, A] (float64)."""
        s = {"n": torch.tensor(float(len(z)), dtype=torch.float64, device=z.device), "z": z.sum(0), "a": a.sum(0)}
        s |= {"zz": z.T @ z, "za": z.T @ a, "aa": (a * a).sum(0), "aa_full": a.T @ a}
        self.sums = s if not self.sums else {k: self.sums[k] + v for k, v in s.items()}

    @torch.no_grad()
    def collect(
        self, label: "Labeler", data: TrajectoryData, idx, frame_stack, batch_size, device, extra=None
    ) -> "Moments":
        """The sums over the transitions idx; the targets are the actions, followed by the columns of extra
        (host float32 [N, K], row t the target of transition t) when given."""
        for chunk in idx.split(batch_size):
            b = data.batch(chunk, frame_stack, next_obs=True)
            with autocast(device):
                z = label(normalize_obs(b["obs"]), normalize_obs(b["next_obs"]))
            a = b["actions"].double()
            if extra is not None:
                a = torch.cat([a, extra[chunk.cpu()].to(a.device, torch.float64)], 1)
            self.add(z.double(), a)
        self.sums = dist.sum_tensors(self.sums)  # a distributed run: the statistics of every rank's shard
        return self

    def mean_action(self) -> torch.Tensor:
        return self.sums["a"] / self.sums["n"]

    def sq_errors(self, w: torch.Tensor, b: torch.Tensor, cols=slice(None)) -> torch.Tensor:
        """Sum over samples of (a - z W - b)^2 for each target column of `cols` [C], from the sums alone."""
        s = self.sums
        w, b = w[:, cols], b[cols]
        sq = s["aa"][cols] - 2 * (w * s["za"][:, cols]).sum(0) - 2 * b * s["a"][cols] + (w * (s["zz"] @ w)).sum(0)
        return sq + 2 * b * (w.T @ s["z"]) + s["n"] * b * b

    def mse(self, w: torch.Tensor, b: torch.Tensor, cols=slice(None)) -> float:
        """Mean over samples and the target columns `cols` of (a - z W - b)^2."""
        sq = self.sq_errors(w, b, cols)
        return (sq.sum().clamp_min(0) / (self.sums["n"] * len(sq))).item()

    def r2(self, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, cols) -> float:
        """Out-of-sample R² of the columns `cols`: 1 - SSE / SSE of predicting `mean` (the fitted mean), per column,
        averaged over the columns whose baseline is not ~0 here (NaN when none is)."""
        sse = self.sq_errors(w, b, cols).clamp_min(0)
        base = self.sq_errors(torch.zeros_like(w), mean, cols).clamp_min(0)
        varies = base > 1e-9 * self.sums["n"]
        if not bool(varies.any()):
            return math.nan
        return (1 - sse[varies] / base[varies]).mean().item()

    def explained(self, fit: "Moments", cols: list[int], l2: float) -> float:
        """The share of the latents' variance on these transitions that a linear map of the target columns `cols`,
        fitted on `fit` (ridge on the standardised targets, relative penalty l2), explains: 1 - sum ||z - a W - b||^2
        / sum ||z - mean_fit(z)||^2, summed over latent dimensions (so weighted by their variance)."""
        f, s = fit.sums, self.sums
        c = torch.as_tensor(cols, device=f["a"].device)
        ma, mz = f["a"][c] / f["n"], f["z"] / f["n"]
        caa = f["aa_full"][c][:, c] / f["n"] - torch.outer(ma, ma)
        caz = f["za"][:, c].T / f["n"] - torch.outer(ma, mz)  # [C, Z]
        sd = caa.diagonal().clamp_min(1e-12).sqrt()
        corr = caa / torch.outer(sd, sd)
        eye = torch.eye(len(cols), dtype=corr.dtype, device=corr.device)
        w = torch.linalg.solve(corr + l2 * eye, caz / sd[:, None]) / sd[:, None]  # [C, Z]
        b = mz - ma @ w
        # sums of the transitions measured: ||z||^2, z.(a W + b) and ||a W + b||^2, from their moments
        zz, za, aa, sa, sz, n = s["zz"].trace(), s["za"][:, c], s["aa_full"][c][:, c], s["a"][c], s["z"], s["n"]
        cross = (w * za.T).sum() + b @ sz
        pred = (w * (aa @ w)).sum() + 2 * b @ (w.T @ sa) + n * (b @ b)
        sse = (zz - 2 * cross + pred).clamp_min(0)
        sst = (zz - 2 * mz @ sz + n * (mz @ mz)).clamp_min(0)
        return (1 - sse / sst).item() if sst > 1e-12 * n else math.nan

    def ridge_path(self, l2s: list[float], dims: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W [Z, A], b [A]) for each relative penalty: W = (Cov(z) + l2 * mean(diag Cov(z)) I)^-1 Cov(z, a),
        b = mean(a) - mean(z) W. One eigendecomposition serves every penalty. dims: only the top `dims` principal
        components of the fit set's latents (ridge on the latents projected to that many dimensions)."""
        s = self.sums
        mz, ma = s["z"] / s["n"], s["a"] / s["n"]
        czz = s["zz"] / s["n"] - torch.outer(mz, mz)
        cza = s["za"] / s["n"] - torch.outer(mz, ma)
        evals, evecs = torch.linalg.eigh(czz)  # ascending
        if dims is not None:
            evals, evecs = evals[-dims:], evecs[:, -dims:]
        proj = evecs.T @ cza
        scale = czz.diagonal().mean().clamp_min(1e-12)
        out = []
        for l2 in l2s:
            w = evecs @ (proj / (evals.clamp_min(0) + l2 * scale)[:, None])
            out.append((w, ma - mz @ w))
        return out


def _covariances(m: Moments, cols: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cov(z) [Z, Z], Cov(z, a[cols]) [Z, C] and Cov(a[cols]) [C, C] of the transitions summed in m."""
    s, c = m.sums, torch.as_tensor(cols, device=m.sums["z"].device)
    n, mz, ma = s["n"], s["z"] / s["n"], s["a"][c] / s["n"]
    czz = s["zz"] / n - torch.outer(mz, mz)
    cza = s["za"][:, c] / n - torch.outer(mz, ma)
    caa = s["aa_full"][c][:, c] / n - torch.outer(ma, ma)
    return czz, cza, caa


def _inv_sqrt(evals: torch.Tensor, evecs: torch.Tensor, l2: float) -> torch.Tensor:
    return evecs @ ((evals.clamp_min(0) + l2).rsqrt()[:, None] * evecs.T)


class CanonicalFit:
    """Ridge CCA between the latent z and the target columns `cols`, fitted on `fit` (module docstring): every
    latent dimension and target column standardised by its fit-set spread, the latent's correlation matrix + l2 * I
    (one eigendecomposition serves every l2 of the grid), the targets' + CCA_TARGET_L2 * I.

        cf = CanonicalFit(fit, cols)
        rs = cf.held_out(test, l2)   # the test correlations of the k canonical pairs fitted at l2 [k]
    """

    def __init__(self, fit: Moments, cols: list[int]):
        varies = _covariances(fit, cols)[2].diagonal() > 1e-12  # a target constant on the fit set has no direction
        self.cols = [c for c, keep in zip(cols, varies.tolist(), strict=True) if keep]
        czz, cza, caa = _covariances(fit, self.cols)
        self.dz = czz.diagonal().clamp_min(1e-12).rsqrt()  # [Z]: 1 / each dimension's spread
        self.da = caa.diagonal().clamp_min(1e-12).rsqrt()  # [C]
        self.rzz = self.dz[:, None] * czz * self.dz[None, :]  # correlation matrices: scale-free
        self.rza = self.dz[:, None] * cza * self.da[None, :]
        self.ez, self.vz = torch.linalg.eigh(self.rzz)
        ea, va = torch.linalg.eigh(self.da[:, None] * caa * self.da[None, :])
        self.ka = _inv_sqrt(ea, va, CCA_TARGET_L2)  # [C, C]
        self.k = min(len(cols), self.rzz.shape[0])

    def directions(self, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The canonical directions in the original units: u [Z, k] of the latent, v [C, k] of the targets."""

        def kz(x: torch.Tensor) -> torch.Tensor:  # (R_zz + l2 I)^-1/2 x, through the eigenvectors: [Z, Z] x [Z, C]
            return self.vz @ ((self.ez.clamp_min(0) + l2).rsqrt()[:, None] * (self.vz.T @ x))

        u, _, vh = torch.linalg.svd(kz(self.rza) @ self.ka, full_matrices=False)
        return self.dz[:, None] * kz(u[:, : self.k]), self.da[:, None] * (self.ka @ vh.T[:, : self.k])

    def held_out(self, m: Moments, l2: float) -> torch.Tensor:
        """The correlations [k] of the canonical pairs fitted at l2 on the transitions summed in m."""
        u, v = self.directions(l2)
        czz, cza, caa = _covariances(m, self.cols)
        cov = (u * (cza @ v)).sum(0)
        var = (u * (czz @ u)).sum(0).clamp_min(0) * (v * (caa @ v)).sum(0).clamp_min(0)
        # a variate that does not vary here (about 1 on the fit set) correlates with nothing
        return torch.where(var > 1e-18, cov / var.clamp_min(1e-300).sqrt(), 0.0).clamp(-1, 1)


def cca_score(rs: torch.Tensor) -> float:
    """Mean squared held-out canonical correlation (a negative one counts 0: nothing the fit found carried over)."""
    return float((rs.clamp_min(0) ** 2).mean()) if len(rs) else math.nan


def held_out_cca(fit: Moments, val: Moments, test: Moments, cols: list[int], others: tuple = ()) -> dict:
    """Ridge CCA of the latent with the target columns `cols`: the penalty with the best validation score, then on
    the test transitions the score (`cca`), the first pair's correlation (`top1`) and the chosen penalty; on each
    Moments of `others` the score too (`others`: [score, ...])."""
    cf = CanonicalFit(fit, cols)
    if not cf.cols:
        return {"cca": math.nan, "top1": math.nan, "val": math.nan, "l2": math.nan, "others": [math.nan] * len(others)}
    val_scores = [cca_score(cf.held_out(val, l2)) for l2 in CCA_L2_GRID]
    l2 = CCA_L2_GRID[_best(val_scores)]
    rs = cf.held_out(test, l2)
    return {"cca": cca_score(rs), "top1": float(rs[0]), "val": max(val_scores), "l2": l2,
            "others": [cca_score(cf.held_out(o, l2)) for o in others]}  # fmt: skip


@torch.no_grad()
def ridge_probe(
    label: Labeler,
    data: TrajectoryData,
    frame_stack: int,
    batch_size: int,
    device,
    max_samples: int,
    l2s: tuple[float, ...] = L2_GRID,
    eval_data: TrajectoryData | None = None,
    prefix: str = "lapo",
    leakage: bool = True,
) -> dict[str, float]:
    """The probe's metrics (none when max_samples is 0; none, with a printed note, when the data holds fewer than 3
    trajectories, on any rank): `<prefix>/ridge_probe_mse` and `<prefix>/ridge_probe_baseline_mse` on the held-out
    test trajectories; `<prefix>/ridge_probe_val_mse` and its baseline on the validation trajectories (what tuning
    selects on); the same two on `eval_data` (`eval_ridge_probe_...`) when given; the penalty chosen, the numbers of
    transitions, and `<prefix>/action_variance` (mean over action dimensions of the data's action variance: the
    online probe's baseline). leakage: also the leakage probes' R² (`<prefix>/leakage/...`, module docstring)."""
    if max_samples <= 0:  # switched off (--lapo.ridge_probe_samples=0)
        return {}
    short = dist.total(int(data.num_trajectories < 3))  # ranks whose shard is too small
    if short > 0:  # a diagnostic: skipped, never the end of a run
        where = f" on {short} rank(s)" if dist.active() else ""
        print(f"ridge probe skipped: {data.path} holds fewer than 3 trajectories{where} (fit / validation / test)")
        return {}
    fit_traj, val_traj, test_traj = split_trajectories(data)  # of this rank's shard under torchrun
    max_samples = max(1, max_samples // dist.world_size())  # per rank: the same total on any number of ranks
    args = (frame_stack, batch_size, device)
    extra, columns = leakage_targets(data) if leakage else (None, {})
    act = slice(0, data.act_dim)  # the action columns of the targets
    fit_idx = pair_indices(data, fit_traj, max_samples, seed=0)
    fit = Moments().collect(label, data, fit_idx, *args, extra=extra)
    val_idx = pair_indices(data, val_traj, max_samples // 4 or 1, seed=1)
    val = Moments().collect(label, data, val_idx, *args, extra=extra)
    test_idx = pair_indices(data, test_traj, max_samples, seed=2)
    test = Moments().collect(label, data, test_idx, *args, extra=extra)
    path = fit.ridge_path(list(l2s))
    best = min(range(len(l2s)), key=lambda i: val.mse(*path[i], act))
    w, b = path[best]
    mean_a = fit.mean_action()
    no_latent = torch.zeros_like(w)  # the baseline: always the fitted mean action
    out = {
        f"{prefix}/ridge_probe_mse": test.mse(w, b, act),
        f"{prefix}/ridge_probe_baseline_mse": test.mse(no_latent, mean_a, act),
        # the validation trajectories' MSE at the chosen penalty: what hyperparameter tuning may select on
        # (studies/small/tune.sh); the test trajectories above are for reporting only
        f"{prefix}/ridge_probe_val_mse": val.mse(w, b, act),
        f"{prefix}/ridge_probe_val_baseline_mse": val.mse(no_latent, mean_a, act),
    }
    if fit.sums["zz"].shape[0] > PCA_DIMS:  # the same probe on the top PCA_DIMS principal components of the latents
        pca = fit.ridge_path(list(l2s), dims=PCA_DIMS)
        w_p, b_p = pca[min(range(len(l2s)), key=lambda i: val.mse(*pca[i], act))]
        out[f"{prefix}/ridge_probe_pca{PCA_DIMS}_mse"] = test.mse(w_p, b_p, act)
    out[f"{prefix}/ridge_probe_l2"] = l2s[best]
    out[f"{prefix}/ridge_probe_fit_transitions"] = dist.total(len(fit_idx))  # over every rank
    out[f"{prefix}/ridge_probe_test_transitions"] = dist.total(len(test_idx))
    # The online probe's baseline: the variance of the actions it is trained on (all of the LAM's data).
    a = data.actions.double()
    m = dist.sum_tensors(
        {"n": torch.tensor(float(len(a)), dtype=a.dtype, device=a.device), "a": a.sum(0), "aa": (a * a).sum(0)}
    )
    mean = m["a"] / m["n"]
    out[f"{prefix}/action_variance"] = (m["aa"] / m["n"] - mean * mean).mean().item()
    ev = None
    if eval_data is not None:
        eval_idx = pair_indices(eval_data, list(range(eval_data.num_trajectories)), max_samples, seed=3)
        eval_extra, eval_columns = leakage_targets(eval_data, quiet=True) if leakage else (None, {})
        if eval_columns != columns:  # the evaluation set's leakage only where it records what the data records
            eval_extra = None
        ev = Moments().collect(label, eval_data, eval_idx, *args, extra=eval_extra)
        out |= {
            f"{prefix}/eval_ridge_probe_mse": ev.mse(w, b, act),
            f"{prefix}/eval_ridge_probe_baseline_mse": ev.mse(no_latent, mean_a, act),
        }
        ev = ev if eval_extra is not None else None
    if extra is not None:
        out |= _leakage_r2(fit, val, test, ev, path, columns, data.act_dim, prefix)
    return out


def _leakage_r2(fit, val, test, ev, path, columns: dict, act_dim: int, prefix: str) -> dict[str, float]:
    """R² of every leakage target on the validation, test and evaluation transitions, each at the penalty that
    gives it the best validation R²."""
    mean = fit.sums["a"] / fit.sums["n"]
    out = {}
    spans = {"action": list(range(act_dim))} | {k: [act_dim + c for c in v] for k, v in columns.items()}
    for name, cols in spans.items():
        val_r2 = [val.r2(w, b, mean, cols) for w, b in path]
        best = _best(val_r2)
        w, b = path[best]
        out[f"{prefix}/leakage/{name}_r2"] = test.r2(w, b, mean, cols)
        out[f"{prefix}/leakage/{name}_val_r2"] = val_r2[best]
        if ev is not None:
            out[f"{prefix}/leakage/{name}_eval_r2"] = ev.r2(w, b, mean, cols)
    # The other direction: how much of the latent the agent explains (and the distractors' changes), chosen per
    # source by the validation share, measured on the test (and evaluation) transitions.
    sources = {"agent": spans["action"] + spans.get("agent_state", [])}
    distractor_cols = [c for k in LEAKAGE_TARGETS[2:] for c in spans.get(k, [])]
    if distractor_cols:
        sources["distractors"] = distractor_cols
    for name, cols in sources.items():
        shares = [val.explained(fit, cols, l2) for l2 in SHARE_L2_GRID]
        best = _best(shares)
        l2 = SHARE_L2_GRID[best]
        out[f"{prefix}/leakage/latent_from_{name}_r2"] = test.explained(fit, cols, l2)
        out[f"{prefix}/leakage/latent_from_{name}_val_r2"] = shares[best]
        if ev is not None:
            out[f"{prefix}/leakage/latent_from_{name}_eval_r2"] = ev.explained(fit, cols, l2)
        # the same source's held-out canonical correlations with the latent: what rescaling cannot change
        cca = held_out_cca(fit, val, test, cols, others=(ev,) if ev is not None else ())
        out[f"{prefix}/leakage/cca_{name}"] = cca["cca"]
        out[f"{prefix}/leakage/cca_{name}_top1"] = cca["top1"]
        out[f"{prefix}/leakage/cca_{name}_val"] = cca["val"]
        if ev is not None:
            out[f"{prefix}/leakage/cca_{name}_eval"] = cca["others"][0]
    return out


def _best(val_r2: list[float]) -> int:
    """The penalty with the best validation R² (the first when none is a number)."""
    finite = [i for i, r in enumerate(val_r2) if not math.isnan(r)]
    return max(finite, key=lambda i: val_r2[i]) if finite else 0


_LEAKAGE_CACHE: dict[tuple, tuple] = {}  # the targets of the last datasets probed (a stage's data and its evaluation
_LEAKAGE_CACHE_SIZE = 2  # set): read once per stage, not at every probe point; older ones are dropped (host memory)


def leakage_targets(data: TrajectoryData, quiet: bool = False) -> tuple[torch.Tensor | None, dict[str, list[int]]]:
    """The leakage targets other than the action for every frame t of `data` (the transition (o_t, o_{t+1}); rows
    of a trajectory's last frame are never used): host float32 [N, K] and {target: its columns}. The agent state's
    change always (when the file stores `states`); each distractor's when every trajectory records it (else the
    target is left out and, unless quiet, a note says so once). (None, {}) when no target is available."""
    key = (str(Path(data.path).resolve()), tuple(data.keys))
    if key in _LEAKAGE_CACHE:
        return _LEAKAGE_CACHE[key]
    parts, columns, width = [], {}, 0
    with h5py.File(data.path, "r") as f:
        groups = [f[k] for k in data.keys]
        sources = {"agent_state": [g["states"] if "states" in g else None for g in groups]}
        for name in LEAKAGE_TARGETS[2:]:
            sources[name] = [g[DISTRACTORS_GROUP][name] if name in g.get(DISTRACTORS_GROUP, {}) else None
                             for g in groups]  # fmt: skip
        missing = [n for n in LEAKAGE_TARGETS[2:] if any(d is None for d in sources[n])]
        if missing and not quiet:
            print(f"leakage probes: {data.path} does not record {', '.join(missing)} (no '{DISTRACTORS_GROUP}/' "
                  "group in its trajectories): not recorded, not probed")  # fmt: skip
        for name, datasets in sources.items():
            if any(d is None for d in datasets):
                continue
            keep = _DISTRACTOR_COLUMNS.get(name)
            values = np.concatenate([np.asarray(d, dtype=np.float32) for d in datasets])  # [N, k]
            values = values if keep is None else values[:, keep]
            delta = np.zeros_like(values)
            delta[:-1] = values[1:] - values[:-1]  # x_{t+1} - x_t (across a trajectory's end: never used)
            parts.append(delta)
            columns[name] = list(range(width, width + delta.shape[1]))
            width += delta.shape[1]
    out = (torch.from_numpy(np.concatenate(parts, 1)) if parts else None, columns)
    while len(_LEAKAGE_CACHE) >= _LEAKAGE_CACHE_SIZE:
        _LEAKAGE_CACHE.pop(next(iter(_LEAKAGE_CACHE)))  # the oldest
    _LEAKAGE_CACHE[key] = out
    return out


class ProbeCurve:
    """The ridge probe every `every` updates of a LAM's training, from update 0 (the random network), and the whole
    update-0 probe (`init_metrics`: `<prefix>/init/<metric>`). Each point is [update, validation MSE, test MSE,
    {leakage target: test R²} where measured]. Kept in `path` beside the stage checkpoint, so a resumed stage keeps
    them; the probe runs in eval mode and leaves the global random state alone (training is unchanged)."""

    def __init__(self, path, every: int, init: bool = True):
        self.path, self.every, self.init = Path(path), every, init
        stored = json.loads(self.path.read_text()) if (every > 0 or init) and self.path.exists() else []
        if isinstance(stored, list):  # the earlier format: the points only
            stored = {"points": stored}
        self._points = stored.get("points", [])
        self._init: dict = stored.get("init", {})

    def before_training(self, stage, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        """The probe of update 0, the randomly initialised network: what the latents hold before any learning (a
        stage that resumes or was finished earlier has it already)."""
        if stage.done or stage.start != 0 or not (self.every > 0 or self.init):
            return
        m = self._probe(module, probe)
        if not m:  # the probe was skipped (too few trajectories)
            return
        if self.init:
            self._init = m
        if self.every > 0 and not any(p[0] == 0 for p in self._points):
            self._points.append(_point(0, m))
        self._write()

    def maybe_add(self, step: int, total: int, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        """After update `step` (0-based) of `total`: a point every `every` updates, except after the last one."""
        n = step + 1
        if self.every <= 0 or n % self.every or n >= total or any(p[0] == n for p in self._points):
            return
        m = self._probe(module, probe)
        if not m:  # the probe was skipped (too few trajectories)
            return
        self._points.append(_point(n, m))
        self._write()

    def points(self, final: dict, total: int) -> list:
        if self.every <= 0 or not final:
            return []
        return [*self._points, _point(total, final)]

    def init_metrics(self) -> dict:
        """The update-0 probe as `<prefix>/init/<metric>` (empty when it was not measured)."""
        out = {}
        for k, v in self._init.items():
            prefix, _, name = k.partition("/")
            out[f"{prefix}/init/{name}"] = v
        return out

    @staticmethod
    def _probe(module: torch.nn.Module, probe: Callable[[], dict]) -> dict:
        module.eval()
        m = probe()
        module.train()
        return m

    def _write(self) -> None:
        if dist.is_main():
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"points": self._points, "init": self._init}))
            tmp.replace(self.path)


def _point(update: int, metrics: dict) -> list:
    """[update, validation MSE, test MSE] and, where measured, {leakage target: test R²}."""
    point = [update, _key(metrics, "ridge_probe_val_mse"), _key(metrics, "ridge_probe_mse")]
    leak = {k.rpartition("/")[2].removesuffix("_r2"): v for k, v in metrics.items()
            if "/leakage/" in k and k.endswith("_r2") and not k.endswith(("_val_r2", "_eval_r2"))}  # fmt: skip
    return [*point, leak] if leak else point


def _key(metrics: dict, suffix: str) -> float:
    return next(v for k, v in metrics.items() if k.endswith("/" + suffix))
