"""The one timer of the benchmarks: a method script's own stage run with a window log in place of wandb (run_stage,
time_stage), the data path beside a per-sample DataLoader (data_throughput), synthetic data (write_synthetic,
write_stage_data). Its command line prints the median ms of a stage-1 update and of its parts (data, forward +
backward, optimizer); --pairs alternates fp32 and bf16 blocks in one process so machine drift falls on both alike.

    python -m scripts.bench.timing --method=laom --updates=40                      # this project's update
    python -m scripts.bench.timing --pairs=8 --updates=4 --threads=1               # fp32 against bf16 autocast
"""

import bisect
import contextlib
import dataclasses
import functools
import importlib
import io
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional
from unittest import mock

import h5py
import numpy as np
import pyrallis
import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook
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


def write_synthetic(path: str, cfg: DataBenchConfig) -> None:
    """Random frames, 6 actions and 17 states in the released layout (content does not matter for throughput)."""
    rng = np.random.default_rng(0)
    n = cfg.trajectory_length
    with h5py.File(path, "w") as f:
        f.attrs.update(dict(domain_name="cheetah", task_name="run", difficulty="scale_easy_video_hard", dynamic=True))
        f.attrs.update(dict(img_hw=cfg.img_hw, split="train"))
        for i in range(cfg.num_trajectories):
            g = f.create_group(str(i))
            g["obs"] = rng.integers(0, 256, (n, cfg.img_hw, cfg.img_hw, 3), dtype=np.uint8)
            g["actions"] = rng.uniform(-1, 1, (n, 6)).astype(np.float32)
            g["states"] = rng.normal(size=(n, 17)).astype(np.float32)
            g.attrs["traj_return"] = 0.0


class PerSampleDataset(Dataset):
    """The naive path: one sample at a time, frame stacks built with numpy, collated by the DataLoader."""

    def __init__(self, path: str, frame_stack: int, offset: int):
        with h5py.File(path, "r") as f:
            groups = [f[k] for k in sorted((k for k in f if k.isdigit()), key=int)]
            self.obs, self.actions, self.states = ([g[k][:] for g in groups] for k in ("obs", "actions", "states"))
        self.index = [(i, t) for i, obs in enumerate(self.obs) for t in range(len(obs) - offset)]
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


def data_throughput(path: str, cfg: DataBenchConfig, device: torch.device) -> tuple[float, float]:
    """Samples/s of LAOM's stage-1 batches: this project's batched indexing, then a per-sample Dataset + DataLoader."""
    offset, batch = cfg.future_obs_offset, cfg.batch_size
    data = load_dataset(path, device, cfg.frame_stack, offset)
    batches = infinite_epochs(data, data.valid_indices(offset), batch)

    def one():
        return data.batch(next(batches), cfg.frame_stack, future_offset=offset, next_obs=True)

    fast = samples_per_s(one, 3, cfg.data_batches, batch, device)
    loader = DataLoader(PerSampleDataset(path, cfg.frame_stack, offset), batch, True, num_workers=cfg.naive_num_workers)
    it = iter(loader)
    count = min(cfg.data_batches, len(loader) - 1)
    return fast, samples_per_s(lambda: [x.to(device) for x in next(it)], 1, count, batch, device)


def samples_per_s(one, warmup: int, count: int, batch: int, device: torch.device) -> float:
    """Samples per second of `count` calls of `one` (`batch` samples each) after `warmup` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda _: None
    for i in range(warmup + count):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        one()
    sync(device)
    return count * batch / (time.perf_counter() - start)


@dataclass(frozen=True)
class StageSpec:
    module: str  # the method script
    function: str  # its stage function
    section: str  # the stage's config section
    config: str  # the paper's YAML of the method
    frozen: Optional[str] = None  # the network the stage function takes (from the script's build_models)


LATENT_ACTION_STAGES = [("lam", "lapo", None), ("latent_bc", "bc", "lam"), ("decoder", "decoder", "actor")]
STAGES = {
    f"{m}/{name}": StageSpec(f"train_{m}", f"train_{name}", section, f"configs/{m.replace('_', '-')}.yaml", frozen)
    for m in ("lapo", "laom", "laom_labels")
    for name, section, frozen in LATENT_ACTION_STAGES
}
STAGES["idm/idm"] = StageSpec("train_idm", "train_idm", "idm", "configs/idm.yaml")
STAGES["idm/bc"] = StageSpec("train_idm", "train_bc", "bc", "configs/idm.yaml", "idm")
STAGES["bc/bc"] = StageSpec("train_bc", "train_bc", "bc", "configs/bc.yaml")
# Networks small enough for the CPU self-check (scale=tiny), by section; LAOM's LAM adds its heads.
TINY = {"lapo": ["encoder_scale=1", "latent_action_dim=128"], "bc": ["encoder_scale=2"], "decoder": ["hidden_dim=64"]}
TINY["idm"] = ["encoder_scale=1", "act_head_dim=128"]


class EnoughUpdates(Exception):
    """WindowLog has the logged updates it was asked for: the stage stops before its final checkpoint and metrics."""


class WindowLog:
    """The wandb sink of a timed stage: time and FLOPs at each logged update; ends the stage after `stop_after`."""

    def __init__(self, step_key: str, counter: Optional[FlopCounterMode] = None, stop_after: Optional[int] = None):
        self.step_key, self.counter, self.stop_after = step_key, counter, stop_after
        self.times, self.flops, self.module_flops, self.values = [], [], [], []

    def start(self) -> None:
        pass

    finish = start

    def log(self, values: dict, *args, **kwargs) -> None:
        if self.step_key not in values:  # the stage's final metrics
            return
        self.times.append(time.perf_counter())
        self.values.append(values)
        if self.counter is not None:
            self.flops.append(self.counter.get_total_flops())
            counts = self.counter.get_flop_counts()  # module name -> op -> FLOPs so far
            self.module_flops.append({m: sum(ops.values()) for m, ops in counts.items()})
        if self.stop_after is not None and len(self.times) >= self.stop_after:
            raise EnoughUpdates


def stage_args(key: str, spec: StageSpec, tiny: bool, data_path: str, batch: Optional[int], updates: int) -> list[str]:
    """Command-line overrides of a timed stage: `data_path`, no evaluation, probes on one batch, `updates` updates."""
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
    if tiny:  # every section tiny: a frozen network is built from its own section
        heads = ["act_head_dim=128", "obs_head_dim=128"] if spec.module.startswith("train_laom") else []
        args += [f"--{name}.{a}" for name in sections for a in TINY[name] + (heads if name == "lapo" else [])]
    if batch is not None:
        args += [f"--{s}.batch_size={batch}"]
    return args


def parse_stage_config(spec: StageSpec, args: list[str], device: torch.device, run_dir: str, **top):
    """(the method script's module, its Config from spec.config with `args` and the top-level fields)."""
    module = importlib.import_module(spec.module)
    top_args = [f"--run_dir={run_dir}", "--wandb_mode=disabled", f"--device={device}", "--checkpoint_every=1000000000"]
    top_args += [f"--{k}={v}" for k, v in top.items()]
    return module, pyrallis.parse(config_class=module.Config, config_path=spec.config, args=args + top_args)


@functools.cache
def stage_config(spec: StageSpec):
    """A stage's method script Config from its YAML alone, parsed once (a projection asks about a hundred times)."""
    return parse_stage_config(spec, [], torch.device("cpu"), "unused")[1]


def labeled_batch(spec: StageSpec, batch: int) -> int:
    """LAOM + supervision's labeled samples at unlabeled batch `batch`, in its config's ratio (128 per 512)."""
    c = stage_config(spec).lapo
    labeled = batch * c.labeled_batch_size / c.batch_size
    if labeled != int(labeled) or labeled < 1:
        raise ValueError(
            f"laom_labels/lam at a batch of {batch}: its labeled batch ({c.labeled_batch_size} per {c.batch_size}) "
            f"would be {labeled:g} samples; give a batch that makes it a whole number (a multiple of 4)"
        )
    return int(labeled)


def run_stage(
    key: str,
    data_path: str,
    device: torch.device,
    tiny: bool,
    updates: int,
    log_every: int,
    batch: Optional[int] = None,
    counter: Optional[FlopCounterMode] = None,
    stop_after: Optional[int] = None,
    run_dir: Optional[str] = None,
    config: Optional[str] = None,
    args: tuple[str, ...] = (),
    functions: Optional[dict] = None,
    **top,
) -> WindowLog:
    """Runs one stage function of a method script for about `updates` updates of `batch` (None: the config's) on
    `device`, in `run_dir` (None: temporary); returns its window log. `config` (None: the paper's YAML), `args`, `top`
    override; `functions` replace the script's while it runs."""
    spec = dataclasses.replace(STAGES[key], config=config or STAGES[key].config)
    args = stage_args(key, spec, tiny, data_path, batch, updates) + list(args)
    if key == "laom_labels/lam" and batch is not None:  # its labeled batch keeps its ratio to the batch
        args += [f"--lapo.labeled_batch_size={labeled_batch(spec, batch)}"]
    with tempfile.TemporaryDirectory() as tmp:
        module, cfg = parse_stage_config(spec, args, device, run_dir or tmp, **top, log_every=log_every)
        log = WindowLog(f"{spec.section}/step", counter, stop_after)
        run = dataclasses.replace(start_run(cfg), wandb=log)
        # Networks built on `device`: LAPO's orthogonal init of its 212M-parameter LAM took minutes on a CPU.
        build = module.build_models

        def build_on_device(*args, **kwargs):
            with torch.device(device):
                return build(*args, **kwargs)

        functions = {"build_models": build_on_device, **(functions or {})}
        with contextlib.redirect_stderr(io.StringIO()) as progress, mock.patch.multiple(module, **functions):
            inputs = []
            if spec.frozen:  # written by write_synthetic: 6 actions, 17 states, 64 px
                frozen = module.build_models(cfg, Shapes(6, 17, 64), spec.frozen)[spec.frozen]
                inputs = [frozen.eval().requires_grad_(False)]
            try:
                getattr(module, spec.function)(run, *inputs)
            except EnoughUpdates:
                pass
            except BaseException:
                sys.stderr.write(progress.getvalue()[-4000:])  # the progress bars
                raise
    return log


def time_stage(
    key: str, data_path: str, device: torch.device, tiny: bool, batch: Optional[int], window: int, windows: int, **kw
):
    """(seconds per update, peak GPU GiB or None, warm-up seconds) of a stage over `windows` windows after a
    warm-up one (no checkpoint; kw: run_stage's)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    updates = (windows + 1) * window
    log = run_stage(key, data_path, device, tiny, updates, window, batch, stop_after=windows + 1, **kw)
    if len(log.times) < windows + 1:
        raise RuntimeError(f"{key}: {len(log.times)} logged windows; expected {windows + 1} (data too small?)")
    gaps = np.diff(log.times[: windows + 1]) / window
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return float(statistics.median(gaps)), memory, log.times[0] - start


def write_stage_data(path: str, batch: int, updates: int, offset: int = 10, steps: int = 1000) -> None:
    """Synthetic frames (released layout, 64 px) for `updates` stage-1 updates of `batch`; trajectories <= `steps`."""
    samples = updates * batch
    length = min(steps, samples + offset + 1)
    n = math.ceil(samples / (length - offset))
    write_synthetic(path, DataBenchConfig(num_trajectories=n, trajectory_length=length, img_hw=64))


@dataclass
class UpdateBenchConfig:
    method: str = "laom"  # lapo | laom
    data_path: str = "data/example-data.hdf5"  # any dataset in the released layout
    updates: int = 40  # timed updates (with --pairs: updates per block, each block warmed up by as many first)
    warmup: int = 3  # untimed updates first (at least 1)
    batch_size: int = 32
    encoder_scale: int = 1
    encoder_num_res_blocks: int = 1  # studies/small/configs
    latent_action_dim: int = 0  # 0: studies/small/configs's (LAPO 128, LAOM 1024)
    head_dim: int = 256  # LAOM's act / obs heads
    threads: int = 1
    release_adam: bool = False  # torch.optim.Adam(W) with its default implementation (the release's optimizer)
    pairs: int = 0  # >0: that many (fp32 block, bf16 block) pairs of configs/example/<method>.yaml's stage 1 instead
    config: Optional[str] = None  # --pairs: the YAML whose stage-1 networks are timed (None: the example config)
    device: str = "cpu"  # --pairs: cpu or cuda


def release_optimizer(model, kind: str, lr: float, weight_decay: Optional[float] = None) -> torch.optim.Optimizer:
    """The release's optimizer: torch.optim.Adam(W) over all parameters, its default (for-each) implementation."""
    return (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(model.parameters(), lr=lr)


def precision_pairs(c: UpdateBenchConfig) -> None:
    """fp32 against bf16 autocast in alternating blocks: median seconds per update of each, median bf16 / fp32 ratio
    of the pairs (docs/FAITHFULNESS.md, "Precision on the CPU")."""
    config = c.config or f"configs/example/{c.method}.yaml"
    seconds, ratios = {"fp32": [], "bf16": []}, []
    for i in range(c.pairs):
        for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            key, device, args = f"{c.method}/lam", torch.device(c.device), [f"--lapo.num_epochs={10**6}"]
            kwargs = dict(config=config, args=args, precision=precision)
            timed = time_stage(key, c.data_path, device, False, c.batch_size, c.updates, 1, **kwargs)
            seconds[precision].append(timed[0])
        ratios.append(seconds["bf16"][-1] / seconds["fp32"][-1])
    fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
    print(f"{c.threads} thread(s), {c.batch_size} samples per update: fp32 {fp32:.4f} s, bf16 {bf16:.4f} s (medians)")
    print(f"bf16 / fp32 per pair: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")


def main(c: UpdateBenchConfig) -> None:
    if c.method not in ("lapo", "laom"):
        raise SystemExit(f"error: --method={c.method!r}; expected lapo or laom")
    torch.set_num_threads(c.threads)
    if c.pairs > 0:
        return precision_pairs(c)
    sizes = dict(batch_size=c.batch_size, encoder_scale=c.encoder_scale, num_epochs=10**6)
    sizes |= dict(encoder_num_res_blocks=c.encoder_num_res_blocks)
    sizes |= dict(latent_action_dim=c.latent_action_dim or (128 if c.method == "lapo" else 1024))
    if c.method == "laom":
        sizes |= dict(act_head_dim=c.head_dim, obs_head_dim=c.head_dim)
    # The start of every module's forward and every optimizer step (a forward pre-hook returning None keeps the input).
    fwd, opt = [], []
    hooks = [register_module_forward_pre_hook(lambda *_: fwd.append(time.perf_counter()))]
    hooks.append(register_optimizer_step_pre_hook(lambda *_: opt.append(time.perf_counter())))
    functions = {"make_optimizer": release_optimizer} if c.release_adam else {}
    n, args = max(1, c.warmup) + c.updates, [f"--lapo.{k}={v}" for k, v in sizes.items()]
    try:
        log = run_stage(f"{c.method}/lam", c.data_path, torch.device("cpu"), False, n, 1, stop_after=n,
                        args=args, functions=functions, precision="fp32")  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    if len(log.times) < n:
        raise SystemExit(f"error: {c.data_path} gave {len(log.times)} updates; expected {n}")
    timed = range(n - c.updates, n)

    def first(times: list, i: int) -> float:  # the first of `times` in update i (after update i - 1 was logged)
        return times[bisect.bisect(times, log.times[i - 1])]

    parts = {
        "data": [first(fwd, i) - log.times[i - 1] for i in timed],
        "forward_backward": [first(opt, i) - first(fwd, i) for i in timed],
        "optimizer": [log.times[i] - first(opt, i) for i in timed],
    }
    med = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(med.values())
    shares = ", ".join(f"{k} {v * 1000:.1f} ms ({v / total:.0%})" for k, v in med.items())
    adam = "torch.optim default" if c.release_adam else "fused"
    print(f"{c.method} batch {c.batch_size}, scale {c.encoder_scale}, {c.encoder_num_res_blocks} res unit(s), "
          f"{c.threads} thread(s), Adam {adam}: {total * 1000:.1f} ms per update ({shares})")  # fmt: skip


if __name__ == "__main__":
    main(pyrallis.parse(config_class=UpdateBenchConfig))
