"""The fields at the top level of every method script's config, and the one walk over a config's fields: to check
them (src/run.py) and to compare two configs (a run directory or a checkpoint made with another config)."""

import dataclasses
import json
import re
from pathlib import Path
from typing import Optional

from src.files import json_default


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


# Config fields that change how a run is watched, not what it trains: they may differ when a run is continued.
NON_TRAINING_FIELDS = {"project", "group", "name", "run_dir", "wandb_mode", "log_every", "checkpoint_every"}
NON_TRAINING_FIELDS |= {"eval_num_envs", "frames_device", "device"}


def config_fields(config, prefix: str = "") -> dict:
    """{dotted field name (`bc.batch_size`): value} of a config dataclass, or of a dict as config.json holds it."""
    if dataclasses.is_dataclass(config):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    out = {}
    for k, v in config.items():
        if dataclasses.is_dataclass(v) or isinstance(v, dict):
            out.update(config_fields(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: dict, new, ignore=NON_TRAINING_FIELDS) -> list[str]:
    """`field: old -> new` for each field outside `ignore` that differs between two configs, sorted."""
    old = config_fields(old)
    new = json.loads(json.dumps(config_fields(new), default=json_default))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in ignore)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ]


def architecture_differences(run_dir: Path, config) -> str:
    """The fields that may change a network (not NON_TRAINING_FIELDS, paths, seeds or evaluation counts) in which the
    run of run_dir (its config.json) differs from `config`, as one clause; "" when either is unknown or none."""
    old = run_dir / "config.json"
    if config is None or not old.exists():
        return ""
    try:
        differ = config_differences(json.loads(old.read_text()), config)
    except (OSError, ValueError):
        return ""
    differ = [d for d in differ if not re.match(r"([\w.]*\.)?(\w*_path|seed|eval_seed|eval_episodes):", d)]
    more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
    return f"config of its run -> this run: {'; '.join(differ[:6])}{more}" if differ else ""
