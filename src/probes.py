"""A closed-form linear probe of latent-action quality, written by every LAM script at the end of stage 1.

The paper's quality measure (Sections 4-5, Fig. 5 / 6) is the MSE of a linear probe from latent action to true
action, trained online with Adam next to the LAM. When the LAM trains for few updates (small runs, early stops) that
probe may not have converged, and its MSE then says more about the probe than about the latents. This probe needs no
training: ridge regression, solved exactly on frozen latents.

    metrics = ridge_probe(lam.label, data, frame_stack, batch_size, device, max_samples, eval_data=eval_data)

Under torchrun each rank splits its own shard of trajectories and the sums are added over ranks: one probe, fitted
on every rank's fit trajectories and tested on every rank's held-out ones.

What it measures. Latents of consecutive frames (o_t, o_{t+1}) -> a_t: the latents latent BC imitates and the
decoder decodes, without augmentation. The trajectories of the LAM's data are split whole: the last tenth (at least
one) is the held-out test set, the tenth before it (at least one) the validation set, the rest the fit set. Up to
`max_samples` transitions of each (a fixed random subset: the global random state is not touched) go through the
frozen LAM once; the probe is fitted on the fit set for each penalty of L2_GRID, the validation set picks one, and
its MSE is measured on the test set. Each MSE comes with its baseline: the MSE of predicting the fitted mean action,
i.e. the actions' spread around it; a probe at or above its baseline has found nothing in the latents. With an
evaluation set (novel distractors), the same fitted probe is also measured on it.

Ridge: W = (Cov(z) + l2 * mean(diag Cov(z)) * I)^-1 Cov(z, a), b = mean(a) - mean(z) W, in float64 from sums of
z, a and their products (`Moments`): the penalty is relative to the latents' scale, so one grid fits every method.
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch

from src import dist
from src.data import DatasetError, TrajectoryData, normalize_obs
from src.optim import autocast

Labeler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (o_t, o_{t+1}) in [-1, 1] -> latent [B, Z]
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # relative ridge penalties tried; the validation trajectories choose


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
        s = {"n": torch.tensor(float(len(z)), dtype=torch.float64, device=z.device), "z": z.sum(0), "a": a.sum(0)}
        s |= {"zz": z.T @ z, "za": z.T @ a, "aa": (a * a).sum(0)}
        self.sums = s if not self.sums else {k: self.sums[k] + v for k, v in s.items()}

    @torch.no_grad()
    def collect(self, label: "Labeler", data: TrajectoryData, idx, frame_stack, batch_size, device) -> "Moments":
        for chunk in idx.split(batch_size):
            b = data.batch(chunk, frame_stack, next_obs=True)
            with autocast(device):
                z = label(normalize_obs(b["obs"]), normalize_obs(b["next_obs"]))
            self.add(z.double(), b["actions"].double())
        self.sums = dist.sum_tensors(self.sums)  # a distributed run: the statistics of every rank's shard
        return self

    def mean_action(self) -> torch.Tensor:
        return self.sums["a"] / self.sums["n"]

    def mse(self, w: torch.Tensor, b: torch.Tensor) -> float:
        """Mean over samples and action dimensions of (a - z W - b)^2, from the sums alone."""
        s = self.sums
        sq = s["aa"].sum() - 2 * (w * s["za"]).sum() - 2 * b @ s["a"] + (w * (s["zz"] @ w)).sum()
        sq = sq + 2 * b @ (w.T @ s["z"]) + s["n"] * b @ b
        return (sq.clamp_min(0) / (s["n"] * len(b))).item()

    def ridge_path(self, l2s: list[float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W [Z, A], b [A]) for each relative penalty: W = (Cov(z) + l2 * mean(diag Cov(z)) I)^-1 Cov(z, a),
        b = mean(a) - mean(z) W. One eigendecomposition serves every penalty."""
        s = self.sums
        mz, ma = s["z"] / s["n"], s["a"] / s["n"]
        czz = s["zz"] / s["n"] - torch.outer(mz, mz)
        cza = s["za"] / s["n"] - torch.outer(mz, ma)
        evals, evecs = torch.linalg.eigh(czz)
        proj = evecs.T @ cza
        scale = czz.diagonal().mean().clamp_min(1e-12)
        out = []
        for l2 in l2s:
            w = evecs @ (proj / (evals.clamp_min(0) + l2 * scale)[:, None])
            out.append((w, ma - mz @ w))
        return out


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
) -> dict[str, float]:
    """The probe's metrics (none when max_samples is 0; none, with a printed note, when the data holds fewer than 3
    trajectories, on any rank): `<prefix>/ridge_probe_mse` and `<prefix>/ridge_probe_baseline_mse` on the held-out
    test trajectories; `<prefix>/ridge_probe_val_mse` and its baseline on the validation trajectories (what tuning
    selects on); the same two on `eval_data` (`eval_ridge_probe_...`) when given; the penalty chosen, the numbers of
    transitions, and `<prefix>/action_variance` (mean over action dimensions of the data's action variance: the
    online probe's baseline)."""
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
    fit_idx = pair_indices(data, fit_traj, max_samples, seed=0)
    fit = Moments().collect(label, data, fit_idx, *args)
    val = Moments().collect(label, data, pair_indices(data, val_traj, max_samples // 4 or 1, seed=1), *args)
    test_idx = pair_indices(data, test_traj, max_samples, seed=2)
    test = Moments().collect(label, data, test_idx, *args)
    path = fit.ridge_path(list(l2s))
    best = min(range(len(l2s)), key=lambda i: val.mse(*path[i]))
    w, b = path[best]
    mean_a = fit.mean_action()
    no_latent = torch.zeros_like(w)  # the baseline: always the fitted mean action
    out = {
        f"{prefix}/ridge_probe_mse": test.mse(w, b),
        f"{prefix}/ridge_probe_baseline_mse": test.mse(no_latent, mean_a),
        # the validation trajectories' MSE at the chosen penalty: what hyperparameter tuning may select on
        # (scripts/tune_small.sh); the test trajectories above are for reporting only
        f"{prefix}/ridge_probe_val_mse": val.mse(w, b),
        f"{prefix}/ridge_probe_val_baseline_mse": val.mse(no_latent, mean_a),
    }
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
    if eval_data is not None:
        eval_idx = pair_indices(eval_data, list(range(eval_data.num_trajectories)), max_samples, seed=3)
        ev = Moments().collect(label, eval_data, eval_idx, *args)
        out |= {
            f"{prefix}/eval_ridge_probe_mse": ev.mse(w, b),
            f"{prefix}/eval_ridge_probe_baseline_mse": ev.mse(no_latent, mean_a),
        }
    return out


class ProbeCurve:
    """The ridge probe at a few points of a LAM's training (`ridge_probe_every` updates), so a reader sees whether
    the probe had flattened or was still falling when the stage ended; the first point is the randomly initialised
    network (update 0). Each point is [update, validation MSE, test
    MSE], appended to `path` (a JSON list beside the stage checkpoint) so a resumed stage keeps its earlier points;
    `points(final)` adds the stage's final probe. The network is put in eval mode for the probe and back after; the
    global random state is not touched (ridge_probe draws with its own generators), so training is unchanged."""

    def __init__(self, path, every: int):
        self.path, self.every = Path(path), every
        self._points = json.loads(self.path.read_text()) if every > 0 and self.path.exists() else []

    def before_training(self, stage, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        """The point at update 0, the randomly initialised network: what the latents hold before any learning (a
        stage that resumes or was finished earlier has it already)."""
        if not stage.done and stage.start == 0:
            self.maybe_add(-1, stage.total, module, probe)

    def maybe_add(self, step: int, total: int, module: torch.nn.Module, probe: Callable[[], dict]) -> None:
        """After update `step` (0-based) of `total`: a point every `every` updates, except after the last one."""
        n = step + 1
        if self.every <= 0 or n % self.every or n >= total or any(p[0] == n for p in self._points):
            return
        module.eval()
        m = probe()
        module.train()
        if not m:  # the probe was skipped (too few trajectories)
            return
        self._points.append([n, _key(m, "ridge_probe_val_mse"), _key(m, "ridge_probe_mse")])
        if dist.is_main():
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._points))
            tmp.replace(self.path)

    def points(self, final: dict, total: int) -> list:
        if self.every <= 0 or not final:
            return []
        return [*self._points, [total, _key(final, "ridge_probe_val_mse"), _key(final, "ridge_probe_mse")]]


def _key(metrics: dict, suffix: str) -> float:
    return next(v for k, v in metrics.items() if k.endswith("/" + suffix))
