"""torchrun's process group, rank and collectives, not DDP (docs/DISTRIBUTED.md); without torchrun: rank 0 of 1."""

import datetime
import importlib
import os
import signal
import sys

import torch
import torch.distributed as tdist
import torch.nn as nn

from src.errors import ConfigError

_state = {"rank": 0, "world_size": 1}
_LOST = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "peer", "nccl error")


def launched() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> torch.device:
    """Joins the process group; returns cuda:<local rank> (nccl) when `device` is a CUDA device, else the CPU (gloo)."""
    _state.update(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    cuda = device.type == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    signal.signal(signal.SIGTERM, _stopped)
    # before the group: imported later (torch._dynamo) it outlived destroy_process_group; gloo aborted the rank
    importlib.import_module("torch.distributed.nn.functional")
    if not tdist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("LAOM_DIST_TIMEOUT_S", 1800)))
        kwargs = {"device_id": device} if cuda else {}
        tdist.init_process_group("nccl" if cuda else "gloo", timeout=timeout, **kwargs)
    return device


def rank() -> int:
    return _state["rank"]


def world_size() -> int:
    return _state["world_size"]


def is_main() -> bool:
    return _state["rank"] == 0


def active() -> bool:
    return _state["world_size"] > 1 and tdist.is_initialized()


def barrier() -> None:
    if active():
        tdist.barrier()


def local_batch(global_batch: int, what: str = "the batch size") -> int:
    """This rank's share of a global batch, which must divide exactly (1 and N processes average as many samples)."""
    n = _state["world_size"]
    if global_batch % n != 0:
        lower, upper = max(n, global_batch - global_batch % n), global_batch + n - global_batch % n
        raise ConfigError(
            f"{what} = {global_batch} is a global batch (split over the ranks) and must be divisible by the number "
            f"of ranks, {n}: use {lower} or {upper}, or another number of ranks"
        )
    return global_batch // n


def _all_reduce(t: torch.Tensor, op=tdist.ReduceOp.SUM) -> torch.Tensor:
    nccl = tdist.get_backend() == "nccl"
    out = t.detach().to(torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"), copy=True)
    tdist.all_reduce(out, op=op)
    return out.to(t.device)


def total(count: int) -> int:
    return int(_all_reduce(torch.tensor(count, dtype=torch.int64))) if active() else count


def sum_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: _all_reduce(tensors[k]) for k in sorted(tensors)} if active() else tensors


def global_mean(sum_: torch.Tensor, count: int) -> torch.Tensor:
    """(sum over ranks of sum_) / (sum over ranks of count), of sum_'s dtype and device (no host sync on one rank)."""
    if not active():
        return sum_ / count
    t = _all_reduce(torch.stack([sum_.detach().double().reshape(()), sum_.new_tensor(count, dtype=torch.float64)]))
    return (t[0] / t[1]).to(sum_.dtype)


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    return _all_reduce(flag, tdist.ReduceOp.MAX) if active() else flag


def gather_objects(obj) -> list:
    if not active():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_modules(*modules: nn.Module) -> None:
    if not active():
        return
    for t in [t for m in modules for t in (*m.parameters(), *m.buffers())]:
        tdist.broadcast(t.data, src=0)


@torch.no_grad()
def average_gradients(*modules: nn.Module, samples: int | None = None) -> None:
    """After backward, each gradient's mean over ranks, weighted by this rank's `samples` if given; no host sync."""
    if not active():
        return
    by_dtype: dict = {}
    for g in [p.grad for m in modules for p in m.parameters() if p.grad is not None]:
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        if samples is None:
            tdist.all_reduce(flat)
            flat.div_(world_size())
        else:  # [sum_r samples_r * g_r, sum_r samples_r] -> their ratio
            flat = torch.cat([flat.mul_(samples), flat.new_full((1,), float(samples))])
            tdist.all_reduce(flat)
            flat = flat[:-1].div_(flat[-1])
        for g, part in zip(group, flat.split([g.numel() for g in group]), strict=True):
            g.copy_(part.view_as(g))


def lost_peer(error: BaseException) -> bool:
    return isinstance(error, tdist.DistBackendError) or any(k in str(error).lower() for k in _LOST)


def tell_stopped(reason: str) -> None:
    if _state.get("stopping"):
        return
    _state["stopping"] = True
    resume = "The last checkpoint of each stage is kept; run the same command (with any number of ranks) to resume"
    print(f"\nrank {rank()} of {world_size()}: {reason}. {resume}", file=sys.stderr)


def _stopped(signum, frame) -> None:
    if _state.get("stopping") or _state.get("leaving"):
        return
    tell_stopped("stopped by SIGTERM (another rank of this run failed, its node was lost, or the job was cancelled)")
    raise SystemExit(128 + signum)


def finish() -> None:
    """Leaves the process group, ignoring SIGTERM from then on (an exit inside destroy_process_group breaks it)."""
    _state["leaving"] = True
    if tdist.is_initialized():
        tdist.destroy_process_group()
