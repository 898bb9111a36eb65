"""Time the stage-1 update of the small study (studies/small/configs) for side-by-side comparisons.

    python -m studies.small.bench --method laom --updates 40                  # this project's update
    python -m studies.small.bench --method laom --updates 40 --release_adam   # torch.optim.Adam's default kernel

To compare two variants, run the two commands alternately a few times under `/usr/bin/time -f %e` (whole processes)
and compare the medians.

Builds the method's networks and optimizers exactly as its script does (studies/small/configs sizes by default), draws
batches from the dataset as the stage-1 loop does (frames gathered from memory, augmentations for LAOM), and runs
`updates` full updates (batch, forward, backward, optimizer step, EMA), after `warmup` untimed ones. Prints the
median seconds per update and the share of each part measured on separate calls (data + augmentation, forward +
backward, optimizer step). No GPU needed; `--threads` sets torch's intra-op threads.
"""

import copy
import statistics
import time
from dataclasses import dataclass

import pyrallis
import torch
import torch.nn.functional as F

from src.augs import Augmenter
from src.data import load_dataset, normalize_obs
from src.optim import infinite_epochs, make_optimizer, soft_update


@dataclass
class Config:
    method: str = "laom"  # lapo | laom
    data_path: str = "data/example-data.hdf5"  # any dataset in the released layout
    updates: int = 40  # timed updates
    warmup: int = 3  # untimed updates first
    batch_size: int = 32
    encoder_scale: int = 1
    encoder_num_res_blocks: int = 1  # studies/small/configs
    latent_action_dim: int = 0  # 0: studies/small/configs' (LAPO 128, LAOM 1024)
    head_dim: int = 256  # LAOM's act / obs heads
    threads: int = 1
    release_adam: bool = False  # torch.optim.Adam(W) with its default implementation (the release's optimizer)


def build(c: Config, data):
    import train_laom
    import train_lapo

    mod = train_lapo if c.method == "lapo" else train_laom
    cfg = mod.Config()
    lc = cfg.lapo
    lc.batch_size, lc.encoder_scale, lc.encoder_num_res_blocks = c.batch_size, c.encoder_scale, c.encoder_num_res_blocks
    lc.latent_action_dim = c.latent_action_dim or (128 if c.method == "lapo" else 1024)
    if c.method == "laom":
        lc.act_head_dim = lc.obs_head_dim = c.head_dim
    names = ("lam", "probe") if c.method == "lapo" else ("lam", "probes")
    models = mod.build_models(cfg, data.shapes, *names)
    return mod, lc, models["lam"], models[names[1]]


def optimizer(module, kind: str, release: bool):
    if not release:
        return make_optimizer(module, kind, 1e-4)
    return (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(module.parameters(), lr=1e-4)


def main(c: Config) -> None:
    if c.method not in ("lapo", "laom"):
        raise SystemExit(f"error: --method={c.method!r}; expected lapo or laom")
    torch.set_num_threads(c.threads)
    torch.manual_seed(0)
    data = load_dataset(c.data_path, torch.device("cpu"), 3, min_offset=10)
    valid = data.valid_indices(10)
    mod, lc, lam, probe = build(c, data)
    opt, popt = optimizer(lam, "adam", c.release_adam), optimizer(probe, "adam", c.release_adam)
    batches = infinite_epochs(data, valid, c.batch_size)
    aug = Augmenter() if c.method == "laom" else None
    target = copy.deepcopy(lam.encoder).requires_grad_(False) if c.method == "laom" else None
    parts = {"data": [], "forward_backward": [], "optimizer": []}

    def update(record: bool) -> None:
        t0 = time.perf_counter()
        if c.method == "laom":
            obs, fut, nxt, b = mod.stage1_batch(data, next(batches), lc, aug)
        else:
            b = data.batch(next(batches), 3, future_offset=10, next_obs=True)
            obs, fut, nxt = (normalize_obs(b[k]) for k in ("obs", "future_obs", "next_obs"))
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        popt.zero_grad(set_to_none=True)
        if c.method == "laom":
            z, e_t = lam.latent_action(obs, fut)
            pred = lam.predict_next(e_t, z)
            with torch.no_grad():
                tgt = lam.encode(nxt, target)
            loss = F.mse_loss(pred, tgt) + sum(probe(z, e_t, b["actions"], b["states"]).values())
        else:
            pred, z, _ = lam(obs, fut)
            loss = F.mse_loss(pred, nxt) + F.mse_loss(probe(z.detach()), b["actions"])
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        popt.step()
        if target is not None:
            soft_update(target, lam.encoder, 0.01)
        t3 = time.perf_counter()
        if record:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                parts[k].append(v)

    for _ in range(c.warmup):
        update(False)
    for _ in range(c.updates):
        update(True)
    med = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(med.values())
    shares = ", ".join(f"{k} {v * 1000:.1f} ms ({v / total:.0%})" for k, v in med.items())
    adam = "torch.optim default" if c.release_adam else "fused"
    print(f"{c.method} batch {c.batch_size}, scale {c.encoder_scale}, {c.encoder_num_res_blocks} res unit(s), "
          f"{c.threads} thread(s), Adam {adam}: {total * 1000:.1f} ms per update ({shares})")  # fmt: skip


if __name__ == "__main__":
    main(pyrallis.parse(config_class=Config))
