"""Atomic stage checkpoints with every rank's RNG states, streams seeded from (seed, stage name), config_fields."""

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from src import dist
from src.errors import UserError
from src.files import json_default, replace_or_explain

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


def config_differences(config_json: Path, config) -> list[str]:
    """`field: old -> new` for each field but NON_TRAINING_FIELDS in which a run's config.json differs from `config`."""
    old = config_fields(json.loads(config_json.read_text()))
    new = json.loads(json.dumps(config_fields(config), default=json_default))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in NON_TRAINING_FIELDS)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ]


def architecture_differences(run_dir: Path, config) -> str:
    """config_differences that may change a network (not paths, seeds, episodes), as one clause; "" if none/unknown."""
    old = run_dir / "config.json"
    if config is None or not old.exists():
        return ""
    try:
        differ = config_differences(old, config)
    except (OSError, ValueError):
        return ""
    differ = [d for d in differ if not re.match(r"([\w.]*\.)?(\w*_path|seed|eval_seed|eval_episodes):", d)]
    more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
    return f"config of its run -> this run: {'; '.join(differ[:6])}{more}" if differ else ""


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stage_seed(seed: int, *parts) -> int:
    """A 32-bit seed from the run's seed and names (stage, "data", "final") alone, whatever ran earlier."""
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def seed_stage(seed: int, *parts) -> None:
    set_seed(stage_seed(seed, *parts, dist.rank()))


def save_checkpoint(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_or_explain(path.with_suffix(path.suffix + ".tmp"), path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict | None:
    path = Path(path)
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


class CheckpointError(UserError, ValueError):
    """A stage checkpoint that cannot be used; the message is one line naming the file, the stage and what to do."""


def restore_stage(path, objects, load_from=None, stage="", config=None, extra=None) -> tuple[int, bool]:
    """Resumes `path` (or loads load_from's finished stage); returns (first update, done), fills `extra`."""
    stage = stage or Path(path).stem
    flag = f"--{stage}.checkpoint_path"
    if load_from:
        what = f"the {stage} checkpoint given with {flag}={load_from}"
        todo = f"give a finished {Path(path).name} of this stage, or leave {flag} out to train it here"
        path, objects = load_from, {name: obj for name, obj in objects.items() if isinstance(obj, nn.Module)}
    else:
        what = f"the run's {stage} stage checkpoint"
        todo = f"remove it and run the same command: the {stage} stage is trained again, from the stages before it"
    state = _read(Path(path), what, todo)
    if state is None and load_from:
        raise CheckpointError(f"{load_from}: not found ({what}); {todo}")
    if state is None:
        return 0, False
    if load_from and not state["done"]:
        raise CheckpointError(f"{load_from} is the checkpoint of an unfinished stage (update {state['step']}); {todo}")
    _load(Path(path), state, objects, what, todo, config)
    if not state["done"]:
        _restore_rng(state["rng"], state["step"])
    saved = state.get("extra")  # one per rank in a distributed checkpoint; a rank beyond those saved gets none
    saved = saved if isinstance(saved, list) else [saved]
    if extra is not None and dist.rank() < len(saved) and saved[dist.rank()] is not None:
        extra.update(saved[dist.rank()])
    return state["step"], state["done"]


def _read(path: Path, what: str, todo: str) -> dict | None:
    try:
        state = load_checkpoint(path)
    except Exception as e:  # torch.load of a cut or damaged file: OSError, RuntimeError, EOFError, UnpicklingError
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: {what} cannot be read, it is truncated or damaged ({reason}); {todo}") from e
    if state is not None and not (isinstance(state, dict) and {"objects", "step", "done"} <= state.keys()):
        raise CheckpointError(f"{path}: {what} is not a stage checkpoint (no objects / step / done); {todo}")
    return state


def _load(path: Path, state: dict, objects: dict, what: str, todo: str, config) -> None:
    for name, obj in objects.items():
        if name not in state["objects"]:
            held = sorted(state["objects"])
            raise CheckpointError(f"{path}: {what} holds no {name!r} (it holds {held}): a checkpoint of another method")
        try:
            obj.load_state_dict(state["objects"][name])
        except (RuntimeError, ValueError, KeyError) as e:
            # torch's message: its second line names the first mismatch (`size mismatch for fc.weight: ...`)
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["state dict mismatch"]
            why = architecture_differences(path.parent, config) or lines[min(1, len(lines) - 1)][:200]
            raise CheckpointError(f"{path}: {what}: its {name!r} is of another architecture ({why}); {todo}") from e
        if isinstance(obj, torch.optim.Optimizer):
            _state_in_param_layout(obj)


def _state_in_param_layout(optim: torch.optim.Optimizer) -> None:
    """Optimizer state in its parameters' layout: fused Adam would misread pre-channels_last moments (torch 2.13)."""
    for p, state in optim.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _restore_rng(saved: dict | list, step: int) -> None:
    states = saved if isinstance(saved, list) else [saved]
    if dist.rank() >= len(states):
        set_seed(1_000_003 * step + dist.rank())
        return
    state = states[dist.rank()]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)


def save_stage(path: Path, objects: dict, step: int, done: bool, extra: dict | None = None) -> None:
    """Atomic stage checkpoint with every rank's RNG states and `extra`; every rank calls it, rank 0 writes."""
    states, extras = zip(*dist.gather_objects((rng_state(), extra)), strict=True)
    if not dist.is_main():
        return
    state = {"objects": {k: v.state_dict() for k, v in objects.items()}, "step": step, "done": done}
    state["rng"] = list(states) if dist.active() else states[0]
    if extra is not None:
        state["extra"] = list(extras) if dist.active() else extras[0]
    save_checkpoint(path, state)
