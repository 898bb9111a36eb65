"""Closed-form float64 ridge probes of a LAM's latent of (o_t, o_{t+1}) to a_t and to the recorded distractors."""

import json
import math
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from src import dist
from src.data import DatasetError, TrajectoryData, normalize_obs
from src.files import replace_or_explain
from src.optim import autocast

Labeler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (o_t, o_{t+1}) in [-1, 1] -> latent [B, Z]
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative ridge penalties tried; the validation trajectories choose
PCA_DIMS = 128  # wider latents are also probed on their top principal components: widths compare at one dimension
SHARE_L2_GRID = (1e-4, 1e-2, 1.0, 100.0)  # penalties of the reverse fit (targets -> latent), on standardised targets
CCA_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # held_out_cca's penalties on the latent's correlation matrix
CCA_TARGET_L2 = 1e-3  # and its fixed one on the targets': collinear target columns stay invertible
DISTRACTORS_GROUP = "distractors"  # per trajectory group: one float dataset [T, k] per distraction (docs/DATA.md)
# the action, then the changes of the agent's and each distractor's state (background: the frame advance only)
LEAKAGE_TARGETS = ("action", "agent_state", "background", "camera", "color")
_DISTRACTOR_COLUMNS = {"background": [1]}  # the other targets: every column


def split_trajectories(data: TrajectoryData) -> tuple[list[int], list[int], list[int]]:
    """(fit, validation, test) trajectory numbers: the last tenth (>= 1) tests, the tenth before validates."""
    n = data.num_trajectories
    if n < 3:
        raise DatasetError(f"{data.path}: the ridge probe holds out whole trajectories, at least 3; it has {n}")
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
    """Sums of z, a and their products over batches and ranks (float64): all a linear fit and its error need."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, z: torch.Tensor, a: torch.Tensor) -> None:
        s = {"n": torch.tensor(float(len(z)), dtype=torch.float64, device=z.device), "z": z.sum(0), "a": a.sum(0)}
        s |= {"zz": z.T @ z, "za": z.T @ a, "aa": (a * a).sum(0), "aa_full": a.T @ a}
        self.sums = s if not self.sums else {k: self.sums[k] + v for k, v in s.items()}

    @torch.no_grad()
    def collect(self, label: Labeler, data: TrajectoryData, idx, frame_stack, batch_size, device, extra) -> "Moments":
        """The sums over transitions idx; targets: the actions, then the columns of extra (host [N, K])."""
        for chunk in idx.split(batch_size):
            b = data.batch(chunk, frame_stack, next_obs=True)
            with autocast(device):
                z = label(normalize_obs(b["obs"]), normalize_obs(b["next_obs"]))
            a = b["actions"].double()
            if extra is not None:
                a = torch.cat([a, extra[chunk.cpu()].to(a.device, torch.float64)], 1)
            self.add(z.double(), a)
        self.sums = dist.sum_tensors(self.sums)
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
        sq = self.sq_errors(w, b, cols)
        return (sq.sum().clamp_min(0) / (self.sums["n"] * len(sq))).item()

    def r2(self, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, cols) -> float:
        """Out-of-sample R² of columns `cols` against predicting `mean`, averaged over those that vary (else NaN)."""
        sse = self.sq_errors(w, b, cols).clamp_min(0)
        base = self.sq_errors(torch.zeros_like(w), mean, cols).clamp_min(0)
        varies = base > 1e-9 * self.sums["n"]
        return (1 - sse[varies] / base[varies]).mean().item() if bool(varies.any()) else math.nan

    def explained(self, fit: "Moments", cols: list[int], l2: float) -> float:
        """Share of the latents' variance here explained by a ridge from standardised targets `cols`, fit on `fit`."""
        mz, ma, _, cza, caa = _covariances(fit, cols)
        sd = caa.diagonal().clamp_min(1e-12).sqrt()
        eye = torch.eye(len(cols), dtype=caa.dtype, device=caa.device)
        w = torch.linalg.solve(caa / torch.outer(sd, sd) + l2 * eye, cza.T / sd[:, None]) / sd[:, None]  # [C, Z]
        b = mz - ma @ w
        s, n, zz = self.sums, self.sums["n"], self.sums["zz"].trace()
        cross = (w * s["za"][:, cols].T).sum() + b @ s["z"]
        pred = (w * (s["aa_full"][cols][:, cols] @ w)).sum() + 2 * b @ (w.T @ s["a"][cols]) + n * (b @ b)
        sse = (zz - 2 * cross + pred).clamp_min(0)
        sst = (zz - 2 * mz @ s["z"] + n * (mz @ mz)).clamp_min(0)
        return (1 - sse / sst).item() if sst > 1e-12 * n else math.nan

    def ridge_path(self, l2s: list[float], dims: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W [Z, A], b [A]) per l2: W = (Czz + l2 mean(diag Czz) I)^-1 Cza, b = mean(a) - mean(z) W; dims: top PCs."""
        mz, ma, czz, cza, _ = _covariances(self, slice(None))
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


def _covariances(m: Moments, cols) -> tuple[torch.Tensor, ...]:
    """Mean(z), mean(a[cols]), Cov(z) [Z, Z], Cov(z, a[cols]) [Z, C], Cov(a[cols]) [C, C] of the sums in m."""
    s = m.sums
    n, mz, ma = s["n"], s["z"] / s["n"], s["a"][cols] / s["n"]
    czz = s["zz"] / n - torch.outer(mz, mz)
    cza = s["za"][:, cols] / n - torch.outer(mz, ma)
    caa = s["aa_full"][cols][:, cols] / n - torch.outer(ma, ma)
    return mz, ma, czz, cza, caa


def held_out_cca(fit: Moments, val: Moments, test: Moments, cols: list[int], others: tuple = ()) -> dict:
    """Ridge CCA of the latent with `cols` (fit; penalty by val): on test mean squared (`cca`) and first (`top1`)."""
    _, _, czz, cza, caa = _covariances(fit, cols)
    keep = caa.diagonal() > 1e-12  # a target constant on the fit set has no direction
    cols = [c for c, k in zip(cols, keep.tolist(), strict=True) if k]
    if not cols:
        return {"cca": math.nan, "top1": math.nan, "val": math.nan, "l2": math.nan, "others": [math.nan] * len(others)}
    cza, caa = cza[:, keep], caa[keep][:, keep]
    dz, da = czz.diagonal().clamp_min(1e-12).rsqrt(), caa.diagonal().clamp_min(1e-12).rsqrt()  # 1 / the spreads
    rza = dz[:, None] * cza * da[None, :]  # correlation matrices: scale-free
    ez, vz = torch.linalg.eigh(dz[:, None] * czz * dz[None, :])  # one eigendecomposition serves every l2
    ea, va = torch.linalg.eigh(da[:, None] * caa * da[None, :])
    ka = va @ ((ea.clamp_min(0) + CCA_TARGET_L2).rsqrt()[:, None] * va.T)  # (R_aa + l2 I)^-1/2 [C, C]

    def score(m: Moments, l2: float) -> tuple[float, torch.Tensor]:
        kz = lambda x: vz @ ((ez.clamp_min(0) + l2).rsqrt()[:, None] * (vz.T @ x))  # noqa: E731
        a, _, bh = torch.linalg.svd(kz(rza) @ ka, full_matrices=False)
        u, v = dz[:, None] * kz(a), da[:, None] * (ka @ bh.T)  # the directions in the original units
        _, _, czz, cza, caa = _covariances(m, cols)
        cov = (u * (cza @ v)).sum(0)
        var = (u * (czz @ u)).sum(0).clamp_min(0) * (v * (caa @ v)).sum(0).clamp_min(0)
        rs = torch.where(var > 1e-18, cov / var.clamp_min(1e-300).sqrt(), 0.0).clamp(-1, 1)
        return float((rs.clamp_min(0) ** 2).mean()) if len(rs) else math.nan, rs

    val_scores = [score(val, l2)[0] for l2 in CCA_L2_GRID]
    l2 = CCA_L2_GRID[_best(val_scores)]
    cca, rs = score(test, l2)
    return {"cca": cca, "top1": float(rs[0]), "val": max(val_scores), "l2": l2,
            "others": [score(o, l2)[0] for o in others]}  # fmt: skip


@torch.no_grad()
def ridge_probe(
    label: Labeler, data: TrajectoryData, frame_stack, batch_size, device, max_samples, eval_data=None, leakage=True
) -> dict[str, float]:
    """lapo/ridge_probe_mse, _val_mse, eval_... with mean-action baselines and leakage; {} if no samples, < 3 trajs."""
    if max_samples <= 0:
        return {}
    short = dist.total(int(data.num_trajectories < 3))  # ranks whose shard is too small: skipped, not an error
    if short > 0:
        where = f" on {short} rank(s)" if dist.active() else ""
        print(f"ridge probe skipped: {data.path} holds fewer than 3 trajectories{where} (fit / validation / test)")
        return {}
    max_samples = max(1, max_samples // dist.world_size())  # per rank: the same total on any number of ranks
    extra, columns = leakage_targets(data) if leakage else (None, {})
    splits = zip(split_trajectories(data), (max_samples, max_samples // 4 or 1, max_samples), strict=True)
    idx = [pair_indices(data, t, k, seed) for seed, (t, k) in enumerate(splits)]
    fit, val, test = (Moments().collect(label, data, i, frame_stack, batch_size, device, extra) for i in idx)
    act = slice(0, data.act_dim)  # the action columns of the targets
    path = fit.ridge_path(list(L2_GRID))
    best = min(range(len(L2_GRID)), key=lambda i: val.mse(*path[i], act))
    w, b = path[best]
    mean_a, no_latent = fit.mean_action(), torch.zeros_like(w)  # the baseline: always the fitted mean action
    out = {
        "lapo/ridge_probe_mse": test.mse(w, b, act),
        "lapo/ridge_probe_baseline_mse": test.mse(no_latent, mean_a, act),
        "lapo/ridge_probe_val_mse": val.mse(w, b, act),  # studies/small/tune.sh selects on it; the test only reports
        "lapo/ridge_probe_val_baseline_mse": val.mse(no_latent, mean_a, act),
    }
    if len(w) > PCA_DIMS:  # the same probe on the top PCA_DIMS principal components of the latents
        pca = fit.ridge_path(list(L2_GRID), dims=PCA_DIMS)
        out[f"lapo/ridge_probe_pca{PCA_DIMS}_mse"] = test.mse(*min(pca, key=lambda p: val.mse(*p, act)), act)
    out["lapo/ridge_probe_l2"] = L2_GRID[best]
    out["lapo/ridge_probe_fit_transitions"] = dist.total(len(idx[0]))  # over every rank
    out["lapo/ridge_probe_test_transitions"] = dist.total(len(idx[2]))
    a = data.actions.double()  # the online probe's baseline: the variance of all the actions it is trained on
    m = {"n": torch.tensor(float(len(a)), dtype=a.dtype, device=a.device), "a": a.sum(0), "aa": (a * a).sum(0)}
    m = dist.sum_tensors(m)
    out["lapo/action_variance"] = (m["aa"] / m["n"] - (m["a"] / m["n"]) ** 2).mean().item()
    ev = None
    if eval_data is not None:
        eval_idx = pair_indices(eval_data, list(range(eval_data.num_trajectories)), max_samples, seed=3)
        ev_extra, ev_columns = leakage_targets(eval_data, quiet=True) if leakage else (None, {})
        ev_extra = ev_extra if ev_columns == columns else None  # leakage only where it records what the data does
        ev = Moments().collect(label, eval_data, eval_idx, frame_stack, batch_size, device, ev_extra)
        out["lapo/eval_ridge_probe_mse"] = ev.mse(w, b, act)
        out["lapo/eval_ridge_probe_baseline_mse"] = ev.mse(no_latent, mean_a, act)
        ev = ev if ev_extra is not None else None
    if extra is not None:
        out |= _leakage(fit, val, test, ev, path, columns, data.act_dim)
    return out


def _leakage(fit, val, test, ev, path, columns: dict, act_dim: int) -> dict[str, float]:
    mean, out = fit.mean_action(), {}

    def put(stem: str, suffix: str, val_score: float, score: Callable[..., float], *args) -> None:
        out[f"lapo/leakage/{stem}{suffix}"] = score(test, *args)
        out[f"lapo/leakage/{stem}_val{suffix}"] = val_score
        if ev is not None:
            out[f"lapo/leakage/{stem}_eval{suffix}"] = score(ev, *args)

    spans = {"action": list(range(act_dim))} | {k: [act_dim + c for c in v] for k, v in columns.items()}
    for name, cols in spans.items():
        val_r2 = [val.r2(w, b, mean, cols) for w, b in path]
        best = _best(val_r2)
        put(name, "_r2", val_r2[best], Moments.r2, *path[best], mean, cols)
    distractors = [c for k in LEAKAGE_TARGETS[2:] for c in spans.get(k, [])]
    sources = {"agent": spans["action"] + spans.get("agent_state", []), "distractors": distractors}
    for name, cols in ((k, v) for k, v in sources.items() if v):
        shares = [val.explained(fit, cols, l2) for l2 in SHARE_L2_GRID]
        best = _best(shares)
        put(f"latent_from_{name}", "_r2", shares[best], Moments.explained, fit, cols, SHARE_L2_GRID[best])
        cca = held_out_cca(fit, val, test, cols, others=(ev,) if ev is not None else ())
        out[f"lapo/leakage/cca_{name}"] = cca["cca"]
        out[f"lapo/leakage/cca_{name}_top1"] = cca["top1"]
        out[f"lapo/leakage/cca_{name}_val"] = cca["val"]
        if ev is not None:
            out[f"lapo/leakage/cca_{name}_eval"] = cca["others"][0]
    return out


def _best(val_r2: list[float]) -> int:
    finite = [i for i, r in enumerate(val_r2) if not math.isnan(r)]
    return max(finite, key=lambda i: val_r2[i]) if finite else 0


_LEAKAGE_CACHE: dict[tuple, tuple] = {}


def leakage_targets(data: TrajectoryData, quiet: bool = False) -> tuple[torch.Tensor | None, dict[str, list[int]]]:
    """Recorded non-action targets of `data`'s transitions: (host float32 [N, K], {target: columns}) or (None, {})."""
    key = (str(Path(data.path).resolve()), tuple(data.keys))
    if key in _LEAKAGE_CACHE:
        return _LEAKAGE_CACHE[key]
    parts, columns, width = [], {}, 0
    with h5py.File(data.path, "r") as f:
        groups = [f[k] for k in data.keys]
        sources = {"agent_state": [g.get("states") for g in groups]}
        sources |= {n: [g.get(f"{DISTRACTORS_GROUP}/{n}") for g in groups] for n in LEAKAGE_TARGETS[2:]}
        missing = [n for n in LEAKAGE_TARGETS[2:] if None in sources[n]]
        if missing and not quiet:
            print(f"leakage probes: {data.path} does not record {', '.join(missing)} (no '{DISTRACTORS_GROUP}/' "
                  "group in its trajectories): not recorded, not probed")  # fmt: skip
        for name, datasets in ((k, v) for k, v in sources.items() if None not in v):
            values = np.concatenate([np.asarray(d, dtype=np.float32) for d in datasets])  # [N, k]
            values = values[:, _DISTRACTOR_COLUMNS.get(name, slice(None))]
            delta = np.zeros_like(values)
            delta[:-1] = values[1:] - values[:-1]  # x_{t+1} - x_t (across a trajectory's end: never used)
            parts.append(delta)
            columns[name] = list(range(width, width + delta.shape[1]))
            width += delta.shape[1]
    out = (torch.from_numpy(np.concatenate(parts, 1)) if parts else None, columns)
    while len(_LEAKAGE_CACHE) >= 2:
        _LEAKAGE_CACHE.pop(next(iter(_LEAKAGE_CACHE)))  # the oldest
    _LEAKAGE_CACHE[key] = out
    return out


class ProbeCurve:
    """The ridge probe every `every` updates from update 0 and the update-0 metrics, saved in `path` for resume."""

    def __init__(self, path, every: int):
        self.path, self.every = Path(path), every
        stored = json.loads(self.path.read_text()) if self.path.exists() else {}
        stored = {"points": stored} if isinstance(stored, list) else stored  # the earlier format: the points only
        self._points, self._init = stored.get("points", []), stored.get("init", {})

    def before_training(self, stage, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        if not (stage.done or stage.start != 0):
            self._add(0, module, probe)

    def maybe_add(self, step: int, total: int, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        """After update `step` (0-based) of `total`: a point every `every` updates, except after the last one."""
        n = step + 1
        if self.every > 0 and n % self.every == 0 and n < total and not any(p[0] == n for p in self._points):
            self._add(n, module, probe)

    def _add(self, n: int, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        module.eval()
        m = probe()
        module.train()
        if not m:  # skipped: too few trajectories
            return
        self._init = m if n == 0 else self._init
        if self.every > 0 and not any(p[0] == n for p in self._points):
            self._points.append(_point(n, m))
        if dist.is_main():
            text = json.dumps({"points": self._points, "init": self._init})
            replace_or_explain(self.path.with_suffix(".tmp"), self.path, lambda tmp: tmp.write_text(text))

    def points(self, final: dict, total: int) -> list:
        return [*self._points, _point(total, final)] if self.every > 0 and final else []

    def init_metrics(self) -> dict:
        return {k.replace("/", "/init/", 1): v for k, v in self._init.items()}


def _point(update: int, metrics: dict) -> list:
    """[update, validation MSE, test MSE] and, where measured, {leakage target: test R²}."""
    point = [update, metrics["lapo/ridge_probe_val_mse"], metrics["lapo/ridge_probe_mse"]]
    leak = {k.rpartition("/")[2].removesuffix("_r2"): v for k, v in metrics.items()
            if "/leakage/" in k and k.endswith("_r2") and not k.endswith(("_val_r2", "_eval_r2"))}  # fmt: skip
    return [*point, leak] if leak else point
