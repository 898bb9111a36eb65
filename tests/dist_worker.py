"""One process of the distributed tests (tests/test_distributed.py), started by torchrun or alone:

    python -m torch.distributed.run --nproc_per_node=2 tests/dist_worker.py shard <data.hdf5> <out_dir>
    python tests/dist_worker.py step <data.hdf5> <out_dir>
    python -m torch.distributed.run --nproc_per_node=2 tests/dist_worker.py script <out_dir> <module> [args...]

shard: loads the dataset as a method script does and writes what this rank holds (its trajectory groups, frames,
bytes of frames, peak RSS) to <out_dir>/rank<r>.json.
step: a few LAOM stage-1 updates (train_laom's networks, loss, optimizers, schedule and EMA target; no
augmentation, a fixed offset k) on a global batch chosen deterministically from every trajectory of the file, each
rank computing on the samples of its own trajectories and averaging gradients as the method scripts do; writes the
networks' parameters to <out_dir>/rank<r>.pt. One process and N ranks are given the same global batch.
script: runs a method script (`python -m <module> [args...]`) and, when the interpreter exits, writes the names of
the threads still running to <out_dir>/threads-rank<r>.json (Linux /proc): a process group left as it should be
leaves none of gloo's.
"""

import atexit
import json
import os
import resource
import runpy
import sys
from pathlib import Path

import h5py
import torch

from src import dist
from src.checkpoint import set_seed
from src.data import load_dataset, normalize_obs
from src.optim import make_optimizer, make_scheduler, soft_update

FRAME_STACK, OFFSET, PER_TRAJ, UPDATES = 3, 2, 2, 4


def shard(path: str, out: Path) -> None:
    data = load_dataset(path, "cpu", FRAME_STACK, frames_device="cpu")
    info = {
        "rank": dist.rank(),
        "world_size": dist.world_size(),
        "keys": data.keys,
        "num_frames": data.num_frames,
        "frames_bytes": data.frames.numel() * data.frames.element_size(),  # read now
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(info))


def global_batch(step: int, lens: list[int]) -> list[tuple[int, int]]:
    """(trajectory position, t) pairs of update `step`: PER_TRAJ samples of every trajectory, ordered by the rank
    that holds the trajectory (position % world_size), so that the ranks' parts concatenated are the global batch."""
    pairs = [(i, (5 * step + 11 * j + 7 * i) % (n - OFFSET)) for i, n in enumerate(lens) for j in range(PER_TRAJ)]
    return sorted(pairs, key=lambda p: (p[0] % dist.world_size(), p[0], p[1]))


def step(path: str, out: Path) -> None:
    import train_laom

    with h5py.File(path, "r") as f:
        all_keys = sorted((k for k in f.keys() if k.isdigit()), key=int)
        lens = [f[k]["obs"].shape[0] for k in all_keys]
    data = load_dataset(path, "cpu", FRAME_STACK, min_offset=OFFSET, frames_device="cpu")
    start = {k: int(s) for k, s in zip(data.keys, data.traj_starts.tolist(), strict=True)}
    cfg = train_laom.Config()
    cfg.lapo.encoder_scale, cfg.lapo.latent_action_dim, cfg.lapo.act_head_dim, cfg.lapo.obs_head_dim = 1, 16, 32, 32
    set_seed(1 + dist.rank())  # different initialisations: the broadcast from rank 0 makes them equal
    models = train_laom.build_models(cfg, data.shapes, "lam", "probes")
    lam, probes = models["lam"], models["probes"]
    dist.broadcast_modules(lam, probes)
    init = {"lam": {k: v.clone() for k, v in lam.state_dict().items()}}
    target_encoder = train_laom.copy.deepcopy(lam.encoder).requires_grad_(False)
    optim = make_optimizer(lam, "adam", 1e-3)
    probe_optim = make_optimizer(probes, "adam", 1e-3)
    sched = make_scheduler(optim, UPDATES, 2, "linear")
    for s in range(UPDATES):
        mine = [(i, t) for i, t in global_batch(s, lens) if all_keys[i] in start]  # this rank's part
        idx = torch.tensor([start[all_keys[i]] + t for i, t in mine])
        b = data.batch(idx, FRAME_STACK, next_obs=True)
        obs, next_obs = normalize_obs(b["obs"]), normalize_obs(b["next_obs"])
        future_obs = normalize_obs(data.obs(idx + OFFSET, FRAME_STACK))
        z, e_t = lam.latent_action(obs, future_obs)
        pred = lam.predict_next(e_t, z)
        with torch.no_grad():
            target = lam.encode(next_obs, target_encoder)
        loss = train_laom.temporal_consistency_loss(pred, target, False)
        probe_losses = probes(z, e_t, b["actions"], b["states"])
        optim.zero_grad(set_to_none=True)
        probe_optim.zero_grad(set_to_none=True)
        (loss + sum(probe_losses.values())).backward()
        dist.average_gradients(lam, probes)
        optim.step()
        probe_optim.step()
        sched.step()
        soft_update(target_encoder, lam.encoder, 0.5)
    state = {"lam": lam.state_dict(), "probes": probes.state_dict(), "target_encoder": target_encoder.state_dict()}
    torch.save({"state": state, "init": init, "local_batch": len(mine)}, out / f"rank{dist.rank()}.pt")


def unequal_shares() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    """5 samples (x [5, 3], y [5, 2]) and a Linear(3, 2), the same in every process."""
    torch.manual_seed(0)
    return torch.randn(5, 3), torch.randn(5, 2), torch.nn.Linear(3, 2)


def weighted(path: str, out: Path) -> None:
    """One backward pass of a Linear on unequal shares of 5 samples (rank 0: 4, rank 1: 1, as an epoch's last partial
    batch can split), its gradient averaged over ranks with the samples of each (average_gradients(samples=...))."""
    x, y, net = unequal_shares()
    mine = slice(0, 4) if dist.rank() == 0 else slice(4, 5)
    torch.nn.functional.mse_loss(net(x[mine]), y[mine]).backward()
    dist.average_gradients(net, samples=len(x[mine]))
    torch.save([p.grad for p in net.parameters()], out / f"rank{dist.rank()}.pt")


def script(out: Path, module: str, args: list[str]) -> None:
    def threads_at_exit() -> None:
        names = []
        for task in os.listdir("/proc/self/task"):
            try:
                names.append((Path("/proc/self/task") / task / "comm").read_text().strip())
            except (FileNotFoundError, ProcessLookupError):  # a thread that ended since the listing (ENOENT, ESRCH)
                pass
        (out / f"threads-rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(names))

    atexit.register(threads_at_exit)
    sys.argv = [f"{module}.py", *args]
    runpy.run_module(module, run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1] == "script":
        script(Path(sys.argv[2]), sys.argv[3], sys.argv[4:])
        sys.exit(0)
    mode, data_path, out_dir = sys.argv[1:4]
    if dist.launched():
        dist.init(torch.device("cpu"))
    {"shard": shard, "step": step, "weighted": weighted}[mode](data_path, Path(out_dir))
    dist.finish()
