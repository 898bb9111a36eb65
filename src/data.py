"""HDF5 datasets in the released layout and whole-batch sampling by tensor indexing.

Layout (docs/FAITHFULNESS.md, "data"): root groups "0", "1", ... each with `obs` uint8 [T, H, W, 3],
`actions` float32 [T, A], `states` float32 [T, S] and attribute `traj_return`; root attributes describe the
environment. Frames are stored ONCE, as single uint8 frames of all trajectories concatenated, channels first
([N, 3, H, W], so that a gathered stack [B, k, 3, H, W] is a [B, 3k, H, W] observation without a copy),
in host memory at first on a GPU run (batches reach the GPU through pinned buffers) and moved to the GPU after a
stage's first update if they fit beside what that update measured (place_frames). A batch
is a set of global frame indices; frame stacks (oldest first, padded with the first frame of the trajectory) and
future observations are gathered with one indexing operation each, never with a per-sample `__getitem__` + collate.
"""

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from src import dist
from src.errors import ConfigError, DatasetError, MissingFileError, check_hdf5_file, warn

# Root attributes the methods need to rebuild the evaluation environment and to check shapes.
REQUIRED_ROOT_ATTRS = ("domain_name", "task_name", "difficulty", "dynamic", "img_hw")


@dataclass(frozen=True)
class Shapes:
    """What the networks need to know of a dataset: action size, state size (None: states not loaded), image size."""

    act_dim: int
    state_dim: int | None
    img_hw: int


def _trajectory_keys(f: h5py.File, path: str) -> list[str]:
    keys = [k for k in f.keys() if k.isdigit()]
    if not keys:
        raise DatasetError(f"{path}: no trajectory groups ('0', '1', ...) found; root keys are {list(f.keys())[:10]}")
    return sorted(keys, key=int)


def trajectory_count(path: str) -> int:
    """The number of trajectories of a dataset file."""
    with h5py.File(path, "r") as f:
        return len(_trajectory_keys(f, path))


def _pinned_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(numel, dtype=dtype, pin_memory=True)


class PinnedStaging:
    """Host -> GPU copies that do not block the host: each batch tensor is written into one of two pinned buffers of
    its kind ("frames", "index", "masks", ...) and copied with non_blocking=True, so the host gathers the next batch
    while the GPU copies and trains on this one. A buffer is written again only after its previous copy finished
    (a CUDA event recorded on the current stream: the run's device is current, src.run.start_run); a larger batch
    regrows it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, list] = {}  # kind -> [[buffer, event], [buffer, event]]
        self.next: dict[str, int] = {}  # kind -> the slot to use next

    def copy(self, kind: str, shape: tuple, dtype: torch.dtype, fill: Callable[[torch.Tensor], None]) -> torch.Tensor:
        """fill(out) writes the host tensor into `out` (pinned, `shape`); returns it on the device."""
        slots = self.buffers.setdefault(kind, [[None, None], [None, None]])
        slot = self.next.get(kind, 0)
        self.next[kind] = 1 - slot
        buf, event = slots[slot]
        if event is not None:
            event.synchronize()  # the copy that last read this buffer
        n = math.prod(shape)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = _pinned_empty(n, dtype)
        view = buf[:n].view(shape)
        fill(view)
        out = view.to(self.device, non_blocking=True, copy=True)
        event = torch.cuda.Event()
        event.record()
        slots[slot] = [buf, event]
        return out


@dataclass
class TrajectoryData:
    """All trajectories of one HDF5 file, concatenated along time.

    frames: uint8 [N, 3, H, W] on `frames_device` (GPU, or host memory), read from the file on
        first use: a stage that is skipped (its checkpoint reused) never reads the frames;
    masks: uint8 [N, 1, H, W] beside the frames when a stage keeps them there (load_masks), moved with them;
    actions: float32 [N, A] and states: float32 [N, S] on `device` (None when not loaded);
    start_of: int64 [N], the global index of the first frame of each frame's trajectory (on index_device);
    traj_starts / traj_lens: int64 [num_traj] (host);
    keys: the file's trajectory groups held here, in order (in a distributed run, this rank's share: src/dist.py).
    index_device: where batches of indices are drawn: where the frames were placed when the file was opened. It
        never changes, so frames moved to the GPU (place_frames) are gathered with the indices, and the random
        draws, of frames left in host memory.
    auto: opened with frames_device "auto": place_frames may move the frames from host memory to `device`.
    """

    path: str
    frames_shape: tuple[int, ...]
    frames_device: torch.device
    _read_frames: Callable[[], torch.Tensor] = field(repr=False)
    actions: torch.Tensor | None
    states: torch.Tensor | None
    start_of: torch.Tensor
    traj_starts: torch.Tensor
    traj_lens: torch.Tensor
    attrs: dict
    device: torch.device
    keys: list[str] = field(default_factory=list)
    staging: "PinnedStaging | None" = field(default=None, repr=False)  # host indices, CUDA compute: the copies
    index_device: torch.device = torch.device("cpu")
    auto: bool = False
    masks: torch.Tensor | None = field(default=None, repr=False)
    in_use: bool = field(default=False, repr=False)  # frames gathered since watch_frames (a stage's first update)
    _frames: torch.Tensor | None = field(default=None, repr=False)

    @property
    def frames(self) -> torch.Tensor:
        if self._frames is None:
            self._frames = self._read_frames()
        return self._frames

    @property
    def num_frames(self) -> int:
        return self.frames_shape[0]

    @property
    def num_trajectories(self) -> int:
        return len(self.traj_lens)

    @property
    def img_hw(self) -> int:
        return self.frames_shape[2]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def state_dim(self) -> int:
        return self.states.shape[1]

    @property
    def shapes(self) -> Shapes:
        return Shapes(self.act_dim, self.state_dim if self.states is not None else None, self.img_hw)

    def valid_indices(self, offset: int) -> torch.Tensor:
        """Global indices of every t with t + offset <= T - 1 in its trajectory. int64 [M] on index_device."""
        idx = [
            torch.arange(s, s + n - offset)
            for s, n in zip(self.traj_starts.tolist(), self.traj_lens.tolist(), strict=True)
        ]
        return torch.cat(idx).to(self.index_device)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """frames[idx] for idx of any shape, delivered on `device`: uint8 [*idx.shape, 3, H, W]."""
        self.in_use = True
        return self.rows(self.frames, idx, "frames")

    def rows(self, source: torch.Tensor, idx: torch.Tensor, kind: str) -> torch.Tensor:
        """source[idx] for a tensor of one row per frame (frames, masks) and idx of any shape, on `device`."""
        shape = (*idx.shape, *source.shape[1:])
        flat = idx.reshape(-1)
        if self.staging is not None and source.device.type == "cpu":
            # Host rows, GPU compute: gathered straight into a pinned buffer, copied asynchronously.
            fill = lambda out: torch.index_select(source, 0, flat, out=out.view(-1, *source.shape[1:]))  # noqa: E731
            return self.staging.copy(kind, shape, source.dtype, fill)
        if flat.device != source.device:  # rows moved to the GPU (place_frames), host indices: copied there
            flat = self.to_device(flat, f"{kind} index")
        return torch.index_select(source, 0, flat).view(shape).to(self.device)  # faster than source[idx] on CPU

    def to_device(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        """A host tensor of a batch (indices, offsets) on `device`: through a pinned buffer of its kind when the
        frames are staged (a copy from pageable memory would block the host), else as it is or by .to."""
        if self.staging is None:
            return t.to(self.device, non_blocking=True)
        return self.staging.copy(kind, t.shape, t.dtype, lambda out: out.copy_(t))

    def stack_indices(self, idx: torch.Tensor, frame_stack: int, extra: int = 0) -> torch.Tensor:
        """[B] -> [B, frame_stack + extra]: indices idx - k + 1 .. idx + extra, the past ones clamped to the
        trajectory's first frame (padding with the first frame, as the environment's frame stack does)."""
        rel = torch.arange(-frame_stack + 1, extra + 1, device=idx.device)
        return torch.maximum(idx[:, None] + rel, self.start_of[idx][:, None])

    def obs(self, idx: torch.Tensor, frame_stack: int) -> torch.Tensor:
        """Stacked observations at global indices idx: uint8 [B, 3k, H, W], oldest frame first."""
        return stack_channels(self._gather(self.stack_indices(idx, frame_stack)))

    def batch(
        self, idx: torch.Tensor, frame_stack: int, future_offset: int = 0, next_obs: bool = False
    ) -> dict[str, torch.Tensor]:
        """A training batch at global indices idx (all with t + future_offset <= T - 1).

        Returns uint8 `obs` [B, 3k, H, W] (o_t); with next_obs, `next_obs` (o_{t+1}); with future_offset K > 0,
        `future_obs` (o_{t+k}, k uniform in 1..K for each sample) and `offsets` [B]; `actions` [B, A] and
        `states` [B, S] at t when loaded.
        """
        out = {}
        window = self._gather(self.stack_indices(idx, frame_stack, extra=int(next_obs)))  # [B, k(+1), 3, H, W]
        out["obs"] = stack_channels(window[:, :frame_stack])  # views of the gathered window, no copy
        if next_obs:
            out["next_obs"] = stack_channels(window[:, 1:])
        if future_offset > 0:
            k = torch.randint(1, future_offset + 1, idx.shape, device=idx.device)
            out["future_obs"] = self.obs(idx + k, frame_stack)
            out["offsets"] = self.to_device(k, "offsets")
        dev_idx = self.to_device(idx, "index")
        if self.actions is not None:
            out["actions"] = self.actions[dev_idx]
        if self.states is not None:
            out["states"] = self.states[dev_idx]
        return out

    def epoch(
        self, valid: torch.Tensor, batch_size: int, drop_last: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[torch.Tensor]:
        """Shuffled batches of indices from `valid`, without replacement. drop_last: the last partial batch is
        dropped (unless the data holds less than one batch); otherwise it is the epoch's last, smaller batch.
        batch_size is the global batch: in a distributed run each rank draws batch_size / world_size from its share
        of the trajectories (and its epochs run over that share). generator: the permutation's (on valid's device;
        None: the global random state)."""
        batch_size = dist.local_batch(batch_size)
        perm = valid[torch.randperm(len(valid), device=valid.device, generator=generator)]
        for i in range(num_batches(len(valid), batch_size, drop_last)):
            yield perm[i * batch_size : (i + 1) * batch_size]

    def sample(self, valid: torch.Tensor, batch_size: int) -> torch.Tensor:
        """batch_size indices drawn uniformly from `valid`, with replacement (in a distributed run, batch_size /
        world_size from this rank's share: batch_size is the global batch)."""
        batch_size = dist.local_batch(batch_size)
        return valid[torch.randint(0, len(valid), (batch_size,), device=valid.device)]


def num_batches(num_samples: int, batch_size: int, drop_last: bool = True) -> int:
    """Batches of one epoch: floor(N / B) when the last partial batch is dropped, ceil(N / B) when kept (>= 1)."""
    if drop_last:
        return max(1, num_samples // batch_size)
    return max(1, -(-num_samples // batch_size))


def stack_channels(frames: torch.Tensor) -> torch.Tensor:
    """[B, k, 3, H, W] -> [B, 3k, H, W]: frames concatenated on channels, oldest first (a view)."""
    b, k, c, h, w = frames.shape
    return frames.view(b, k * c, h, w) if frames.is_contiguous() else frames.reshape(b, k * c, h, w)


def normalize_obs(obs: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1]: (x / 255 - 0.5) * 2."""
    return obs.float().div_(255.0).sub_(0.5).mul_(2.0)


def check_data_file(flag: str, path: str) -> None:
    """A config field naming an HDF5 file to read (`--lapo.data_path=...`) is refused at the start of a run, naming
    the field, when the file is missing or is not HDF5."""
    if "masks" in flag:
        check_hdf5_file(f"{flag}={path}", path, "a masks file (scripts/generate_masks_hdf5.py makes one)")
    else:
        hint = " (scripts/data/download_data.py fetches the paper's; docs/DATA.md)"
        check_hdf5_file(f"{flag}={path}", path, "an HDF5 dataset", hint)


def check_batch_size(flag: str, batch_size: int, count: int, path: str, with_replacement: bool = False) -> None:
    """A batch larger than the samples it is drawn from: an error for a sampler without replacement (an epoch's
    batch could not be that large), a one-line warning for one with replacement (each batch repeats samples)."""
    if batch_size <= count:
        return
    if with_replacement:
        if dist.is_main():
            warn(f"{flag}={batch_size} is larger than the {count} samples of {path}: each batch repeats samples")
        return
    raise ConfigError(
        f"{flag}={batch_size}: larger than the {count} samples it is drawn from ({path}, without replacement); "
        f"use at most {count}, or a larger dataset"
    )


def read_root_attrs(path: str) -> dict:
    """Root attributes of a dataset file as plain Python values; checks the required ones are present."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise MissingFileError(f"dataset file not found: {path}") from None
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        attrs = {k: plain_attr(v) for k, v in f.attrs.items()}
    missing = [k for k in REQUIRED_ROOT_ATTRS if k not in attrs]
    if missing:
        raise DatasetError(f"{path}: root attribute(s) {missing} missing; expected {list(REQUIRED_ROOT_ATTRS)}")
    return attrs


def clipped_actions_warning(path: str, attrs: dict) -> str | None:
    """The warning for a file whose actions were clipped to [-1, 1] by this project's earlier collector, or None.

    The paper's datasets store the expert's raw actions (docs/FAITHFULNESS.md, "raw actions"). Files of this
    project's collector carry `background_source`; from collector_version 2 on they store raw actions and say so
    (`actions_clipped` False). A file with `background_source` but without `collector_version`, or with
    `actions_clipped` True, holds clipped actions.
    """
    old_collector = "background_source" in attrs and "collector_version" not in attrs
    if not (old_collector or bool(attrs.get("actions_clipped", False))):
        return None
    return (
        f"{path}: its actions were clipped to [-1, 1] by the earlier collector (no collector_version attribute), "
        "while the paper's datasets store the expert's raw actions (about 89% of cheetah-run entries lie outside "
        "[-1, 1]). Action targets (decoder, IDM, BC, the supervised head) and every action MSE are then on another "
        "scale than the paper's; evaluation returns are not affected. Re-collect it with the current collector to "
        "match the paper."
    )


def plain_attr(v):
    """An HDF5 attribute as a plain Python value (text, number or list)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


_CACHE: dict[tuple, "TrajectoryData"] = {}  # the datasets this process opened (load_dataset)
MARGIN = 0.05  # of the GPU's memory: kept free beside the moved frames and a stage's measured peak


def watch_frames(device: torch.device) -> None:
    """Called as a stage's updates begin (src/stage.py): no dataset counts as read by it yet, and on a GPU its peak
    memory is measured from here."""
    for d in _CACHE.values():
        d.in_use = False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def place_frames(device: torch.device, stage: str) -> None:
    """Called after a stage's first update (backward and optimizer step included, so Adam's state exists): the
    frames (and masks) of the datasets that update read, opened with frames_device "auto" and still in host memory,
    go to the GPU if they fit: their bytes + what an update allocates beyond what stays allocated between updates
    (the measured peak minus the memory allocated now) + MARGIN of the GPU <= the GPU's free memory after PyTorch's
    cache is emptied. The decision is said in one line. The indices stay where they are drawn (index_device): the
    same indices gather the same frames, so the numbers of the run do not depend on the decision."""
    datasets = [d for d in _CACHE.values() if d.auto and d.in_use and d.frames_device != d.device]
    if device.type != "cuda" or not datasets:
        return
    nbytes = sum(t.nbytes for d in datasets for t in (d.frames, d.masks) if t is not None)
    torch.cuda.empty_cache()  # memory an earlier stage or the first update freed is free again
    free, total = torch.cuda.mem_get_info(device)
    kept = torch.cuda.memory_allocated(device)
    update = torch.cuda.max_memory_allocated(device) - kept
    margin = int(MARGIN * total)
    fits = nbytes + update + margin <= free
    for d in datasets if fits else []:
        d.frames_device = d.device
        d._frames = d._frames.to(d.device)
        d.masks = None if d.masks is None else d.masks.to(d.device)
    if dist.is_main():
        what = ", ".join(d.path for d in datasets) + (" + masks" if any(d.masks is not None for d in datasets) else "")
        where = f"moved to {device}" if fits else "stay in host memory, they do not fit on the GPU"
        tqdm.write(
            f"{stage}: after the first update, frames {_size(nbytes)} of {what} {where} (free {_size(free)}; an "
            f"update's peak {_size(update)} above the {_size(kept)} kept between updates; margin {_size(margin)}; "
            "--frames_device overrides)"
        )


def load_dataset(
    path: str,
    device: str | torch.device = "cpu",
    frame_stack: int = 3,
    min_offset: int = 1,
    load_actions: bool = True,
    load_states: bool = True,
    max_trajectories: int | None = None,
    frames_device: str = "auto",
    desc: str | None = None,
) -> TrajectoryData:
    """Reads a dataset file into one TrajectoryData (frames on first use), or returns the one already read by
    this process.

    frames_device: "auto" (host memory, moved to the GPU after a stage's first update if they fit: place_frames),
    "cpu", "pinned" (host memory; on CUDA both send batches through pinned buffers), or a device name.
    Every trajectory must hold at least frame_stack + min_offset steps (the largest offset the caller samples).
    A file is read once per process (stages that share a path share its frames): a later call with the same
    path, device and trajectory limit reuses the first, provided it loaded at least the arrays now asked for.
    In a distributed run (src/dist.py) this rank reads only its share of the (first max_trajectories)
    trajectories: those of position i with i % world_size == rank; a file with fewer trajectories than ranks is
    refused.
    """
    device = torch.device(device)
    key = (str(Path(path).resolve()), str(device), max_trajectories)
    cached = _CACHE.get(key)
    if cached is not None and (cached.actions is not None or not load_actions):
        if cached.states is not None or not load_states:
            short = int(cached.traj_lens.min())
            if short < frame_stack + min_offset:
                i = int(cached.traj_lens.argmin())
                raise DatasetError(
                    f"{path}: trajectory '{i}' has {short} steps; at least frame_stack + offset = "
                    f"{frame_stack} + {min_offset} = {frame_stack + min_offset} are needed"
                )
            return cached
    attrs = read_root_attrs(path)
    message = clipped_actions_warning(path, attrs) if load_actions else None
    if message:
        warnings.warn(message, stacklevel=2)
    with h5py.File(path, "r") as f:
        keys = shard(_trajectory_keys(f, path)[:max_trajectories], path)
        needed = ["obs"] + (["actions"] if load_actions else []) + (["states"] if load_states else [])
        lens = []
        for k in keys:
            for name in needed:
                if name not in f[k]:
                    raise DatasetError(f"{path}: group '{k}' has no '{name}' dataset (it has {list(f[k].keys())})")
            n = f[k]["obs"].shape[0]
            if n < frame_stack + min_offset:
                raise DatasetError(
                    f"{path}: trajectory '{k}' has {n} steps; at least frame_stack + offset = "
                    f"{frame_stack} + {min_offset} = {frame_stack + min_offset} are needed"
                )
            for name in needed[1:]:
                if f[k][name].shape[0] != n:
                    raise DatasetError(f"{path}: group '{k}': '{name}' has {f[k][name].shape[0]} steps, obs has {n}")
            lens.append(n)
        first = f[keys[0]]["obs"]
        if first.ndim != 4 or first.shape[-1] != 3 or first.dtype != np.uint8:
            raise DatasetError(f"{path}: 'obs' must be uint8 [T, H, W, 3], got {first.dtype} {first.shape}")
        hw = first.shape[1:]
        if hw[0] != int(attrs["img_hw"]):
            raise DatasetError(f"{path}: frames are {hw[0]} px but root attribute img_hw is {attrs['img_hw']}")
        for k in keys[1:]:
            if f[k]["obs"].shape[1:] != hw:
                raise DatasetError(f"{path}: group '{k}' frames are {f[k]['obs'].shape[1:]}, the first group's {hw}")
        actions = [np.asarray(f[k]["actions"], dtype=np.float32) for k in keys] if load_actions else None
        states = [np.asarray(f[k]["states"], dtype=np.float32) for k in keys] if load_states else None
    for name, arrays in (("actions", actions), ("states", states)):
        for k, a in zip(keys, arrays or [], strict=False):
            if not np.isfinite(a).all():
                t, j = np.argwhere(~np.isfinite(a))[0]
                raise DatasetError(f"{path}: group '{k}' '{name}'[{t}, {j}] is {a[t, j]}; expected finite numbers")
    total = int(sum(lens))
    chw = (3, hw[0], hw[1])
    host = frames_device in ("auto", "cpu", "pinned")  # "auto" frames may go to the GPU later: place_frames
    fdev = torch.device("cpu") if host else torch.device(frames_device)

    def read_frames() -> torch.Tensor:
        frames = torch.empty((total, *chw), dtype=torch.uint8, device=fdev)
        staging = torch.empty((max(lens), *hw), dtype=torch.uint8, pin_memory=fdev.type == "cuda")
        start = 0
        with h5py.File(path, "r") as f:
            for k, n in zip(
                tqdm(keys, desc=desc or f"loading {path}", leave=False, disable=not dist.is_main()), lens, strict=True
            ):
                f[k]["obs"].read_direct(staging[:n].numpy())
                frames[start : start + n].copy_(staging[:n].permute(0, 3, 1, 2))  # [T, H, W, 3] -> [T, 3, H, W]
                start += n
        return frames

    lens_t = torch.tensor(lens, dtype=torch.int64)
    starts = torch.cumsum(lens_t, 0) - lens_t
    start_of = torch.repeat_interleave(starts, lens_t).to(fdev)
    data = TrajectoryData(
        path=path,
        frames_shape=(total, *chw),
        frames_device=fdev,
        _read_frames=read_frames,
        actions=torch.from_numpy(np.concatenate(actions)).to(device) if load_actions else None,
        states=torch.from_numpy(np.concatenate(states)).to(device) if load_states else None,
        start_of=start_of,
        traj_starts=starts,
        traj_lens=lens_t,
        attrs=attrs,
        device=device,
        keys=keys,
        staging=PinnedStaging(device) if fdev.type == "cpu" and device.type == "cuda" else None,
        index_device=fdev,
        auto=frames_device == "auto",
    )
    _CACHE[key] = data
    return data


def shard(keys: list[str], path: str) -> list[str]:
    """This rank's trajectories: those at positions i with i % world_size == rank (all of them in one process)."""
    n, r = dist.world_size(), dist.rank()
    if len(keys) < n:
        raise DatasetError(
            f"{path}: {len(keys)} trajectories for {n} ranks; a distributed run gives every rank at least one "
            f"trajectory of each dataset. Use at most {len(keys)} ranks (or a larger dataset / max_trajectories)"
        )
    return keys[r::n]


def check_compatible(reference: TrajectoryData, other: TrajectoryData, what: str = "labeled") -> None:
    """The labeled / evaluation set must have the unlabeled set's image size and action size."""
    if other.img_hw != reference.img_hw:
        raise DatasetError(
            f"{what} set {other.path} has {other.img_hw} px frames but {reference.path} has {reference.img_hw} px"
        )
    if other.actions is not None and reference.actions is not None and other.act_dim != reference.act_dim:
        raise DatasetError(
            f"{what} set {other.path} has action size {other.act_dim} but {reference.path} has {reference.act_dim}"
        )


# ---------------------------------------------------------------- foreground masks (LAPO with a masked loss)


def load_masks(path: str, data: TrajectoryData) -> torch.Tensor:
    """Foreground masks of a dataset, aligned with its frames: uint8 [N, 1, H, W] on `data.frames_device`.

    Masks file layout: the same trajectory groups as the dataset ("0", "1", ...), each with `masks` uint8
    [T, H, W] (255 = foreground, 0 = background), and root attributes `source_file`, `method` ("depth" or "true")
    and the method's parameters. The masks of the trajectories `data` holds (`data.keys`, in the same order: in a
    distributed run this rank's share) are read; every group must have the shape of the dataset's frames.
    Gather stacked masks for sampled indices with `stacked_masks`.
    """
    if not Path(path).exists():
        raise MissingFileError(f"masks file not found: {path}")
    keys = data.keys
    _, _, h, w = data.frames_shape
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        for k, n in zip(keys, data.traj_lens.tolist(), strict=True):
            if k not in f or "masks" not in f[k]:
                raise DatasetError(
                    f"{path}: group '{k}' of dataset {data.path} has no 'masks' in the masks file "
                    f"(its root keys start with {sorted(f.keys(), key=lambda s: (not s.isdigit(), s))[:10]})"
                )
            m = f[k]["masks"]
            if m.shape != (n, h, w) or m.dtype != np.uint8:
                raise DatasetError(
                    f"{path}: group '{k}': masks are {m.dtype} {tuple(m.shape)}, expected uint8 {(n, h, w)} "
                    f"(dataset {data.path} group '{k}' obs: {(n, h, w, 3)})"
                )
        masks = torch.empty((data.num_frames, 1, h, w), dtype=torch.uint8, device=data.frames_device)
        staging = torch.empty((int(data.traj_lens.max()), h, w), dtype=torch.uint8)
        for k, s, n in zip(keys, data.traj_starts.tolist(), data.traj_lens.tolist(), strict=True):
            f[k]["masks"].read_direct(staging[:n].numpy())
            masks[s : s + n, 0].copy_(staging[:n])
    return masks


def stacked_masks(masks: torch.Tensor, data: TrajectoryData, idx: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """The masks of the stacked observation at global indices idx, on `data.device`: uint8 [B, k, H, W], mask j
    belonging to frame j (oldest first, padded like TrajectoryData.obs), i.e. to channels 3j .. 3j+2."""
    stack = data.stack_indices(idx, frame_stack)  # [B, k]
    return data.rows(masks, stack, "masks").squeeze(2)  # [B, k, 1, H, W] -> [B, k, H, W]
