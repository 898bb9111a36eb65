"""What moves each latent action, the background's change or the agent's? With the true foreground masks, o_{t+1} is
frozen at o_t's pixels outside the masks, inside them, or whole (`still`), and the latent's responses are compared,
also through a cross-fitted action probe that rescaling cannot change (studies/small/README.md), for every LAM of the
distracted data at update 0 and at the end.

    python -m studies.small.latent_sources --small_dir runs/small --out runs/small/report/latent_sources.json
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pyrallis
import torch

from scripts.plot_results import interval
from src.data import load_dataset, load_masks, normalize_obs
from src.errors import cli
from src.optim import setup_backends
from src.probes import L2_GRID, pair_indices, ridge_probe, split_trajectories
from studies.small.report import ENV, run_lam, study

# variant (studies/small/report.py's, where its runs are) -> module: the LAMs of the distracted data (its masks)
LAMS = {"lapo": "train_lapo", "laom": "train_laom", "laom_labels": "train_laom_labels", "lapo_mask": "train_lapo_mask"}
FROZEN = ("background", "agent")  # the parts whose change is undone; "still" undoes the whole step


@dataclass
class Config:
    small_dir: str = "runs/small"  # studies/small/reproduce.sh's folder: data/ (with the masks file), runs/
    out: str = ""  # JSON output (empty: print only)
    seeds: str = "0 1 2 3 4 5 6 7 8 9"
    budget: int = 2
    batch_size: int = 64
    variants: str = ""  # the LAMs to measure (e.g. "lapo laom"; empty: all of LAMS)
    transitions: int = 1000  # test transitions the interventions run on (a fixed subset of the probes' test set)
    checks: int = 1  # the first seeds of each LAM whose rebuilt update 0 is checked against its stored probe


def frozen_frames(obs: torch.Tensor, nxt: torch.Tensor, fg: torch.Tensor) -> dict[str, torch.Tensor]:
    """The next stack [B, 3k, H, W] as is, with its last frame's background or agent (fg: [B, 1, H, W]) frozen at
    o_t's pixels, and wholly frozen (still)."""
    last_t, last_n = obs[:, -3:], nxt[:, -3:]
    lasts = {"full": last_n, "background": torch.where(fg, last_n, last_t), "agent": torch.where(fg, last_t, last_n),
             "still": last_t}  # fmt: skip
    return {k: torch.cat([nxt[:, :-3], v], 1) for k, v in lasts.items()}


def moved(z: dict[str, torch.Tensor]) -> dict[str, float]:
    """The shares `step`, `background` and `agent` (module docstring) of latents z[k] [N, Z] as they are and frozen."""
    full = z["full"]
    step = ((full - z["still"]) ** 2).sum()
    out = {"step": (step / ((full - full.mean(0)) ** 2).sum()).item()}
    return out | {k: (((full - z[k]) ** 2).sum() / step).item() for k in FROZEN}


def action_readout(z: dict[str, torch.Tensor], actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every latent of z ([N, Z]) mapped to actions [N, A] by a ridge probe of z["full"] cross-fitted on two
    halves (dimensions standardised on the fitting half; penalty of L2_GRID with the lowest MSE)."""
    n, a = len(actions), actions.double()
    halves = (torch.arange(n // 2), torch.arange(n // 2, n))
    best = None
    for l2 in L2_GRID:
        fits = []
        for fit in halves:
            x = z["full"][fit]
            mu, sd = x.mean(0), x.std(0).clamp_min(1e-12)
            xs, am = (x - mu) / sd, a[fit].mean(0)
            cov = xs.T @ xs / len(fit)
            w = torch.linalg.solve(cov + l2 * torch.eye(len(cov), dtype=cov.dtype), xs.T @ (a[fit] - am) / len(fit))
            fits.append((mu, sd, w, am))
        preds = {k: torch.empty(n, a.shape[1], dtype=torch.float64) for k in z}
        for (mu, sd, w, am), other in zip(fits, reversed(halves), strict=True):
            for k, v in z.items():
                preds[k][other] = (v[other] - mu) / sd @ w + am
        err = ((preds["full"] - a) ** 2).sum().item()
        if best is None or err < best[0]:
            best = (err, preds)
    return best[1]


@torch.no_grad()
def effects(label, data, masks, idx, frame_stack: int, batch_size: int, readout: bool = True) -> dict[str, float]:
    """moved() of label(o_t, o_t+1 as it is / frozen) over the transitions idx; readout: also as probe_<share>."""
    zs: dict[str, list] = {"full": [], "background": [], "agent": [], "still": []}
    for chunk in idx.split(batch_size):
        b = data.batch(chunk, frame_stack, next_obs=True)
        fg = (masks[chunk] > 0) | (masks[chunk + 1] > 0)
        o = normalize_obs(b["obs"])
        for k, x in frozen_frames(b["obs"], b["next_obs"], fg).items():
            zs[k].append(label(o, normalize_obs(x)).double())
    z = {k: torch.cat(v) for k, v in zs.items()}
    out = moved(z)
    if readout:
        out |= {f"probe_{k}": v for k, v in moved(action_readout(z, data.actions[idx].cpu())).items()}
    return out


def frame_difference(o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The frame difference o_t+1 - o_t, flattened: the shares of the input's own change."""
    return (x - o).flatten(1)


def main(c: Config) -> dict:
    torch.set_num_threads(1)
    small = Path(c.small_dir)
    seeds = [int(s) for s in c.seeds.split()]
    data_path, masks_path = small / "data" / f"{ENV}.hdf5", small / "data" / f"{ENV}-masks.hdf5"
    result = {
        "measure": "step: sum ||z - z_still||^2 / sum ||z - mean z||^2; background, agent: sum ||z - "
        "z_frozen||^2 / sum ||z - z_still||^2; held-out test transitions (module docstring)",
        "lams": {},
    }
    cache: dict = {}  # frame stack -> (data, masks, test transitions)
    runs = study(small, seeds, c.budget)  # the runs the report reads: seed<S>, or seed<S>-lam
    for variant, module in LAMS.items():
        if c.variants and variant not in c.variants.split():
            continue
        for seed, r in sorted(runs[variant].items()):
            run = Path(r["_dir"])
            if not (run / "lam.pt").exists():
                continue
            k = r["config"]["lapo"]["frame_stack"]
            if k not in cache:
                data = load_dataset(str(data_path), "cpu", k, load_states=False)
                masks = load_masks(str(masks_path), data)
                test = pair_indices(data, split_trajectories(data)[2], c.transitions, seed=2)
                cache[k] = (data, masks, test)
                result["pixels"] = effects(frame_difference, data, masks, test, 1, 256, readout=False)
                result["test_transitions"] = len(test)
            data, masks, test = cache[k]
            setup_backends(torch.device("cpu"), r["config"]["precision"])  # the run's autocast, for its probe check
            entry: dict = {"run_dir": str(run.relative_to(small))}
            lams = {w: run_lam(run, module, data.shapes, trained=w == "end") for w in ("init", "end")}
            for when, lam in lams.items():
                entry[when] = effects(lam.label, data, masks, test, k, c.batch_size)
            if seeds.index(seed) < c.checks:  # update 0 is rebuilt, not stored: its probe must be the run's
                probe = ridge_probe(lams["init"].label, data, k, r["config"]["lapo"]["batch_size"], torch.device("cpu"),
                                    r["config"]["lapo"]["ridge_probe_samples"])  # fmt: skip
                entry["init_check"] = {"action_r2_stored": r["metrics"].get("lapo/init/leakage/action_r2"),
                                       "action_r2_here": probe.get("lapo/leakage/action_r2")}  # fmt: skip
            result["lams"].setdefault(variant, {})[seed] = entry
            i, e = entry["init"], entry["end"]
            print(f"{variant} seed {seed} (update 0 -> end): the step's change {i['step']:.3f} -> {e['step']:.3f} "
                  f"of the latent's variance; of it, the background's {i['background']:.3f} -> {e['background']:.3f}, "
                  f"the agent's {i['agent']:.3f} -> {e['agent']:.3f}", flush=True)  # fmt: skip
    if not result["lams"]:
        raise SystemExit(f"error: no finished LAM run under {small / 'runs'} for seeds {c.seeds}")
    lines = ["| latent | the step's change, of its variance: update 0 → end | the background's share of the step: "
             "update 0 → end | the agent's share: update 0 → end | in the action probe's output: the step's change, "
             "of its variance | background's share | agent's share |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    px = result["pixels"]
    lines.append(f"| the frame difference o_t+1 - o_t | – | {px['background']:.3f} | {px['agent']:.3f} | – | – | – |")
    result["summary"] = {}
    for variant, per in result["lams"].items():
        parts = ("step", *FROZEN, "probe_step", *(f"probe_{f}" for f in FROZEN))
        ivs = {(f, w): interval([e[w][f] for e in per.values()]) for f in parts for w in ("init", "end")}
        result["summary"][variant] = {f"{f}_{w}": iv.as_dict() for (f, w), iv in ivs.items()}
        cells = [f"{ivs[f, 'init'].iqm:.3f} → {ivs[f, 'end']}" for f in parts]
        lines.append(f"| {variant} ({len(per)} seeds) | " + " | ".join(cells) + " |")
    result["markdown"] = "\n".join(lines)
    print(result["markdown"])
    if c.out:
        Path(c.out).parent.mkdir(parents=True, exist_ok=True)
        Path(c.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"latent sources: {c.out}")
    return result


if __name__ == "__main__":
    cli(lambda: main(pyrallis.parse(config_class=Config)))
