"""Throughput benchmark: the data pipeline (vs a naive per-sample DataLoader) and each method's stage-1 update.

    python -m scripts.benchmark                       # synthetic data in the released layout, CPU-sized models
    python -m scripts.benchmark --paper_scale         # the paper's networks (use on a GPU)
    python -m scripts.benchmark --data_path data/cheetah-run.hdf5 --device cuda --paper_scale

The data pipeline is measured on LAOM's stage-1 batches (o_t, o_{t+1}, o_{t+k}, actions, states; frame stack 3,
offsets 1..10, batch 512) delivered as uint8 tensors on the device (the [-1, 1] scaling that follows is the same
for both paths and is part of the update). The naive path is what a
straightforward implementation does: a torch Dataset whose __getitem__ builds one sample's frame stacks from
the same in-memory arrays with numpy, and a DataLoader that collates them. The last line of the table is
`data pipeline speedup vs per-sample loader: <N>x`. Results also go to --out (JSON).
"""

import importlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import pyrallis
import torch
from torch.utils.data import DataLoader, Dataset

from src.data import load_dataset
from src.utils import get_device, infinite_epochs, set_seed, write_json


@dataclass
class BenchConfig:
    data_path: Optional[str] = None  # HDF5 dataset; None: write a synthetic one (released layout) to a temp dir
    num_trajectories: int = 20  # synthetic data: trajectories
    trajectory_length: int = 1000  # synthetic data: steps per trajectory
    img_hw: int = 64  # synthetic data: frame size
    batch_size: int = 512  # samples per batch
    frame_stack: int = 3
    future_obs_offset: int = 10
    data_batches: int = 30  # timed batches of the data pipelines
    naive_num_workers: int = 0  # DataLoader workers of the naive path
    methods: list[str] = field(default_factory=lambda: ["lapo", "laom", "laom_labels", "idm", "bc"])
    update_steps: int = 6  # timed updates per method (measured as the difference of two runs: fixed costs cancel)
    update_batch_size: Optional[int] = None  # batch of the update benchmark (None: 64 on CPU, 512 on GPU)
    paper_scale: bool = False  # the paper's networks (else small encoders / latents that fit a CPU benchmark)
    device: str = "auto"
    seed: int = 0
    out: str = "runs/benchmark.json"  # results JSON


def write_synthetic(path: str, cfg: BenchConfig, act_dim: int = 6, state_dim: int = 17) -> None:
    """Random frames in the released layout (content does not matter for throughput)."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs.update(
            dict(
                domain_name="cheetah",
                task_name="run",
                difficulty="scale_easy_video_hard",
                dynamic=True,
                img_hw=cfg.img_hw,
                split="train",
            )
        )
        n = cfg.trajectory_length
        for i in range(cfg.num_trajectories):
            g = f.create_group(str(i))
            g["obs"] = rng.integers(0, 256, (n, cfg.img_hw, cfg.img_hw, 3), dtype=np.uint8)
            g["actions"] = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
            g["states"] = rng.normal(size=(n, state_dim)).astype(np.float32)
            g.attrs["traj_return"] = 0.0


class PerSampleDataset(Dataset):
    """The naive path: one sample at a time, frame stacks built with numpy, collated by the DataLoader."""

    def __init__(self, path: str, frame_stack: int, offset: int):
        self.obs, self.actions, self.states, self.index = [], [], [], []
        with h5py.File(path, "r") as f:
            for i, k in enumerate(sorted((k for k in f if k.isdigit()), key=int)):
                self.obs.append(f[k]["obs"][:])
                self.actions.append(f[k]["actions"][:])
                self.states.append(f[k]["states"][:])
                self.index += [(i, t) for t in range(len(self.obs[-1]) - offset)]
        self.k, self.offset = frame_stack, offset

    def __len__(self) -> int:
        return len(self.index)

    def stack(self, i: int, t: int) -> np.ndarray:
        frames = [self.obs[i][max(0, s)] for s in range(t - self.k + 1, t + 1)]
        return np.concatenate(frames, axis=-1).transpose(2, 0, 1)  # [3k, H, W]

    def __getitem__(self, j: int):
        i, t = self.index[j]
        k = np.random.randint(1, self.offset + 1)
        return (self.stack(i, t), self.stack(i, t + 1), self.stack(i, t + k), self.actions[i][t], self.states[i][t])


def bench_fast(path: str, cfg: BenchConfig, device: torch.device) -> float:
    data = load_dataset(path, device, cfg.frame_stack, cfg.future_obs_offset)
    valid = data.valid_indices(cfg.future_obs_offset)
    batches = infinite_epochs(data, valid, cfg.batch_size)

    def one():
        return data.batch(next(batches), cfg.frame_stack, future_offset=cfg.future_obs_offset, next_obs=True)

    for _ in range(3):
        one()
    sync(device)
    start = time.perf_counter()
    for _ in range(cfg.data_batches):
        one()
    sync(device)
    return cfg.data_batches * cfg.batch_size / (time.perf_counter() - start)


def bench_naive(path: str, cfg: BenchConfig, device: torch.device) -> float:
    ds = PerSampleDataset(path, cfg.frame_stack, cfg.future_obs_offset)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.naive_num_workers)
    it = iter(loader)

    def one():
        return [x.to(device) for x in next(it)]

    one()
    sync(device)
    start = time.perf_counter()
    count = min(cfg.data_batches, len(loader) - 1)
    for _ in range(count):
        one()
    sync(device)
    return count * cfg.batch_size / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pyrallis.wrap()
def main(cfg: BenchConfig) -> dict:
    set_seed(cfg.seed)
    device = get_device(cfg.device)
    tmp = tempfile.TemporaryDirectory()
    path = cfg.data_path
    if path is None:
        path = os.path.join(tmp.name, "synthetic.hdf5")
        write_synthetic(path, cfg)
    rows = []
    fast = bench_fast(path, cfg, device)
    naive = bench_naive(path, cfg, device)
    rows.append(("data pipeline: batched tensor indexing", fast))
    rows.append((f"data pipeline: per-sample DataLoader (num_workers={cfg.naive_num_workers})", naive))
    for method in cfg.methods:
        rows.append((f"{method}: stage-1 update", bench_update(method, path, cfg, device)))
    speedup = fast / naive
    print(f"\ndevice: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    print(f"{'what':<60} {'samples/s':>12}")
    for name, value in rows:
        print(f"{name:<60} {value:>12.1f}")
    print(f"data pipeline speedup vs per-sample loader: {speedup:.1f}x")
    out = {"device": str(device), "rows": dict(rows), "data_pipeline_speedup": speedup, "config": cfg.__dict__}
    write_json(Path(cfg.out), out)
    tmp.cleanup()
    return out


# method -> (stage-1 function, config section, config file)
STAGE1 = {
    "lapo": ("train_lam", "lapo", "configs/lapo.yaml"),
    "laom": ("train_lam", "lapo", "configs/laom.yaml"),
    "laom_labels": ("train_lam", "lapo", "configs/laom-labels.yaml"),
    "idm": ("train_idm", "idm", "configs/idm.yaml"),
    "bc": ("train_bc", "bc", "configs/bc.yaml"),
}
# Networks small enough for a CPU benchmark (the paper's with --paper_scale).
CPU_SCALE = {
    "lapo": ["--lapo.encoder_scale=1", "--lapo.latent_action_dim=128"],
    "laom": [
        "--lapo.encoder_scale=1",
        "--lapo.latent_action_dim=128",
        "--lapo.act_head_dim=128",
        "--lapo.obs_head_dim=128",
    ],
    "idm": ["--idm.encoder_scale=1", "--idm.act_head_dim=128"],
    "bc": ["--bc.encoder_scale=2"],
}
CPU_SCALE["laom_labels"] = CPU_SCALE["laom"]


def write_update_data(path: str, num_batches: int, batch_size: int, cfg: BenchConfig) -> None:
    """num_batches trajectories of batch_size + K steps: one epoch of a trajectory prefix = that many updates."""
    sized = BenchConfig(
        num_trajectories=num_batches, trajectory_length=batch_size + cfg.future_obs_offset, img_hw=cfg.img_hw
    )
    write_synthetic(path, sized)


def bench_update(method: str, path: str, cfg: BenchConfig, device: torch.device) -> float:
    """Stage-1 samples/s of a method script: its own stage-1 function run for N1 and N2 updates on synthetic
    data (one epoch over N trajectories of batch_size + K steps); the difference cancels model construction,
    data loading and checkpoint writing."""
    import wandb

    fn_name, section, config_path = STAGE1[method]
    module = importlib.import_module(f"train_{method}")
    batch = cfg.update_batch_size or (512 if device.type == "cuda" else 64)
    n1, n2 = 2, 2 + cfg.update_steps
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "updates.hdf5")
        write_update_data(data_path, n2, batch, cfg)
        for n in (n1, n2, n1, n2):  # first pair warms up (caches, cudnn autotuning)
            args = [
                f"--{section}.data_path={data_path}",
                f"--{section}.max_trajectories={n}",
                f"--{section}.batch_size={batch}",
                f"--run_dir={tmp}/run{len(times)}",
                "--wandb_mode=disabled",
                f"--device={device}",
                "--log_every=1000000",
                "--checkpoint_every=1000000",
            ]
            args += [f"--{section}.num_epochs=1"] if section == "lapo" else [f"--{section}.total_updates={n}"]
            if method == "laom_labels":
                args += [f"--lapo.labeled_data_path={data_path}", "--lapo.labeled_batch_size=" + str(batch // 4)]
            if section == "bc":
                args += ["--bc.eval_episodes=0"]
            if not cfg.paper_scale:
                args += CPU_SCALE[method]
            run_cfg = pyrallis.parse(config_class=module.Config, config_path=config_path, args=args)
            run = wandb.init(mode="disabled")
            sync(device)
            start = time.perf_counter()
            getattr(module, fn_name)(run_cfg, Path(run_cfg.run_dir), device, run)
            sync(device)
            times.append(time.perf_counter() - start)
            run.finish()
    return (n2 - n1) * batch / max(1e-9, times[3] - times[2])


if __name__ == "__main__":
    main()
