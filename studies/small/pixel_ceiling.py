"""How much of each leakage target a linear read-out of the frames themselves finds (pixels of o_t and o_{t+1} - o_t,
projected to `--dims` random directions), with the probes' protocol (src/probes.py): the reference for the latents' R²
and canonical correlations.

    python -m studies.small.pixel_ceiling --data_path runs/small/data/cheetah-run.hdf5 --out pixel_ceiling.json
"""

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyrallis
import torch

from src.errors import cli
from src.probes import DISTRACTORS_GROUP, L2_GRID, Moments, held_out_cca

# target -> (group dataset, columns kept (None: all)); the changes of these over (t, t+1), the action at t
TARGETS = {"agent_state": ("states", None), "background": ("background", [1]), "camera": ("camera", None),
           "color": ("color", None)}  # fmt: skip


@dataclass
class Config:
    data_path: str = "runs/small/data/cheetah-run.hdf5"
    out: str = ""  # JSON output (empty: print only)
    samples: int = 3000  # fit transitions (as studies/small/configs' ridge_probe_samples)
    dims: int = 2048  # random projection of the 2 x 12288 pixel features
    seed: int = 0


def transitions(f: h5py.File, keys: list[str], n: int, rng: np.random.Generator, proj: np.ndarray):
    """Projected pixel features [M, dims] and {target: [M, k]} of up to n transitions drawn from the trajectories."""
    per = [f[k]["obs"].shape[0] - 1 for k in keys]
    pairs = [(k, t) for k, m in zip(keys, per, strict=True) for t in range(m)]
    chosen = sorted(rng.choice(len(pairs), min(n, len(pairs)), replace=False))
    feats, targets = [], {name: [] for name in ["action", *TARGETS]}
    by_key: dict[str, list[int]] = {}
    for i in chosen:
        by_key.setdefault(pairs[i][0], []).append(pairs[i][1])
    for k, ts in by_key.items():
        g, t = f[k], np.array(ts)
        obs = g["obs"][()].astype(np.float32) / 255.0
        x = np.concatenate([obs[t].reshape(len(t), -1), (obs[t + 1] - obs[t]).reshape(len(t), -1)], 1)
        feats.append(x @ proj)
        targets["action"].append(g["actions"][()][t])
        for name, (source, cols) in TARGETS.items():
            if source != "states" and source not in g.get(DISTRACTORS_GROUP, {}):
                continue  # not recorded (vanilla data, the paper's files)
            v = g[source][()] if source == "states" else g[DISTRACTORS_GROUP][source][()]
            v = v if cols is None else v[:, cols]
            targets[name].append(v[t + 1] - v[t])
    return np.concatenate(feats), {name: np.concatenate(v).astype(np.float64) for name, v in targets.items() if v}


def r2(y: np.ndarray, pred: np.ndarray, mean: np.ndarray) -> float:
    base, sse = ((y - mean) ** 2).sum(0), ((y - pred) ** 2).sum(0)
    varies = base > 1e-9 * len(y)
    return float(np.mean(1 - sse[varies] / base[varies])) if varies.any() else float("nan")


SOURCES = {"agent": ("action", "agent_state"), "distractors": ("background", "camera", "color")}


def canonical(xf, xv, xt, yf: dict, yv: dict, yt: dict) -> dict:
    """The held-out canonical correlations of the features with each source's targets (those recorded)."""
    out = {}
    for name, targets in SOURCES.items():
        targets = [t for t in targets if t in yf]
        if not targets:
            continue
        sets = []
        for x, y in ((xf, yf), (xv, yv), (xt, yt)):
            m = Moments()
            m.add(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(np.concatenate([y[t] for t in targets], 1)))
            sets.append(m)
        cca = held_out_cca(*sets, list(range(sum(yf[t].shape[1] for t in targets))))
        out[name] = {k: cca[k] for k in ("cca", "top1", "val", "l2")}
    return out


def main(c: Config) -> dict:
    rng = np.random.default_rng(c.seed)
    with h5py.File(c.data_path, "r") as f:
        keys = sorted((k for k in f if k.isdigit()), key=int)
        n, k = len(keys), max(1, len(keys) // 10)
        fit_k, val_k, test_k = keys[: n - 2 * k], keys[n - 2 * k : n - k], keys[n - k :]
        side = f[keys[0]]["obs"].shape[1]
        proj = rng.normal(size=(2 * side * side * 3, c.dims)).astype(np.float32) / np.sqrt(2 * side * side * 3)
        xf, yf = transitions(f, fit_k, c.samples, rng, proj)
        xv, yv = transitions(f, val_k, c.samples // 4, rng, proj)
        xt, yt = transitions(f, test_k, 10**9, rng, proj)
    mu, sd = xf.mean(0), xf.std(0) + 1e-6
    xf, xv, xt = ((x - mu) / sd for x in (xf, xv, xt))
    cov = xf.T.astype(np.float64) @ xf / len(xf)
    evals, evecs = np.linalg.eigh(cov)
    out = {"data_path": c.data_path, "features": f"pixels of o_t and o_t+1 - o_t, {c.dims} random projections",
           "fit_transitions": len(xf), "test_transitions": len(xt), "r2": {}}  # fmt: skip
    for name in yf:
        mean = yf[name].mean(0)
        proj_y = evecs.T @ (xf.T @ (yf[name] - mean) / len(xf))
        best = None
        for l2 in L2_GRID:
            w = evecs @ (proj_y / (np.clip(evals, 0, None) + l2 * evals.mean())[:, None])
            val = r2(yv[name], xv @ w + mean, mean)
            if best is None or (np.isfinite(val) and val > best[0]):
                best = (val, w, l2)
        out["r2"][name] = {"test": r2(yt[name], xt @ best[1] + mean, mean), "val": best[0], "l2": best[2]}
    for name, v in out["r2"].items():
        print(f"{name:12s} test R² {v['test']:.3f} (validation {v['val']:.3f}, penalty {v['l2']:g})")
    out["cca"] = canonical(xf, xv, xt, yf, yv, yt)
    for name, v in out["cca"].items():
        print(f"{name:12s} held-out canonical correlation: mean squared {v['cca']:.3f}, first {v['top1']:.3f}")
    if c.out:
        Path(c.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"written: {c.out}")
    return out


if __name__ == "__main__":
    cli(lambda: main(pyrallis.parse(config_class=Config)))
