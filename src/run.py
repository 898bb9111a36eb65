"""The life of a run, the same for every method script: `start_run` sets it up, `main` runs train() from the CLI."""

import dataclasses
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Optional

import pyrallis
import torch

from src import dist
from src.checkpoint import config_differences, config_fields, seed_stage, set_seed
from src.data import check_compatible, check_data_file, load_dataset, trajectory_count
from src.device import get_device, no_gpu_note, render_on
from src.errors import ConfigError, UserError, user_errors
from src.files import replace_or_explain, write_json
from src.optim import setup_backends
from src.stage import finish_wandb_quietly

DATA_FIELDS = ("data_path", "eval_data_path", "labeled_data_path", "masks_path")
POSITIVE_FIELDS = ("batch_size", "labeled_batch_size", "num_epochs", "total_updates", "frame_stack", "log_every")
POSITIVE_FIELDS += ("checkpoint_every", "eval_num_envs", "eval_max_episode_steps", "max_trajectories")
SEED_FIELDS = ("seed", "eval_seed")  # numpy takes 0 .. 2**32 - 1; a run adds its rank and the episode's index
HEADLINE = ("final_action_probe_mse", "eval_action_mse", "eval_returns_mean", "normalized_score")
_locks: dict = {}  # run directory -> its open, locked file (held until the process exits)


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
    compile: bool = False  # torch.compile the networks each stage trains (src/nn.py); off until measured on a GPU

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / f"{self.name}-seed{self.seed}"


def check_config(config) -> None:
    """A ConfigError naming the first bad field (counts, seeds, rates, wandb mode, data files of the trained stages)."""
    skipped = {"bc", "decoder"} if getattr(config, "lam_only", False) or getattr(config, "idm_only", False) else set()
    fields = {f"--{key}": value for key, value in config_fields(config).items()}
    for flag, value in fields.items():
        name = flag.split(".")[-1].removeprefix("--")
        if name in POSITIVE_FIELDS and value is not None and value < 1:
            raise ConfigError(f"{flag}={value}: expected a positive integer")
        if name == "eval_episodes" and value < 0:
            raise ConfigError(f"{flag}={value}: expected 0 (no evaluation) or more")
        if name == "wandb_mode" and value not in ("online", "offline", "disabled"):
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
            if value > (count := trajectory_count(path)):
                raise ConfigError(f"{flag}={value}: {path} holds {count} trajectories; use at most {count}")


class RunDirInUseError(UserError, RuntimeError):
    """The run directory is held by another process."""


def lock_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if str(run_dir.resolve()) in _locks:  # this process holds it already (a stage run again in-process)
            return
        f = open(run_dir / ".lock", "a+")
    except OSError as e:
        blocking = next((p for p in [run_dir, *run_dir.parents] if p.exists() and not p.is_dir()), None)
        why = f"cannot write there ({e.strerror}); give a --run_dir on a writable disk"
        if blocking is not None:
            why = f"{blocking} is a file, not a directory; give another --run_dir"
        if blocking == run_dir:
            why = "names an existing file, not a directory; give another --run_dir"
        raise ConfigError(f"--run_dir={run_dir}: {why}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunDirInUseError(
            f"run directory {run_dir} is in use by {holder}; give this run another --run_dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}: {' '.join(sys.argv)}\n")
    f.flush()
    _locks[str(run_dir.resolve())] = f


def prepare_run_dir(run_dir: Path, config) -> None:
    """Locks run_dir, writes config.yaml and config.json; refuses a run of another config there, naming the fields."""
    lock_run_dir(run_dir)
    old_path = run_dir / "config.json"
    if old_path.exists() and any(run_dir.glob("*.pt")):
        differ = config_differences(old_path, config)
        if differ:
            details = "; ".join(differ[:10]) + (" ..." if len(differ) > 10 else "")
            raise ConfigError(
                f"{run_dir} holds a run made with another config ({details}); its checkpoints would be reused for "
                "this one. Give this run another --run_dir, or delete that directory to start over."
            )
    yaml_path = run_dir / "config.yaml"
    replace_or_explain(yaml_path.with_suffix(".yaml.tmp"), yaml_path, lambda tmp: tmp.write_text(pyrallis.dump(config)))
    write_json(old_path, dataclasses.asdict(config))


class Results:
    """results.json: config, each stage's metrics and wall time, rewritten after each stage; a skipped one keeps its."""

    def __init__(self, run_dir: Path, config):
        self.path, self.final_path = run_dir / "results.partial.json", run_dir / "results.json"
        self.data = {"config": dataclasses.asdict(config), "world_size": dist.world_size(), "stages": {}, "metrics": {}}
        previous = next((p for p in (self.path, self.final_path) if p.exists()), None)
        if previous is not None:
            self.data["stages"] = json.loads(previous.read_text()).get("stages", {})

    def stage(self, name: str, seconds: float, metrics: dict, skipped: bool = False) -> None:
        entry = {"seconds": seconds, "skipped": skipped, **metrics}
        if skipped and name in self.data["stages"]:
            entry = {**self.data["stages"][name], "skipped": True}
        self.data["stages"][name] = entry
        if dist.is_main():
            write_json(self.path, self.data)

    def finish(self) -> dict:
        for entry in self.data["stages"].values():
            self.data["metrics"].update({k: v for k, v in entry.items() if "/" in k and not isinstance(v, list)})
        self.data["total_seconds"] = sum(s.get("seconds", 0.0) for s in self.data["stages"].values())
        if not dist.is_main():
            return self.data
        write_json(self.final_path, self.data)
        self.path.unlink(missing_ok=True)
        headline = {k: v for k, v in self.data["metrics"].items() if k.split("/")[-1] in HEADLINE and v is not None}
        print("\n".join([f"{k}: {v:.4g}" for k, v in headline.items()] + [f"results: {self.final_path}"]))
        return self.data


@dataclasses.dataclass
class Run:
    cfg: RunConfig
    dir: Path
    device: torch.device
    wandb: object
    results: Results

    def seed_stage(self, name: str) -> None:
        """First thing in a stage, before its networks: every random stream from (seed, stage name) alone."""
        seed_stage(self.cfg.seed, name)

    def load(self, path, frame_stack, max_trajectories=None, load_states=False, like=None, what="", **kw):
        """load_dataset on the run's devices; `like`: a dataset it must match (check_compatible, `what` naming it)."""
        kw |= dict(max_trajectories=max_trajectories, load_states=load_states, frames_device=self.cfg.frames_device)
        data = load_dataset(path, self.device, frame_stack, **kw)
        if like is not None:
            check_compatible(like, data, what)
        return data

    def finish(self) -> dict:
        """Writes results.json, prints the headline metrics and ends the wandb run; returns the results."""
        out = self.results.finish()
        self.wandb.finish()
        return out


def start_run(cfg: RunConfig) -> Run:
    """Checks the config, joins torchrun's group, seeds with seed + rank; rank 0 takes the run directory and wandb."""
    check_config(cfg)
    device = get_device(cfg.device)
    if dist.launched():
        device = dist.init(device)
    note = no_gpu_note(cfg.device)
    if note and dist.is_main():
        print(note, flush=True)
    if device.type == "cuda":
        # cuda:N current without torchrun too: CUDA calls without a device act on it, not on cuda:0
        torch.cuda.set_device(device)
        render_on(torch.cuda.current_device())
    for key, value in config_fields(cfg).items():  # a global batch must divide over the ranks
        if key.split(".")[-1] in ("batch_size", "labeled_batch_size") and isinstance(value, int):
            dist.local_batch(value, f"--{key}")
    setup_backends(device, cfg.precision)
    set_seed(cfg.seed + dist.rank())
    run_dir = cfg.resolved_run_dir()
    wandb_run = LazyWandb()
    if dist.is_main():
        prepare_run_dir(run_dir, cfg)
        wandb_run = LazyWandb(lambda: init_wandb(cfg, run_dir))
    dist.barrier()
    return Run(cfg, run_dir, device, wandb_run, Results(run_dir, cfg))


class LazyWandb:
    """Rank 0's wandb run, started when a stage first trains or computes; earlier logs wait. No `init`: logs nothing."""

    def __init__(self, init=None):
        self._init, self._run, self._waiting = init, None, []

    def start(self) -> None:
        if self._run is None and self._init is not None:
            self._run = self._init()
            for values in self._waiting:
                self._run.log(values)

    def log(self, values: dict) -> None:
        if self._run is not None:
            self._run.log(values)
        elif self._init is not None:
            self._waiting.append(values)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()


def main(train) -> None:
    """Runs train(); Ctrl-C, a user error or a lost peer rank ends it with one line. Leaves the group unless lost."""
    lost_peer = False
    try:
        with user_errors(show=dist.is_main):
            train()
    except KeyboardInterrupt:
        finish_wandb_quietly(130)
        print(
            "\ninterrupted: finished stages and each stage's last checkpoint are kept; run the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    except RuntimeError as e:  # torch.distributed.DistBackendError included
        if not dist.active() or not dist.lost_peer(e):
            raise
        lost_peer = True
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        dist.tell_stopped(f"lost contact with another rank of this run ({type(e).__name__}: {first_line})")
        sys.exit(1)
    finally:
        if not lost_peer:
            dist.finish()


def init_wandb(config, run_dir: Path):
    import wandb

    return wandb.init(
        project=config.project,
        group=config.group,
        name=config.name,
        mode=config.wandb_mode,
        dir=str(run_dir),
        config=dataclasses.asdict(config),
        reinit="finish_previous",
        settings=wandb.Settings() if "WANDB_QUIET" in os.environ else wandb.Settings(quiet=True),
    )
