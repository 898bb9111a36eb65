"""One run on several processes (torchrun): the process group, this process's rank, and the few collectives the
method scripts need; without torchrun (no RANK / WORLD_SIZE) every helper is the identity of one process, rank 0 of 1.

    torchrun --nproc_per_node=2 -m train_laom --config_path configs/example/laom.yaml --device=cpu

Each rank holds the trajectories i % world_size == rank of every dataset (src/data.py) and draws batch_size /
world_size of the global batch; after backward the gradients are averaged over ranks (`average_gradients`), so every
rank takes the step one process would take on the union of the batches; networks start from rank 0's
(`broadcast_modules`); rank 0 writes checkpoints, results.json and wandb (docs/DISTRIBUTED.md).

Not DistributedDataParallel: DDP synchronises only gradients of computations through the wrapped module's forward(),
while the scripts call their networks' own methods (`lam.latent_action`, `lam.encode` with the EMA target, ...),
several per update. One flat all-reduce per dtype after backward gives the same step without restructuring a loop;
it gives up DDP's overlap of the all-reduce with the backward pass."""

import datetime
import importlib
import os
import signal
import sys

import torch
import torch.distributed as tdist
import torch.nn as nn

from src.errors import ConfigError

_state = {"rank": 0, "world_size": 1, "local_rank": 0}
DistBackendError = getattr(tdist, "DistBackendError", RuntimeError)  # what a collective raises when a peer is gone
_LOST = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "peer", "nccl error")


def launched() -> bool:
    """Whether this process was started by torchrun (or any launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> torch.device:
    """Joins the process group (a process launched by torchrun) and returns this process's device: cuda:<local rank>
    with the nccl backend when `device` (the run's, resolved by src/device.py: get_device) is a CUDA device, the CPU
    with gloo otherwise."""
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    _state.update(rank=rank, world_size=world, local_rank=local)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    signal.signal(signal.SIGTERM, _stopped)
    # Imported before the group exists: its functions take `group=group.WORLD` as a default argument, evaluated at
    # import. Imported after (the optimizers import it through torch._dynamo), they would hold the group past
    # destroy_process_group, its gloo threads would live until the interpreter is torn down, and that was seen to
    # abort a rank (SIGABRT, "terminate called without an active exception") after a run had finished.
    importlib.import_module("torch.distributed.nn.functional")

    if not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A rank that waits longer than this for the others (a lost node) fails with an error instead of hanging.
        timeout = datetime.timedelta(seconds=float(os.environ.get("LAOM_DIST_TIMEOUT_S", 1800)))
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        tdist.init_process_group(backend, timeout=timeout, **kwargs)
    return device


def rank() -> int:
    return _state["rank"]


def world_size() -> int:
    return _state["world_size"]


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, results.json and wandb and prints."""
    return _state["rank"] == 0


def active() -> bool:
    """Whether more than one process takes part (collectives do something)."""
    return _state["world_size"] > 1 and tdist.is_initialized()


def barrier() -> None:
    if active():
        tdist.barrier()


def local_batch(global_batch: int, what: str = "the batch size") -> int:
    """This rank's share of a global batch: global_batch / world_size, which must divide exactly (the runs of 1 and
    of N processes then average their gradients over the same number of samples)."""
    n = _state["world_size"]
    if global_batch % n != 0:
        lower, upper = max(n, global_batch - global_batch % n), global_batch + n - global_batch % n
        raise ConfigError(
            f"{what} = {global_batch} is a global batch (split over the ranks) and must be divisible by the number "
            f"of ranks, {n}: use {lower} or {upper}, or another number of ranks"
        )
    return global_batch // n


def total(count: int) -> int:
    """The sum of an integer over ranks (e.g. the number of valid samples of every rank's shard)."""
    if not active():
        return count
    t = torch.tensor([count], dtype=torch.int64, device=_collective_device())
    tdist.all_reduce(t)
    return int(t.item())


def sum_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor summed over ranks (returned on its own device): sufficient statistics of every rank's shard."""
    if not active():
        return tensors
    out = {}
    for k in sorted(tensors):  # the same order on every rank
        t = tensors[k].to(_collective_device())
        tdist.all_reduce(t)
        out[k] = t.to(tensors[k].device)
    return out


def global_mean(sum_: torch.Tensor, count: int) -> torch.Tensor:
    """(sum over ranks of `sum_`) / (sum over ranks of `count`): a mean over every rank's samples, as a tensor of
    sum_'s dtype on its device (no host sync in one process)."""
    if not active():
        return sum_ / count
    t = torch.stack([sum_.detach().double().reshape(()), torch.tensor(float(count), dtype=torch.float64)])
    t = t.to(_collective_device())
    tdist.all_reduce(t)
    return (t[0] / t[1]).to(device=sum_.device, dtype=sum_.dtype)


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """The maximum of a scalar int64 tensor over ranks (e.g. the step of a NaN loss, -1 where there was none)."""
    if not active():
        return flag
    t = flag.detach().clone()
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return t


def gather_objects(obj) -> list:
    """[object of rank 0, object of rank 1, ...] on every rank."""
    if not active():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_modules(*modules: nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers: the networks of a stage start identical on every rank."""
    if not active():
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            tdist.broadcast(t.data, src=0)


@torch.no_grad()
def average_gradients(*modules: nn.Module, samples: int | None = None) -> None:
    """After backward: each gradient becomes its mean over ranks, as DistributedDataParallel does. With every rank's
    loss a mean over its share of the global batch, this is the gradient of the loss over the whole global batch.
    samples: this rank's samples in the update, where the ranks' shares can differ (a stage that keeps each epoch's
    last partial batch): each rank's gradient is then weighted by its samples, so the result is still the gradient
    of the mean loss over the union of the ranks' batches. One all-reduce per dtype over the flattened gradients
    (the weight travels in it: no extra collective, no host sync). Parameters without a gradient are left alone (the
    same on every rank: every rank runs the same code)."""
    if not active():
        return
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    by_dtype: dict = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    n = world_size()
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        if samples is None:
            tdist.all_reduce(flat)
            flat.div_(n)
        else:  # [sum_r samples_r * g_r, sum_r samples_r] -> their ratio
            flat = torch.cat([flat.mul_(samples), flat.new_full((1,), float(samples))])
            tdist.all_reduce(flat)
            flat = flat[:-1].div_(flat[-1])
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def lost_peer(error: BaseException) -> bool:
    """Whether an error raised in a distributed run says that another rank is gone (its process died, its node was
    lost, or it stopped answering within the timeout)."""
    text = str(error).lower()
    return isinstance(error, DistBackendError) or any(k in text for k in _LOST)


def tell_stopped(reason: str) -> None:
    """Says once, on stderr, why this rank stops and how to go on (the same command resumes)."""
    if _state.get("stopping"):
        return
    _state["stopping"] = True
    print(
        f"\nrank {rank()} of {world_size()}: {reason}. The last checkpoint of each stage is kept; run the same "
        "command (with any number of ranks) to resume",
        file=sys.stderr,
    )


def _stopped(signum, frame) -> None:
    """SIGTERM from torchrun (a rank failed or a node was lost, and the launcher ends the others) or from the job
    system: one line saying how to go on, then exit (a checkpoint being written is removed, never left truncated).
    A rank that is already stopping, or leaving its group (`finish`), ignores it."""
    if _state.get("stopping") or _state.get("leaving"):
        return
    tell_stopped("stopped by SIGTERM (another rank of this run failed, its node was lost, or the job was cancelled)")
    raise SystemExit(128 + signum)


def finish() -> None:
    """Leaves the process group (end of a run). A SIGTERM from then on is ignored: torchrun ends the other ranks once
    one has exited (a preempted run's ranks exit one after the other), and an exit raised inside
    destroy_process_group would leave the group half torn down."""
    _state["leaving"] = True
    if tdist.is_initialized():
        tdist.destroy_process_group()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")
