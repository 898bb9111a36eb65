"""What both benchmarks time (scripts.bench.benchmark and scripts.bench.device_bench import it; it imports neither).

- Synthetic data in the released layout (write_synthetic, write_stage_data): random frames, content does not matter
  for throughput.
- The data path: this project's batched indexing of frames held in memory (src.data, bench_fast) next to a
  straightforward per-sample torch Dataset + DataLoader (bench_naive), both delivering LAOM's stage-1 batches.
- A method script's own stage function (STAGES: train_<method>.<stage>) run on synthetic data with a window log in
  place of wandb (run_stage), and its seconds per update (time_stage); TINY holds the networks of the CPU rows.
"""

import contextlib
import dataclasses
import importlib
import io
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import h5py
import numpy as np
import pyrallis
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from src.data import Shapes, load_dataset
from src.run import start_run
from src.stage import infinite_epochs


@dataclass
class DataBenchConfig:
    """The synthetic data and the data path's batches (scripts.bench.benchmark's command line extends it)."""

    num_trajectories: int = 20  # synthetic data: trajectories
    trajectory_length: int = 1000  # synthetic data: steps per trajectory
    img_hw: int = 64  # synthetic data: frame size
    batch_size: int = 512  # samples per batch
    frame_stack: int = 3
    future_obs_offset: int = 10
    data_batches: int = 30  # timed batches of the data pipelines
    naive_num_workers: int = 0  # DataLoader workers of the naive path


def write_synthetic(path: str, cfg: DataBenchConfig, act_dim: int = 6, state_dim: int = 17) -> None:
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


def bench_fast(path: str, cfg: DataBenchConfig, device: torch.device) -> float:
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


def bench_naive(path: str, cfg: DataBenchConfig, device: torch.device) -> float:
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


@dataclass(frozen=True)
class StageSpec:
    module: str  # the method script
    function: str  # its stage function
    section: str  # the stage's config section
    config: str  # the paper's YAML of the method
    frozen: Optional[str] = None  # the network the stage function takes (from the script's build_models)


STAGES = {
    "lapo/lam": StageSpec("train_lapo", "train_lam", "lapo", "configs/lapo.yaml"),
    "lapo/latent_bc": StageSpec("train_lapo", "train_latent_bc", "bc", "configs/lapo.yaml", "lam"),
    "lapo/decoder": StageSpec("train_lapo", "train_decoder", "decoder", "configs/lapo.yaml", "actor"),
    "laom/lam": StageSpec("train_laom", "train_lam", "lapo", "configs/laom.yaml"),
    "laom/latent_bc": StageSpec("train_laom", "train_latent_bc", "bc", "configs/laom.yaml", "lam"),
    "laom/decoder": StageSpec("train_laom", "train_decoder", "decoder", "configs/laom.yaml", "actor"),
    "laom_labels/lam": StageSpec("train_laom_labels", "train_lam", "lapo", "configs/laom-labels.yaml"),
    "laom_labels/latent_bc": StageSpec("train_laom_labels", "train_latent_bc", "bc", "configs/laom-labels.yaml", "lam"),
    "laom_labels/decoder": StageSpec(
        "train_laom_labels", "train_decoder", "decoder", "configs/laom-labels.yaml", "actor"
    ),
    "idm/idm": StageSpec("train_idm", "train_idm", "idm", "configs/idm.yaml"),
    "idm/bc": StageSpec("train_idm", "train_bc", "bc", "configs/idm.yaml", "idm"),
    "bc/bc": StageSpec("train_bc", "train_bc", "bc", "configs/bc.yaml"),
}
# Networks small enough for the CPU self-check (scale=tiny; scripts.bench.benchmark's CPU update rows).
TINY = {
    "lapo": ["--encoder_scale=1", "--latent_action_dim=128"],
    "lapo_laom": ["--encoder_scale=1", "--latent_action_dim=128", "--act_head_dim=128", "--obs_head_dim=128"],
    "bc": ["--encoder_scale=2"],
    "decoder": ["--hidden_dim=64"],
    "idm": ["--encoder_scale=1", "--act_head_dim=128"],
}


class EnoughUpdates(Exception):
    """Raised by WindowLog once it has the logged updates it was asked for: the stage stops there, before its final
    checkpoint (1-2.5 GB at the paper's configs) and final metrics, which a measurement does not need."""


class WindowLog:
    """The wandb sink of a benchmarked stage: at each logged update, the time and (while counting) the FLOPs so far;
    after `stop_after` logged updates it ends the stage (EnoughUpdates)."""

    def __init__(self, step_key: str, counter: Optional[FlopCounterMode] = None, stop_after: Optional[int] = None):
        self.step_key, self.counter, self.stop_after = step_key, counter, stop_after
        self.times, self.flops, self.module_flops, self.values = [], [], [], []

    def start(self) -> None:
        pass

    def log(self, values: dict, *args, **kwargs) -> None:
        if self.step_key in values:  # a logged update (not the stage's final metrics)
            self.times.append(time.perf_counter())
            self.values.append(values)
            if self.counter is not None:
                self.flops.append(self.counter.get_total_flops())
                counts = self.counter.get_flop_counts()  # module name -> op -> FLOPs so far
                self.module_flops.append({m: sum(ops.values()) for m, ops in counts.items()})
            if self.stop_after is not None and len(self.times) >= self.stop_after:
                raise EnoughUpdates

    def finish(self) -> None:
        pass


@contextlib.contextmanager
def networks_on(module, device: torch.device):
    """The method script's build_models makes its networks directly on `device` while the block runs (its stage
    functions build on the CPU and copy: LAPO's orthogonal initialisation of its 212M-parameter LAM took minutes
    on a CPU). Only the networks: the data pipeline keeps the host buffers it creates without a device."""
    build = module.build_models

    def build_on_device(*args, **kwargs):
        with torch.device(device):
            return build(*args, **kwargs)

    module.build_models = build_on_device
    try:
        yield
    finally:
        module.build_models = build


def stage_args(key: str, spec: StageSpec, tiny: bool, data_path: str, batch: Optional[int], updates: int) -> list[str]:
    """Command-line overrides of a benchmarked stage: the synthetic data everywhere, no evaluation, no probes
    beyond one batch, `updates` updates (whole epochs where the stage counts epochs: the data is sized for it)."""
    config_cls = importlib.import_module(spec.module).Config
    sections = [f.name for f in dataclasses.fields(config_cls) if dataclasses.is_dataclass(f.type)]
    args = [f"--{s}.data_path={data_path}" for s in sections]
    s = spec.section
    if s == "lapo":
        args += [f"--{s}.num_epochs=1", f"--{s}.final_probe_batches=1", f"--{s}.ridge_probe_samples=0"]
        args += [f"--{s}.eval_data_path=null", f"--{s}.warmup_epochs=0"]
    if s in ("bc", "decoder"):
        args += [f"--{s}.eval_episodes=0"]
    if s in ("decoder", "idm") or key == "bc/bc":
        args += [f"--{s}.total_updates={updates}"]
    else:
        args += [f"--{s}.num_epochs=1"]
    if s == "idm":
        args += [f"--{s}.eval_data_path=null"]
    if key.startswith("laom_labels"):  # its decoder trains on lapo.labeled_data_path
        args += [f"--lapo.labeled_data_path={data_path}"]
    if tiny:
        method = spec.module.removeprefix("train_")
        lam = TINY["lapo_laom"] if method.startswith("laom") else TINY["lapo"]
        sec = {"lapo": lam, "bc": TINY["bc"], "decoder": TINY["decoder"], "idm": TINY["idm"]}
        for name in sections:  # every section tiny: a frozen network is built from its own section
            args += [f"--{name}.{a.removeprefix('--')}" for a in sec[name]]
    if batch is not None:
        args += [f"--{s}.batch_size={batch}"]
    return args


def parse_stage_config(spec: StageSpec, args: list[str], device: torch.device, run_dir: str, **top):
    """(the method script's module, its Config from the paper's YAML with `args` and the top-level fields)."""
    module = importlib.import_module(spec.module)
    top_args = [f"--run_dir={run_dir}", "--wandb_mode=disabled", f"--device={device}", "--checkpoint_every=1000000000"]
    top_args += [f"--{k}={v}" for k, v in top.items()]
    return module, pyrallis.parse(config_class=module.Config, config_path=spec.config, args=args + top_args)


def run_stage(
    key: str,
    data_path: str,
    device: torch.device,
    tiny: bool,
    updates: int,
    log_every: int,
    batch: Optional[int] = None,
    compile: bool = False,
    counter: Optional[FlopCounterMode] = None,
    stop_after: Optional[int] = None,
    run_dir: Optional[str] = None,
) -> WindowLog:
    """Runs one stage function of a method script for about `updates` updates (`batch` samples each; None: the
    config's), its networks built on `device`, and returns its window log; with `stop_after`, the stage ends after
    that many logged updates (no final checkpoint, no final metrics). Its run directory: `run_dir`, else a temporary
    one. LAOM + supervision's labeled batch keeps its ratio to the batch."""
    spec = STAGES[key]
    args = stage_args(key, spec, tiny, data_path, batch, updates)
    if key == "laom_labels/lam" and batch is not None:
        c = parse_stage_config(spec, [], device, "unused")[1].lapo
        labeled = batch * c.labeled_batch_size / c.batch_size
        if labeled != int(labeled) or labeled < 1:
            raise ValueError(
                f"{key} at a batch of {batch}: its labeled batch ({c.labeled_batch_size} per {c.batch_size}) would be "
                f"{labeled:g} samples; give a batch that makes it a whole number (a multiple of 4)"
            )
        args += [f"--lapo.labeled_batch_size={int(labeled)}"]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = run_dir or tmp
        module, cfg = parse_stage_config(spec, args, device, run_dir, log_every=log_every, compile=compile)
        log = WindowLog(f"{spec.section}/step", counter, stop_after)
        run = dataclasses.replace(start_run(cfg), wandb=log)
        inputs = []
        if spec.frozen:  # written by write_synthetic: 6 actions, 17 states, 64 px
            with torch.device(device):
                frozen = module.build_models(cfg, Shapes(6, 17, 64), spec.frozen)[spec.frozen]
            inputs = [frozen.eval().requires_grad_(False)]
        with contextlib.redirect_stderr(io.StringIO()) as progress, networks_on(module, device):  # progress bars
            try:
                getattr(module, spec.function)(run, *inputs)
            except EnoughUpdates:
                pass
            except BaseException:
                sys.stderr.write(progress.getvalue()[-4000:])
                raise
    return log


def time_stage(
    key: str,
    data_path: str,
    device: torch.device,
    tiny: bool,
    batch: Optional[int],
    window: int,
    windows: int,
    compile: bool,
    run_dir: Optional[str] = None,
):
    """(seconds per update, peak GPU memory in GiB or None, seconds of the warm-up window) of a stage: one warm-up
    window and `windows` timed ones, then the stage stops (no checkpoint written; run_dir: as run_stage's)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    updates = (windows + 1) * window
    log = run_stage(key, data_path, device, tiny, updates, window, batch, compile, None, windows + 1, run_dir)
    if len(log.times) < windows + 1:
        raise RuntimeError(f"{key}: {len(log.times)} logged windows; expected {windows + 1} (data too small?)")
    gaps = np.diff(log.times[: windows + 1]) / window
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return float(statistics.median(gaps)), memory, log.times[0] - start


def write_stage_data(path: str, batch: int, updates: int, offset: int = 10, steps: int = 1000) -> None:
    """Synthetic frames (released layout, 64 px) for `updates` stage-1 updates of `batch` samples: whole
    trajectories of at most `steps` steps."""
    samples = updates * batch
    length = min(steps, samples + offset + 1)
    n = math.ceil(samples / (length - offset))
    write_synthetic(path, DataBenchConfig(num_trajectories=n, trajectory_length=length, img_hw=64))
