"""Stage checkpoints: the objects of a stage (modules, optimizers, schedulers), its update count, whether it
finished and the RNG states of every rank; saved atomically, restored to resume or to reuse a finished stage."""

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from src import dist
from src.files import replace_or_explain
from src.run import set_seed


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save atomically: an interrupted or failed save never leaves a truncated checkpoint or a .tmp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_or_explain(path.with_suffix(path.suffix + ".tmp"), path, lambda tmp: torch.save(state, tmp))


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
