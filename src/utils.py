"""Small helpers every method script uses identically: seeding, devices and precision, optimizers and
learning-rate schedules, EMA targets, run directories, atomic checkpoints and results, wandb, NaN guard."""

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyrallis
import torch
import torch.nn as nn

from src import dist


@dataclasses.dataclass
class RunConfig:
    """Fields every method script has at the top level of its config (CLI: --seed, --run_dir, ...)."""

    project: str = "laom"  # wandb project
    group: str = "default"  # wandb group
    name: str = "run"  # run name (wandb and default run directory)
    run_dir: Optional[str] = None  # where checkpoints, config and results.json go; default runs/<name>-seed<seed>
    seed: int = 0  # global seed (data order, initialisation, augmentations)
    device: str = "auto"  # "auto" (cuda if available), "cuda", "cpu"
    frames_device: str = "auto"  # where frames live: "auto" (GPU if they fit, else pinned host), "cpu", "pinned"
    wandb_mode: str = "offline"  # online / offline / disabled
    log_every: int = 100  # updates between logged metrics (the only host syncs of a training loop)
    checkpoint_every: int = 2000  # updates between resumable stage checkpoints
    eval_num_envs: int = 5  # parallel evaluation environments (worker processes)
    eval_max_episode_steps: int = 1000  # episode length of evaluation rollouts (1000 in the paper)
    precision: str = "auto"  # training autocast: "auto" (bf16 on CUDA, as the paper; fp32 on CPU), "bf16", "fp32"

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / f"{self.name}-seed{self.seed}"


# ---------------------------------------------------------------- seeding, devices, precision


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRECISIONS = ("auto", "bf16", "fp32")
_precision = {"bf16": None}  # set by setup_backends: whether autocast() turns bf16 on (None: decide per device)


def setup_backends(device: torch.device, precision: str = "auto") -> None:
    """TF32 allowed and cudnn benchmark on, as in the reference runs on H100; the precision of autocast().

    precision: "auto" (bf16 autocast on CUDA, as the paper's runs; fp32 on CPU), "bf16" (bf16 autocast on any
    device), "fp32" (no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; valid: {list(PRECISIONS)}")
    _precision["bf16"] = None if precision == "auto" else precision == "bf16"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device):
    """bf16 autocast for training steps (see setup_backends). Stage-2 LAM labels and evaluation rollouts never run
    under it (fp32, as released)."""
    bf16 = _precision["bf16"]
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------- optimisation


def make_optimizer(
    model: nn.Module | list[nn.Parameter], kind: str, lr: float, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """Adam or AdamW; parameters with fewer than 2 dimensions (biases, norms) are never weight-decayed."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else list(model)
    wd = weight_decay or 0.0
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # The fused kernel (one pass over each parameter instead of a dozen elementwise ops) computes the same update to
    # float rounding; 2.3x faster than the default on a 2-core CPU for a small LAOM (docs/small-reproduction).
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                for p in params)  # fmt: skip
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    raise ValueError(f"unknown optimizer {kind!r}; expected 'adam' or 'adamw'")


LR_SCHEDULES = ("linear", "cosine", "constant", "cooldown")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    total_updates: int,
    warmup_updates: int,
    kind: str = "linear",
    cooldown_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over warmup_updates, then:
    - "linear": linear decay to 0 at the last update (the released code's LAM, latent BC, decoder and IDM);
    - "cosine": cosine decay to 0 (the paper's text);
    - "constant": no decay;
    - "cooldown": constant, then over the last cooldown_ratio of the updates a decay of 1 - sqrt(progress through
      the cooldown) (the released BC baseline; its cooldown_ratio 0 means constant after warm-up).
    For "linear" and "cosine", cooldown_ratio > 0 holds the rate after warm-up and decays over that final
    fraction only."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; valid: {list(LR_SCHEDULES)}")
    if not 0.0 <= cooldown_ratio <= 1.0:
        raise ValueError(f"cooldown_ratio must be in [0, 1], got {cooldown_ratio}")
    total = max(1, total_updates)
    warmup = min(max(0, warmup_updates), total - 1)
    if cooldown_ratio > 0:
        decay_start = max(warmup, int(round(total * (1.0 - cooldown_ratio))))
    else:
        decay_start = total if kind == "cooldown" else warmup

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cooldown":
            return 1.0 - math.sqrt(progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, for every parameter and floating buffer."""
    tp = [p for p in target.parameters()]
    sp = [p for p in source.parameters()]
    torch._foreach_lerp_(tp, sp, tau)
    for tb, sb in zip(target.buffers(), source.buffers(), strict=True):
        if tb.dtype.is_floating_point:
            tb.lerp_(sb, tau)


class NanGuard:
    """Tracks, without a host sync, the first update whose loss was not finite; `check` raises (at log steps)."""

    def __init__(self, stage: str, device: torch.device):
        self.stage = stage
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def check(self, last_good: Path | None = None) -> None:
        """Raises when the loss of any rank was not finite: every rank of a distributed run stops at the same
        check (one all-reduce, at the host syncs that exist anyway)."""
        step = int(dist.any_rank(self.first_bad))
        if step >= 0:
            where = f"; the last good checkpoint is {last_good}" if last_good and last_good.exists() else ""
            raise FloatingPointError(f"{self.stage}: the loss became NaN or infinite at update {step}{where}")


def infinite_epochs(data, valid: torch.Tensor, batch_size: int, drop_last: bool = True):
    """Batches of indices, epoch after epoch (a fresh permutation each epoch; see TrajectoryData.epoch)."""
    while True:
        yield from data.epoch(valid, batch_size, drop_last)


# ---------------------------------------------------------------- files: run directory, checkpoints, results


def _file_mode() -> int:
    """The mode a plain open() would give a new file (0666 less the umask): results and checkpoints alike."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _replace_or_explain(tmp: Path, path: Path, write) -> None:
    """write(tmp) then rename tmp onto path; on any failure tmp is removed and the error names the file (and says
    when the disk is full)."""
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, KeyboardInterrupt):
            raise
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC
        free = shutil.disk_usage(path.parent).free
        if full or free < 16 * 2**20:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} ({free} bytes free)") from e
        raise OSError(f"could not write {path}: {e}") from e


def write_json(path: str | Path, obj) -> None:
    """Writes JSON atomically (temporary file + rename): an interrupted write leaves the old file intact. A NaN or
    infinite number is an error naming its key (the output is always valid JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bad = _non_finite(obj)
    if bad:
        raise FloatingPointError(f"{path}: {bad} is not a finite number; refusing to write it")
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=False)
    _replace_or_explain(path.with_name(path.name + ".tmp"), path, lambda tmp: tmp.write_text(text))


def _non_finite(obj, key: str = "") -> str | None:
    """The key path of the first NaN / infinite float in obj, or None."""
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        return f"{key or 'value'} = {obj}"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = ((f"[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{key}{k}" if str(k).startswith("[") else f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic | torch.Tensor):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save atomically: an interrupted or failed save never leaves a truncated checkpoint or a .tmp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_or_explain(path.with_suffix(path.suffix + ".tmp"), path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict | None:
    """The checkpoint's state dict, or None if the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=False)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_stage(
    path: Path, objects: dict, load_from: str | None = None, device: torch.device | str = "cpu"
) -> tuple[int, bool]:
    """Restores a stage from its checkpoint. Returns (first update to run, whether the stage is finished).

    objects: name -> anything with state_dict / load_state_dict (modules, optimizers, schedulers).
    load_from: a finished checkpoint of this stage from another run (e.g. one LAM reused for every label
    budget): its modules are loaded and the stage is skipped. Otherwise the run's own checkpoint `path`, if
    present, is resumed (or skipped if it is finished).
    """
    if load_from:
        state = load_checkpoint(load_from, device)
        if state is None:
            raise FileNotFoundError(f"checkpoint to load the stage from not found: {load_from}")
        if not state.get("done", False):
            raise ValueError(f"{load_from} is the checkpoint of an unfinished stage (update {state.get('step')})")
        for name, obj in objects.items():
            if isinstance(obj, nn.Module):
                obj.load_state_dict(state["objects"][name])
        return state["step"], True
    state = load_checkpoint(path, device)
    if state is None:
        return 0, False
    for name, obj in objects.items():
        obj.load_state_dict(state["objects"][name])
    if not state["done"]:
        restore_rng(state["rng"], state["step"])
    return state["step"], state["done"]


def restore_rng(saved: dict | list, step: int) -> None:
    """The RNG state of a resumed stage: a one-process checkpoint holds one state, a distributed one the state of
    every rank. Resumed with the number of processes that saved it, each process continues its own random streams
    (data order, augmentations). With another number, rank r takes rank r's saved state where there is one and
    otherwise a fresh seed from (step, rank): the run goes on as a run with another seed would."""
    states = saved if isinstance(saved, list) else [saved]
    r = dist.rank()
    if r < len(states):
        set_rng_state(states[r])
    else:
        set_seed(1_000_003 * step + r)


def save_stage(path: Path, objects: dict, step: int, done: bool) -> None:
    """Atomic stage checkpoint: the objects' state dicts, the update count, RNG states and whether it finished.
    In a distributed run every rank calls it (the RNG states of all ranks are gathered) and rank 0 writes."""
    states = dist.gather_objects(rng_state())
    if not dist.is_main():
        return
    state = {"objects": {k: v.state_dict() for k, v in objects.items()}, "step": step, "done": done}
    state["rng"] = states if dist.active() else states[0]
    save_checkpoint(path, state)


# ---------------------------------------------------------------- the run: its directory, config, results


# Config fields that change how a run is watched, not what it trains: they may differ when a run is continued.
NON_TRAINING_FIELDS = {"project", "group", "name", "run_dir", "wandb_mode", "log_every", "checkpoint_every"}
NON_TRAINING_FIELDS |= {"eval_num_envs", "frames_device", "device"}
# Counts a stage needs to be at least 1 (a 0 would divide by zero or silently train nothing).
POSITIVE_FIELDS = ("batch_size", "labeled_batch_size", "num_epochs", "total_updates", "frame_stack", "log_every")
POSITIVE_FIELDS += ("checkpoint_every", "eval_num_envs", "eval_max_episode_steps")
_locks: dict = {}  # run directory -> its open, locked file (held until the process exits)


def check_config(config) -> None:
    """Counts that must be positive (batch sizes, epochs, updates, ...) and non-negative episode counts, in every
    section of a config: a clear error naming the field instead of a ZeroDivisionError or a silent no-op."""
    sections = [("", config)] + [
        (f"{f.name}.", getattr(config, f.name))
        for f in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, f.name))
    ]
    for prefix, section in sections:
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if f.name in POSITIVE_FIELDS and value is not None and value < 1:
                raise ValueError(f"--{prefix}{f.name}={value}: expected a positive integer")
            if f.name == "eval_episodes" and value < 0:
                raise ValueError(f"--{prefix}{f.name}={value}: expected 0 (no evaluation) or more")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def lock_run_dir(run_dir: Path) -> None:
    """Makes this process the only one using run_dir (an advisory lock held until it exits); another process on
    the same directory is refused, naming the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if str(run_dir.resolve()) in _locks:  # this process holds it already (a stage run again in-process)
        return
    path = run_dir / ".lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RuntimeError(f"run directory {run_dir} is in use by {holder}; give this run another --run_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}: {' '.join(sys.argv)}\n")
    f.flush()
    _locks[str(run_dir.resolve())] = f


def prepare_run_dir(run_dir: str | Path, config) -> Path:
    """Checks the config, takes the run directory (see lock_run_dir) and writes the full config into it
    (config.yaml, config.json). A directory that already holds a run made with another config is refused, naming
    the fields that differ (fields in NON_TRAINING_FIELDS may change)."""
    check_config(config)
    run_dir = Path(run_dir)
    lock_run_dir(run_dir)
    new = dataclasses.asdict(config)
    old_path = run_dir / "config.json"
    if old_path.exists() and any(run_dir.glob("*.pt")):
        old, now = _flat(json.loads(old_path.read_text())), _flat(json.loads(json.dumps(new, default=_json_default)))
        differ = sorted(k for k in old.keys() | now.keys() if old.get(k) != now.get(k) and k not in NON_TRAINING_FIELDS)
        if differ:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in differ[:10])
            raise ValueError(
                f"{run_dir} holds a run made with another config ({details}{' ...' if len(differ) > 10 else ''}); "
                "its checkpoints would be reused for this one. Give this run another --run_dir, or delete that "
                "directory to start over."
            )
    yaml_path = run_dir / "config.yaml"
    _replace_or_explain(
        yaml_path.with_name("config.yaml.tmp"), yaml_path, lambda tmp: tmp.write_text(pyrallis.dump(config))
    )
    write_json(old_path, new)
    return run_dir


HEADLINE = ("final_action_probe_mse", "eval_action_mse", "eval_returns_mean", "normalized_score")


class Results:
    """results.json of a run: config, per-stage metrics and wall time; rewritten atomically after every stage. A
    stage skipped because it finished earlier keeps the entry of the run that trained it."""

    def __init__(self, run_dir: Path, config):
        self.path = run_dir / "results.partial.json"
        self.final_path = run_dir / "results.json"
        self.write = dist.is_main()  # in a distributed run only rank 0 writes (every rank holds the same numbers)
        self.data = {"config": dataclasses.asdict(config), "world_size": dist.world_size(), "stages": {}, "metrics": {}}
        for previous_path in (self.path, self.final_path):
            if previous_path.exists():
                previous = json.loads(previous_path.read_text())
                self.data["stages"] = previous.get("stages", {})
                break

    def stage(self, name: str, seconds: float, metrics: dict, skipped: bool = False) -> None:
        entry = {"seconds": seconds, "skipped": skipped, **metrics}
        if skipped and name in self.data["stages"]:
            entry = {**self.data["stages"][name], "skipped": True}
        self.data["stages"][name] = entry
        if self.write:
            write_json(self.path, self.data)

    def finish(self) -> dict:
        """Writes results.json (the metrics of every stage, lists aside) and prints the headline metrics."""
        for entry in self.data["stages"].values():
            self.data["metrics"].update({k: v for k, v in entry.items() if "/" in k and not isinstance(v, list)})
        self.data["total_seconds"] = sum(s.get("seconds", 0.0) for s in self.data["stages"].values())
        if not self.write:
            return self.data
        write_json(self.final_path, self.data)
        self.path.unlink(missing_ok=True)
        headline = {k: v for k, v in self.data["metrics"].items() if k.split("/")[-1] in HEADLINE and v is not None}
        print("\n".join([f"{k}: {v:.4g}" for k, v in headline.items()] + [f"results: {self.final_path}"]))
        return self.data


@dataclasses.dataclass
class Run:
    """What every stage of a run uses: its config, directory, device, wandb run and results."""

    cfg: RunConfig
    dir: Path
    device: torch.device
    wandb: object
    results: Results


def start_run(cfg: RunConfig) -> Run:
    """Device and precision, seeds, the run directory (checked and locked), wandb and results.json.

    Launched by torchrun (src/dist.py): joins the process group, device cuda:<local rank> (or the CPU), seed
    seed + rank (each rank its own data order and augmentations; the networks start from rank 0's, see
    Stage); rank 0 takes the run directory and wandb, the other ranks wait for it and log nowhere."""
    device = get_device(cfg.device) if not dist.launched() else dist.init(cfg.device)
    dist.check_batches(cfg)
    setup_backends(device, cfg.precision)
    set_seed(cfg.seed + dist.rank())
    run_dir = cfg.resolved_run_dir()
    if dist.is_main():
        prepare_run_dir(run_dir, cfg)
        wandb_run = init_wandb(cfg, cfg.project, cfg.group, cfg.name, cfg.wandb_mode, run_dir)
    else:
        check_config(config=cfg)
        wandb_run = _NoLogging()
    dist.barrier()
    return Run(cfg, run_dir, device, wandb_run, Results(run_dir, cfg))


class _NoLogging:
    """wandb of the ranks other than 0 of a distributed run: they log nothing."""

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self) -> None:
        pass


def main(train) -> None:
    """Runs a script's train() from the command line: Ctrl-C ends it with one line saying how to resume. In a
    distributed run, a rank that loses another (a node lost, a process killed) ends with one line saying so."""
    try:
        train()
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the last checkpoint of each stage is kept; run the same command to resume", file=sys.stderr
        )
        sys.exit(130)
    except (RuntimeError, dist.DistBackendError) as e:
        if not dist.active() or not dist.lost_peer(e):
            raise
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        dist.tell_stopped(f"lost contact with another rank of this run ({type(e).__name__}: {first_line})")
        sys.exit(1)
    dist.finish()


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


# ---------------------------------------------------------------- logging


def init_wandb(config, project: str, group: str, name: str, mode: str, run_dir: Path):
    """wandb run in mode online / offline / disabled, its files under the run directory."""
    import wandb

    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"wandb mode {mode!r}; expected 'online', 'offline' or 'disabled'")
    return wandb.init(
        project=project,
        group=group,
        name=name,
        mode=mode,
        dir=str(run_dir),
        config=dataclasses.asdict(config),
        reinit="finish_previous",
    )
