"""The life of a run, the same for every method script: its config fields, device and seeds, the run directory
(checked against the config and locked), wandb, results.json and the command-line entry point."""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import pyrallis
import torch

from src import dist
from src.data import check_data_file, trajectory_count
from src.errors import ConfigError, UserError, user_errors
from src.evaluation import render_on
from src.files import json_default, replace_or_explain, write_json
from src.optim import setup_backends


@dataclasses.dataclass
class RunConfig:
    """Fields every method script has at the top level of its config (CLI: --seed, --run_dir, ...)."""

    project: str = "laom"  # wandb project
    group: str = "default"  # wandb group
    name: str = "run"  # run name (wandb and default run directory)
    run_dir: Optional[str] = None  # where checkpoints, config and results.json go; default runs/<name>-seed<seed>
    seed: int = 0  # global seed (data order, initialisation, augmentations)
    device: str = "auto"  # "auto" (cuda if available, else cpu with a note), "cuda", "cuda:<index>", "cpu"
    frames_device: str = "auto"  # where frames live: "auto" (GPU if they fit, else host memory), "cpu", "pinned"
    wandb_mode: str = "offline"  # online / offline / disabled
    log_every: int = 100  # updates between logged metrics (the only host syncs of a training loop)
    checkpoint_every: int = 2000  # updates between resumable stage checkpoints
    eval_num_envs: int = 5  # parallel evaluation environments (worker processes)
    eval_max_episode_steps: int = 1000  # episode length of evaluation rollouts (1000 in the paper)
    precision: str = "auto"  # training autocast: "auto" (bf16 on CUDA and a native-bf16 CPU, as released), "fp32"
    compile: bool = False  # torch.compile the networks each stage trains (src/compile.py); off until measured on a GPU

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / f"{self.name}-seed{self.seed}"


def set_seed(seed: int) -> None:
    """Seeds python's random, numpy and torch (the CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stage_seed(seed: int, *parts) -> int:
    """A seed for one part of a run (a stage, its data order, its final metrics), from the run's seed and the part's
    names alone: the same whatever ran earlier in the process, so a resumed, skipped or reused stage leaves the next
    one exactly as an uninterrupted run does. 32 bits (numpy's limit)."""
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def seed_stage(seed: int, *parts) -> int:
    """Seeds every random stream (set_seed) from stage_seed(seed, *parts, rank): each rank of a distributed run its
    own streams (its augmentations and draws), the networks still starting from rank 0's (src/stage.py)."""
    s = stage_seed(seed, *parts, dist.rank())
    set_seed(s)
    return s


def get_device(name: str = "auto") -> torch.device:
    """The device `name` asks for, its index always explicit (torch.cuda.set_device refuses a bare "cuda"): "auto"
    is the current CUDA device when torch sees one, else the CPU (said by `no_gpu_note`); "cuda" is the current
    CUDA device (cuda:0 unless set); anything else is checked by check_device."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    device = check_device("cuda" if name == "auto" else name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def no_gpu_note(name: str) -> Optional[str]:
    """One line when "auto" falls back to the CPU on a CUDA build of torch (a driver too old for the wheel, a
    container started without GPUs): a paper-scale run would otherwise train on the CPU without a word."""
    if name != "auto" or torch.version.cuda is None or torch.cuda.is_available():
        return None
    return (
        f"note: --device=auto: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU, training on the "
        f"CPU; check the driver with nvidia-smi (it must support CUDA {torch.version.cuda}), run Docker with "
        "--gpus all, or use --device=cuda to make this an error"
    )


def check_device(name: str, flag: str = "--device") -> torch.device:
    """The device `name` ("cpu", "cuda", "cuda:1", ...) if this machine has it, else a ConfigError saying why and
    what to do: a CPU build of torch (install the CUDA build), no visible GPU, an index beyond the visible GPUs."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{flag}={name}: not a device; expected auto, cpu, cuda or cuda:<index>") from None
    if device.type != "cuda":
        return device
    if torch.version.cuda is None:
        version = torch.__version__.split("+")[0]
        raise ConfigError(
            f"{flag}={name}: the installed torch {torch.__version__} is a CPU build; install its CUDA build "
            f"(pip install --force-reinstall torch=={version}, from PyPI; see README) or run with --device=cpu"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ConfigError(
            f"{flag}={name}: torch {torch.__version__} sees no CUDA device{hidden}; check the driver with "
            "nvidia-smi, or run with --device=cpu"
        )
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"{flag}={name}: {count} CUDA device{'s are' if count > 1 else ' is'} visible (cuda:0"
            f"{f' .. cuda:{count - 1}' if count > 1 else ''}); use one of them or --device=cpu"
        )
    return device


# Config fields naming an HDF5 file the run reads (datasets, foreground masks): checked when the run starts.
DATA_FIELDS = ("data_path", "eval_data_path", "labeled_data_path", "masks_path")
# Config fields that change how a run is watched, not what it trains: they may differ when a run is continued.
NON_TRAINING_FIELDS = {"project", "group", "name", "run_dir", "wandb_mode", "log_every", "checkpoint_every"}
NON_TRAINING_FIELDS |= {"eval_num_envs", "frames_device", "device"}
# Counts a stage needs to be at least 1 (a 0 would divide by zero or silently train nothing).
POSITIVE_FIELDS = ("batch_size", "labeled_batch_size", "num_epochs", "total_updates", "frame_stack", "log_every")
POSITIVE_FIELDS += ("checkpoint_every", "eval_num_envs", "eval_max_episode_steps", "max_trajectories")
# Seeds: numpy takes 0 .. 2**32 - 1; a run adds its rank and the episode's index.
SEED_FIELDS = ("seed", "eval_seed")
WANDB_MODES = ("online", "offline", "disabled")  # checked by check_config before init_wandb runs
_locks: dict = {}  # run directory -> its open, locked file (held until the process exits)


def check_config(config) -> None:
    """Counts that must be positive (batch sizes, epochs, updates, ...), non-negative episode counts, learning rates
    and weight decays, seeds in numpy's range and the wandb mode, in every section of a config: a clear error naming
    the field before anything is read or written, instead of a library's traceback or a silent no-op. The data files
    of the sections a run will train are checked to exist and be HDF5 (not those of the stages that `lam_only` /
    `idm_only` leave out), and to hold at least the section's max_trajectories."""
    skipped = {"bc", "decoder"} if getattr(config, "lam_only", False) or getattr(config, "idm_only", False) else set()
    items = list(dist.config_fields(config))
    fields = {flag: value for flag, _, value in items}
    for flag, name, value in items:
        if name in POSITIVE_FIELDS and value is not None and value < 1:
            raise ConfigError(f"{flag}={value}: expected a positive integer")
        if name == "eval_episodes" and value < 0:
            raise ConfigError(f"{flag}={value}: expected 0 (no evaluation) or more")
        if name == "wandb_mode" and value not in WANDB_MODES:
            raise ConfigError(f"{flag}={value}: expected online, offline or disabled")
        if name in SEED_FIELDS and not 0 <= value < 2**31:
            raise ConfigError(f"{flag}={value}: expected a seed from 0 to {2**31 - 1}")
        if (name.endswith("learning_rate") or name == "weight_decay") and value is not None and not value >= 0:
            raise ConfigError(f"{flag}={value}: expected a number >= 0")
        used = flag.split(".")[0].removeprefix("--") not in skipped
        if name in DATA_FIELDS and value is not None and used:
            check_data_file(flag, value)
        path = fields.get(flag.replace("max_trajectories", "data_path"))
        if name == "max_trajectories" and value is not None and path is not None and used:
            check_data_file(flag.replace("max_trajectories", "data_path"), path)
            count = trajectory_count(path)
            if value > count:
                raise ConfigError(f"{flag}={value}: {path} holds {count} trajectories; use at most {count}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: dict, new, ignore=NON_TRAINING_FIELDS) -> list[str]:
    """`field: old -> new` for each flattened field (e.g. `lapo.latent_action_dim`) whose value differs between two
    configs (dicts as in config.json, or a config dataclass), sorted, fields in `ignore` left out."""
    if dataclasses.is_dataclass(new):
        new = json.loads(json.dumps(dataclasses.asdict(new), default=json_default))
    old, new = _flat(old), _flat(new)
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignore)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ]


class RunDirInUseError(UserError, RuntimeError):
    """The run directory is held by another process."""


def run_dir_error(run_dir: Path, error: OSError) -> ConfigError:
    """The one-line error of a run directory that cannot be made or written (`error`: what the file system said)."""
    flag = f"--run_dir={run_dir}"
    if run_dir.exists() and not run_dir.is_dir():
        return ConfigError(f"{flag}: names an existing file, not a directory; give another --run_dir")
    blocking = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return ConfigError(f"{flag}: {blocking} is a file, not a directory; give another --run_dir")
    return ConfigError(f"{flag}: cannot write there ({error.strerror}); give a --run_dir on a writable disk")


def lock_run_dir(run_dir: Path) -> None:
    """Makes this process the only one using run_dir (an advisory lock held until it exits); another process on
    the same directory is refused, naming the holder. A directory that cannot be made or written is a ConfigError."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if str(run_dir.resolve()) in _locks:  # this process holds it already (a stage run again in-process)
            return
        f = open(run_dir / ".lock", "a+")
    except OSError as e:
        raise run_dir_error(run_dir, e) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        message = f"run directory {run_dir} is in use by {holder}; give this run another --run_dir"
        raise RunDirInUseError(message) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}: {' '.join(sys.argv)}\n")
    f.flush()
    _locks[str(run_dir.resolve())] = f


def prepare_run_dir(run_dir: str | Path, config) -> Path:
    """Takes the run directory (see lock_run_dir) and writes the full config into it (config.yaml, config.json). A
    directory that already holds a run made with another config is refused, naming the fields that differ (fields
    in NON_TRAINING_FIELDS may change)."""
    run_dir = Path(run_dir)
    lock_run_dir(run_dir)
    new = dataclasses.asdict(config)
    old_path = run_dir / "config.json"
    if old_path.exists() and any(run_dir.glob("*.pt")):
        differ = config_differences(json.loads(old_path.read_text()), config)
        if differ:
            details = "; ".join(differ[:10])
            raise ConfigError(
                f"{run_dir} holds a run made with another config ({details}{' ...' if len(differ) > 10 else ''}); "
                "its checkpoints would be reused for this one. Give this run another --run_dir, or delete that "
                "directory to start over."
            )
    yaml_path = run_dir / "config.yaml"
    replace_or_explain(
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

    def seed_stage(self, name: str) -> None:
        """Called first thing in a stage, before its networks are built: every random stream (initialisation,
        augmentations, draws) from (seed, stage name), so a stage starts the same whether the stages before it were
        trained, resumed, skipped or loaded from another run. Arms of a study with one seed share the networks their
        stages build alike (e.g. LAPO and masked LAPO)."""
        seed_stage(self.cfg.seed, name)


def start_run(cfg: RunConfig) -> Run:
    """Device and precision, seeds, the run directory (checked and locked), wandb and results.json.

    On CUDA the run's GPU becomes the current device and the one evaluation renders on (MUJOCO_EGL_DEVICE_ID).
    Launched by torchrun (src/dist.py): joins the process group, device cuda:<local rank> (or the CPU), seed
    seed + rank (each rank its own data order and augmentations; the networks start from rank 0's, see
    Stage); rank 0 takes the run directory and wandb, the other ranks wait for it and log nowhere."""
    check_config(cfg)
    device = get_device(cfg.device)
    if dist.launched():
        device = dist.init(device)
    note = no_gpu_note(cfg.device)
    if note and dist.is_main():
        print(note, flush=True)
    if device.type == "cuda":
        # The current device is the run's (cuda:N without torchrun too): CUDA events, streams and caching
        # allocator calls without a device then act on it, not on cuda:0.
        torch.cuda.set_device(device)
        render_on(torch.cuda.current_device())  # evaluation renders on this GPU, not on GPU 0
    dist.check_batches(cfg)
    setup_backends(device, cfg.precision)
    set_seed(cfg.seed + dist.rank())
    run_dir = cfg.resolved_run_dir()
    if dist.is_main():
        prepare_run_dir(run_dir, cfg)
        wandb_run = LazyWandb(lambda: init_wandb(cfg, cfg.project, cfg.group, cfg.name, cfg.wandb_mode, run_dir))
    else:
        wandb_run = _NoLogging()
    dist.barrier()
    return Run(cfg, run_dir, device, wandb_run, Results(run_dir, cfg))


class LazyWandb:
    """The wandb run of rank 0, started when the run first trains or computes something (Stage.updates,
    Stage.final_metrics): a rerun whose stages all finished earlier makes no new wandb run. What is logged before
    (a stage finished earlier: its stored metrics) goes to the wandb run once it starts, or nowhere."""

    def __init__(self, init: Callable[[], object]):
        self._init, self._run, self._waiting = init, None, []

    def start(self) -> None:
        if self._run is None:
            self._run = self._init()
            for args, kwargs in self._waiting:
                self._run.log(*args, **kwargs)
            self._waiting = []

    def log(self, *args, **kwargs) -> None:
        if self._run is None:
            self._waiting.append((args, kwargs))
        else:
            self._run.log(*args, **kwargs)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()


def finish_wandb_quietly(exit_code: int) -> None:
    """Ends this process's wandb run, if any, without wandb's lines on the console (an interrupted run: its one line
    is the last; wandb would print its sync hint after it at exit)."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        wandb.run.finish(exit_code=exit_code)


class _NoLogging:
    """wandb of the ranks other than 0 of a distributed run: they log nothing."""

    def start(self) -> None:
        pass

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self) -> None:
        pass


def main(train) -> None:
    """Runs a script's train() from the command line: Ctrl-C ends it with one line saying how to resume (during a
    stage's updates the stage checkpoints and says so itself, src/stage.py), a user
    error (a stage checkpoint that cannot be used, a missing file, a config value: src/errors.py) with one line
    naming it and what to do. In a
    distributed run, a rank that loses another (a node lost, a process killed) ends with one line saying so.

    The process group is left however the run ends (finished, stopped on a preemption signal, an error), except
    when a peer is lost; not left, its gloo threads would be torn down with the interpreter (src/dist.py, init)."""
    lost_peer = False
    try:
        with user_errors(show=dist.is_main):
            train()
    except KeyboardInterrupt:
        # Outside a stage's updates (those checkpoint and exit themselves, src/stage.py): loading data, final metrics.
        finish_wandb_quietly(130)
        print(
            "\ninterrupted: finished stages and each stage's last checkpoint are kept; run the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    except (RuntimeError, dist.DistBackendError) as e:
        if not dist.active() or not dist.lost_peer(e):
            raise
        lost_peer = True
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        dist.tell_stopped(f"lost contact with another rank of this run ({type(e).__name__}: {first_line})")
        sys.exit(1)
    finally:
        if not lost_peer:
            dist.finish()


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def init_wandb(config, project: str, group: str, name: str, mode: str, run_dir: Path):
    """wandb run in mode online / offline / disabled, its files under the run directory. Quiet (wandb's setting):
    no history and summary panel, no sync hint at the end, so that a run's last lines are its headline metrics and
    the path of results.json; WANDB_QUIET=false in the environment brings wandb's full output back."""
    import wandb

    return wandb.init(
        project=project,
        group=group,
        name=name,
        mode=mode,
        dir=str(run_dir),
        config=dataclasses.asdict(config),
        reinit="finish_previous",
        settings=wandb.Settings() if "WANDB_QUIET" in os.environ else wandb.Settings(quiet=True),
    )
