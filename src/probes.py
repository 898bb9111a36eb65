"""A closed-form linear probe of latent-action quality, written by every LAM script at the end of stage 1.

The paper's quality measure (Sections 4-5, Fig. 5 / 6) is the MSE of a linear probe from latent action to true
action, trained online with Adam next to the LAM. When the LAM trains for few updates (small runs, early stops) that
probe may not have converged, and its MSE then says more about the probe than about the latents. This probe needs no
training: ridge regression, solved exactly on frozen latents.

    metrics = ridge_probe(lam.label, data, frame_stack, batch_size, device, max_samples, l2, eval_data)

What it measures. Latents of consecutive frames (o_t, o_{t+1}) -> a_t: the latents latent BC imitates and the
decoder decodes, without augmentation. The trajectories of the LAM's data are split: the last ones (a tenth, at
least one) are held out; the probe is fitted on up to `max_samples` transitions of the others (a fixed random
subset: the global random state is not touched) and its MSE is measured on up to `max_samples` transitions of the
held-out ones. Each MSE comes with its baseline: the MSE of predicting the fitted mean action, i.e. the variance of
the actions around it; a probe at or above its baseline has found nothing in the latents. With an evaluation set
(novel distractors), the same fitted probe is also measured on it.

Ridge: W = (Cov(z) + l2 * mean(diag Cov(z)) * I)^-1 Cov(z, a), b = mean(a) - mean(z) W, in float64: the penalty is
relative to the latents' scale, so one l2 fits every method.
"""

from collections.abc import Callable

import torch

from src.data import TrajectoryData, normalize_obs
from src.utils import autocast

Labeler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (o_t, o_{t+1}) in [-1, 1] -> latent [B, Z]


def split_trajectories(data: TrajectoryData) -> tuple[list[int], list[int]]:
    """(fit, held-out) trajectory numbers: the last tenth (at least one) held out. Needs two trajectories."""
    n = data.num_trajectories
    if n < 2:
        raise ValueError(f"{data.path}: the ridge probe holds out whole trajectories and needs at least 2; it has {n}")
    n_test = max(1, n // 10)
    return list(range(n - n_test)), list(range(n - n_test, n))


def pair_indices(data: TrajectoryData, trajectories: list[int], max_samples: int, seed: int) -> torch.Tensor:
    """Indices t of (o_t, o_{t+1}) within the given trajectories: all, or a fixed random subset of max_samples."""
    starts, lens = data.traj_starts.tolist(), data.traj_lens.tolist()
    idx = torch.cat([torch.arange(starts[i], starts[i] + lens[i] - 1) for i in trajectories])
    if len(idx) > max_samples:
        gen = torch.Generator().manual_seed(seed)
        idx = idx[torch.randperm(len(idx), generator=gen)[:max_samples]].sort().values
    return idx.to(data.index_device)


@torch.no_grad()
def _latents(label: Labeler, data: TrajectoryData, idx: torch.Tensor, frame_stack: int, device) -> tuple:
    b = data.batch(idx, frame_stack, next_obs=True)
    with autocast(device):
        z = label(normalize_obs(b["obs"]), normalize_obs(b["next_obs"]))
    return z.double(), b["actions"].double()


class RidgeFit:
    """Sums of (z, a) over batches, then the ridge solution. Only sums: ranks of a distributed run can add theirs."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, z: torch.Tensor, a: torch.Tensor) -> None:
        s = {"n": torch.tensor(float(len(z)), dtype=torch.float64, device=z.device), "z": z.sum(0), "a": a.sum(0)}
        s |= {"zz": z.T @ z, "za": z.T @ a}
        self.sums = s if not self.sums else {k: self.sums[k] + v for k, v in s.items()}

    def solve(self, l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W [Z, A], b [A], mean action [A])."""
        s = self.sums
        n = s["n"]
        mz, ma = s["z"] / n, s["a"] / n
        czz = s["zz"] / n - torch.outer(mz, mz)
        cza = s["za"] / n - torch.outer(mz, ma)
        ridge = l2 * czz.diagonal().mean().clamp_min(1e-12)
        w = torch.linalg.solve(czz + ridge * torch.eye(len(czz), dtype=czz.dtype, device=czz.device), cza)
        return w, ma - mz @ w, ma


@torch.no_grad()
def _test(label, data, idx, frame_stack, batch_size, device, w, b, mean_a) -> tuple[float, float]:
    err = base = torch.zeros((), dtype=torch.float64, device=w.device)
    for chunk in idx.split(batch_size):
        z, a = _latents(label, data, chunk, frame_stack, device)
        err = err + (a - (z @ w + b)).square().sum()
        base = base + (a - mean_a).square().sum()
    count = len(idx) * w.shape[1]
    return (err / count).item(), (base / count).item()


@torch.no_grad()
def ridge_probe(
    label: Labeler,
    data: TrajectoryData,
    frame_stack: int,
    batch_size: int,
    device,
    max_samples: int,
    l2: float,
    eval_data: TrajectoryData | None = None,
    prefix: str = "lapo",
) -> dict[str, float]:
    """The probe's metrics: `<prefix>/ridge_probe_mse` and `<prefix>/ridge_probe_baseline_mse` on the held-out
    trajectories, the same two on `eval_data` (`eval_ridge_probe_...`) when given, the numbers of transitions, and
    `<prefix>/action_variance` (mean over action dimensions of the data's action variance: the online probe's
    baseline)."""
    fit_traj, test_traj = split_trajectories(data)
    fit_idx = pair_indices(data, fit_traj, max_samples, seed=0)
    test_idx = pair_indices(data, test_traj, max_samples, seed=1)
    fit = RidgeFit()
    for chunk in fit_idx.split(batch_size):
        fit.add(*_latents(label, data, chunk, frame_stack, device))
    w, b, mean_a = fit.solve(l2)
    mse, base = _test(label, data, test_idx, frame_stack, batch_size, device, w, b, mean_a)
    out = {f"{prefix}/ridge_probe_mse": mse, f"{prefix}/ridge_probe_baseline_mse": base}
    out[f"{prefix}/ridge_probe_fit_transitions"] = len(fit_idx)
    out[f"{prefix}/ridge_probe_test_transitions"] = len(test_idx)
    # The online probe's baseline: the variance of the actions it is trained on (all of the LAM's data).
    out[f"{prefix}/action_variance"] = data.actions.double().var(0, unbiased=False).mean().item()
    if eval_data is not None:
        eval_idx = pair_indices(eval_data, list(range(eval_data.num_trajectories)), max_samples, seed=2)
        mse, base = _test(label, eval_data, eval_idx, frame_stack, batch_size, device, w, b, mean_a)
        out |= {f"{prefix}/eval_ridge_probe_mse": mse, f"{prefix}/eval_ridge_probe_baseline_mse": base}
    return out
