"""Stage checkpoints and the random streams they restore: a stage's objects (modules, optimizers, schedulers), its
update count, whether it finished and every rank's RNG states, saved atomically; restored to resume or to reuse a
finished stage. A stage's streams are seeded from (seed, stage name) alone (seed_stage). The one walk over a config's
fields, to check them (src/run.py) and to compare a run's config with the one its directory or a checkpoint holds."""

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


def config_differences(config_json: Path, config) -> list[str]:
    """`field: old -> new` for each field but NON_TRAINING_FIELDS in which a run's config.json differs from `config`."""
    old = config_fields(json.loads(config_json.read_text()))
    new = json.loads(json.dumps(config_fields(config), default=json_default))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in NON_TRAINING_FIELDS)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ]


def architecture_differences(run_dir: Path, config) -> str:
    """config_differences that may change a network (not paths, seeds or evaluation counts) of the run of run_dir, as
    one clause; "" when either config is unknown or none differs."""
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
    """Seeds python's random, numpy and torch (the CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stage_seed(seed: int, *parts) -> int:
    """A 32-bit seed from the run's seed and the names of one part of it (a stage, its data order, its final
    metrics) alone: the same whatever ran earlier in the process."""
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def seed_stage(seed: int, *parts) -> None:
    """Seeds every random stream from stage_seed(seed, *parts, rank): each rank its own streams."""
    set_seed(stage_seed(seed, *parts, dist.rank()))


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save atomically: an interrupted or failed save never leaves a truncated checkpoint or a .tmp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_or_explain(path.with_suffix(path.suffix + ".tmp"), path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict | None:
    """The checkpoint's state dict, read to the CPU, or None if the file does not exist."""
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
    """Restores a stage; returns (first update to run, whether it is finished). load_from: a finished checkpoint of
    this stage from another run, whose modules are loaded (the stage is skipped); otherwise the run's own `path` is
    resumed, if present. `config` names the differing fields in a CheckpointError; `extra` receives the checkpoint's
    extra state (save_stage)."""
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
    """load_checkpoint; a file that cannot be read or is not a stage checkpoint is a CheckpointError."""
    try:
        state = load_checkpoint(path)
    except Exception as e:  # torch.load of a cut or damaged file: OSError, RuntimeError, EOFError, UnpicklingError
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: {what} cannot be read, it is truncated or damaged ({reason}); {todo}") from e
    if state is not None and not (isinstance(state, dict) and {"objects", "step", "done"} <= state.keys()):
        raise CheckpointError(f"{path}: {what} is not a stage checkpoint (no objects / step / done); {todo}")
    return state


def _load(path: Path, state: dict, objects: dict, what: str, todo: str, config) -> None:
    """load_state_dict of every object; a missing object or another shape is a CheckpointError naming the config
    fields that differ from those of the checkpoint's run (when its config.json is there)."""
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
    """Each tensor of the optimizer's state in its parameter's memory layout. A checkpoint written before the
    convolutions became channels_last holds contiguous moments; torch's fused Adam reads them in the parameter's
    element order without a check (torch 2.13), which would silently scramble the resumed update."""
    for p, state in optim.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _restore_rng(saved: dict | list, step: int) -> None:
    """A resumed stage's RNG states (a distributed checkpoint holds every rank's): rank r takes rank r's, the CUDA
    states of the devices visible now (fewer GPUs than saved: the first ones; more: the others stay as seeded); a rank
    beyond those saved takes a fresh seed from (step, rank), as a run with another seed would."""
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
    """Atomic stage checkpoint: the objects' state dicts, the update count, RNG states, whether it finished and
    `extra` (the stage's own state). Every rank calls it (the RNG states of all are gathered); rank 0 writes."""
    states, extras = zip(*dist.gather_objects((rng_state(), extra)), strict=True)
    if not dist.is_main():
        return
    state = {"objects": {k: v.state_dict() for k, v in objects.items()}, "step": step, "done": done}
    state["rng"] = list(states) if dist.active() else states[0]
    if extra is not None:
        state["extra"] = list(extras) if dist.active() else extras[0]
    save_checkpoint(path, state)
