"""HDF5 datasets in the released layout (docs/FAITHFULNESS.md, "Data"): load_dataset, TrajectoryData, place_frames."""

import math
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from src import dist
from src.errors import ConfigError, DatasetError, MissingFileError, check_hdf5_file, warn

REQUIRED_ROOT_ATTRS = ("domain_name", "task_name", "difficulty", "dynamic", "img_hw")


@dataclass(frozen=True)
class Shapes:
    """Action size, state size (None: states not loaded) and image size of a dataset."""

    act_dim: int
    state_dim: int | None
    img_hw: int


def _trajectory_keys(f: h5py.File, path: str) -> list[str]:
    keys = [k for k in f.keys() if k.isdigit()]
    if not keys:
        raise DatasetError(f"{path}: no trajectory groups ('0', '1', ...) found; root keys are {list(f.keys())[:10]}")
    return sorted(keys, key=int)


def trajectory_count(path: str) -> int:
    with h5py.File(path, "r") as f:
        return len(_trajectory_keys(f, path))


def _open(path: str, what: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise MissingFileError(f"{what} not found: {path}") from None
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None


def _pinned_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(numel, dtype=dtype, pin_memory=True)


class PinnedStaging:
    """Non-blocking host -> GPU copies through two pinned buffers per kind, each reused once its copy finished."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, deque] = {}  # kind -> the slots [buffer, event], the next one first

    def copy(self, kind: str, shape: tuple, dtype: torch.dtype, fill: Callable[[torch.Tensor], None]) -> torch.Tensor:
        """fill(out) writes the host tensor into `out` (pinned, `shape`); returns it on the device."""
        slots = self.buffers.setdefault(kind, deque([[None, None], [None, None]]))
        slots.rotate()
        buf, event = slots[0]
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
        slots[0] = [buf, event]
        return out


@dataclass
class TrajectoryData:
    """This rank's trajectories of one file along time: frames uint8 [N, 3, H, W], masks, actions [N, A], states [N, S]
    (or None), start_of [N]. Indices are drawn on index_device, where frames were first placed (moves keep draws)."""

    path: str
    frames_shape: tuple[int, ...]
    frames_device: torch.device
    actions: torch.Tensor
    states: torch.Tensor | None
    start_of: torch.Tensor
    traj_starts: torch.Tensor
    traj_lens: torch.Tensor
    attrs: dict
    device: torch.device
    keys: list[str] = field(default_factory=list)
    staging: PinnedStaging | None = field(default=None, repr=False)  # host frames, CUDA compute: the copies
    index_device: torch.device = torch.device("cpu")
    auto: bool = False
    masks: torch.Tensor | None = field(default=None, repr=False)
    in_use: bool = field(default=False, repr=False)  # frames gathered since watch_frames (a stage's first update)
    _frames: torch.Tensor | None = field(default=None, repr=False)

    @property
    def frames(self) -> torch.Tensor:
        if self._frames is None:
            frames = torch.empty(self.frames_shape, dtype=torch.uint8, device=self.index_device)
            with h5py.File(self.path, "r") as f:
                _read_rows(f, self.keys, self.traj_lens.tolist(), "obs", frames, f"loading {self.path}")
            self._frames = frames
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
    def shapes(self) -> Shapes:
        return Shapes(self.act_dim, None if self.states is None else self.states.shape[1], self.img_hw)

    def valid_indices(self, offset: int) -> torch.Tensor:
        """Global indices of every t with t + offset <= T - 1 in its trajectory. int64 [M] on index_device."""
        starts, lens = self.traj_starts.tolist(), self.traj_lens.tolist()
        idx = [torch.arange(s, s + n - offset) for s, n in zip(starts, lens, strict=True)]
        return torch.cat(idx).to(self.index_device)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        self.in_use = True
        return self.rows(self.frames, idx, "frames")

    def rows(self, source: torch.Tensor, idx: torch.Tensor, kind: str) -> torch.Tensor:
        """source[idx] (one row per frame; idx of any shape) on `device`, via a pinned buffer for host rows."""
        shape = (*idx.shape, *source.shape[1:])
        flat = idx.reshape(-1)
        if self.staging is not None and source.device.type == "cpu":
            fill = lambda out: torch.index_select(source, 0, flat, out=out.view(-1, *source.shape[1:]))  # noqa: E731
            return self.staging.copy(kind, shape, source.dtype, fill)
        if flat.device != source.device:  # rows moved to the GPU (place_frames), host indices: copied there
            flat = self.to_device(flat, f"{kind} index")
        return torch.index_select(source, 0, flat).view(shape).to(self.device)  # faster than source[idx] on CPU

    def to_device(self, t: torch.Tensor, kind: str) -> torch.Tensor:
        if self.staging is None:
            return t.to(self.device, non_blocking=True)
        return self.staging.copy(kind, t.shape, t.dtype, lambda out: out.copy_(t))

    def stack_indices(self, idx: torch.Tensor, frame_stack: int, extra: int = 0) -> torch.Tensor:
        """[B] -> [B, k + extra]: indices idx - k + 1 .. idx + extra, clamped to the trajectory's first frame."""
        rel = torch.arange(-frame_stack + 1, extra + 1, device=idx.device)
        return torch.maximum(idx[:, None] + rel, self.start_of[idx][:, None])

    def obs(self, idx: torch.Tensor, frame_stack: int) -> torch.Tensor:
        """Stacked observations at global indices idx: uint8 [B, 3k, H, W], oldest frame first."""
        return stack_channels(self._gather(self.stack_indices(idx, frame_stack)))

    def batch(self, idx: torch.Tensor, frame_stack: int, future_offset=0, next_obs=False) -> dict[str, torch.Tensor]:
        """uint8 `obs` o_t [B, 3k, H, W], `next_obs` o_{t+1}, with K = future_offset > 0 `future_obs` o_{t+k} (k
        uniform in 1..K, `offsets` [B]), `actions` and `states` at t; idx must satisfy t + K <= T - 1."""
        window = self._gather(self.stack_indices(idx, frame_stack, extra=int(next_obs)))  # [B, k(+1), 3, H, W]
        out = {"obs": stack_channels(window[:, :frame_stack])}  # views of the gathered window, no copy
        if next_obs:
            out["next_obs"] = stack_channels(window[:, 1:])
        if future_offset > 0:
            k = torch.randint(1, future_offset + 1, idx.shape, device=idx.device)
            out["future_obs"] = self.obs(idx + k, frame_stack)
            out["offsets"] = self.to_device(k, "offsets")
        dev_idx = self.to_device(idx, "index")
        out["actions"] = self.actions[dev_idx]
        if self.states is not None:
            out["states"] = self.states[dev_idx]
        return out

    def epoch(self, valid: torch.Tensor, batch_size: int, drop_last=True, generator=None) -> Iterator[torch.Tensor]:
        """Shuffled index batches from `valid` without replacement; each rank draws batch_size / world_size."""
        batch_size = dist.local_batch(batch_size)
        perm = valid[torch.randperm(len(valid), device=valid.device, generator=generator)]
        for i in range(num_batches(len(valid), batch_size, drop_last)):
            yield perm[i * batch_size : (i + 1) * batch_size]

    def sample(self, valid: torch.Tensor, batch_size: int) -> torch.Tensor:
        return valid[torch.randint(0, len(valid), (dist.local_batch(batch_size),), device=valid.device)]


def num_batches(num_samples: int, batch_size: int, drop_last: bool = True) -> int:
    return max(1, num_samples // batch_size if drop_last else -(-num_samples // batch_size))


def stack_channels(frames: torch.Tensor) -> torch.Tensor:
    """[B, k, 3, H, W] -> [B, 3k, H, W]: frames concatenated on channels, oldest first (a view)."""
    return frames.flatten(1, 2)


def normalize_obs(obs: torch.Tensor) -> torch.Tensor:
    return obs.float().div_(255.0).sub_(0.5).mul_(2.0)


def check_data_file(flag: str, path: str) -> None:
    if "masks" in flag:
        return check_hdf5_file(f"{flag}={path}", path, "a masks file (scripts/generate_masks_hdf5.py makes one)")
    hint = " (scripts/data/download_data.py fetches the paper's; docs/DATA.md)"
    check_hdf5_file(f"{flag}={path}", path, "an HDF5 dataset", hint)


def check_batch_size(flag: str, batch_size: int, count: int, path: str, with_replacement: bool = False) -> None:
    if batch_size > count and not with_replacement:
        raise ConfigError(
            f"{flag}={batch_size}: larger than the {count} samples it is drawn from ({path}, without replacement); "
            f"use at most {count}, or a larger dataset"
        )
    if batch_size > count and dist.is_main():
        warn(f"{flag}={batch_size} is larger than the {count} samples of {path}: each batch repeats samples")


def read_root_attrs(path: str) -> dict:
    with _open(path, "dataset file") as f:
        attrs = {k: plain_attr(v) for k, v in f.attrs.items()}
    missing = [k for k in REQUIRED_ROOT_ATTRS if k not in attrs]
    if missing:
        raise DatasetError(f"{path}: root attribute(s) {missing} missing; expected {list(REQUIRED_ROOT_ATTRS)}")
    return attrs


def plain_attr(v):
    if isinstance(v, bytes):
        return v.decode()
    return v.tolist() if isinstance(v, np.generic | np.ndarray) else v  # a numpy scalar's tolist() is its item()


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


_CACHE: dict[tuple, TrajectoryData] = {}  # the datasets this process opened (load_dataset)
MARGIN = 0.05  # of the GPU's memory: kept free beside the moved frames and a stage's measured peak


def watch_frames(device: torch.device) -> None:
    """At a stage's start: marks no dataset read yet and resets the GPU's peak memory statistics."""
    for d in _CACHE.values():
        d.in_use = False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def place_frames(device: torch.device, stage: str) -> None:
    """After a stage's first update: "auto" frames go to the GPU if bytes + peak - allocated + MARGIN <= free."""
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


def _check_steps(path: str, keys: list[str], lens: list[int], frame_stack: int, min_offset: int) -> None:
    for k, n in zip(keys, lens, strict=True):
        if n < frame_stack + min_offset:
            raise DatasetError(
                f"{path}: trajectory '{k}' has {n} steps; at least frame_stack + offset = "
                f"{frame_stack} + {min_offset} = {frame_stack + min_offset} are needed"
            )


def _read_floats(f: h5py.File, keys: list[str], name: str, path: str) -> torch.Tensor:
    arrays = [np.asarray(f[k][name], dtype=np.float32) for k in keys]
    for k, a in zip(keys, arrays, strict=True):
        if not np.isfinite(a).all():
            t, j = np.argwhere(~np.isfinite(a))[0]
            raise DatasetError(f"{path}: group '{k}' '{name}'[{t}, {j}] is {a[t, j]}; expected finite numbers")
    return torch.from_numpy(np.concatenate(arrays))


def _read_rows(f: h5py.File, keys: list[str], lens: list[int], name: str, out: torch.Tensor, desc: str) -> None:
    """The groups' uint8 `name` ([T, H, W, C] or [T, H, W]) read in turn into out [N, C, H, W], through a buffer."""
    c, h, w = out.shape[1:]
    buf = torch.empty((max(lens), h, w, c), dtype=torch.uint8, pin_memory=out.device.type == "cuda")
    start = 0
    for k, n in zip(tqdm(keys, desc=desc, leave=False, disable=not dist.is_main()), lens, strict=True):
        f[k][name].read_direct(buf[:n].view(f[k][name].shape).numpy())
        out[start : start + n].copy_(buf[:n].permute(0, 3, 1, 2))  # [T, H, W, C] -> [T, C, H, W]
        start += n


def load_dataset(
    path: str,
    device: str | torch.device = "cpu",
    frame_stack: int = 3,
    min_offset: int = 1,
    load_states: bool = True,
    max_trajectories: int | None = None,
    frames_device: str = "auto",
) -> TrajectoryData:
    """The file's (first max_trajectories) trajectories, each >= frame_stack + min_offset steps; rank r holds i % world
    == r. frames_device: "auto" (host, then place_frames), "cpu", "pinned" or a device. Cached per (path, device, N)."""
    device = torch.device(device)
    key = (str(Path(path).resolve()), str(device), max_trajectories)
    cached = _CACHE.get(key)
    if cached is not None and (cached.states is not None or not load_states):
        _check_steps(path, cached.keys, cached.traj_lens.tolist(), frame_stack, min_offset)
        return cached
    attrs = read_root_attrs(path)
    # The earlier collector of this project clipped actions to [-1, 1] (docs/FAITHFULNESS.md, "raw actions").
    old_collector = "background_source" in attrs and "collector_version" not in attrs
    if old_collector or attrs.get("actions_clipped", False):
        warnings.warn(
            f"{path}: its actions were clipped to [-1, 1] by the earlier collector (no collector_version attribute), "
            "while the paper's datasets store the expert's raw actions: action targets and action MSEs are then on "
            "another scale than the paper's (returns are not). Re-collect it with the current collector.",
            stacklevel=2,
        )
    with h5py.File(path, "r") as f:
        keys = _trajectory_keys(f, path)[:max_trajectories]
        if len(keys) < dist.world_size():
            raise DatasetError(
                f"{path}: {len(keys)} trajectories for {dist.world_size()} ranks; a distributed run gives every rank "
                f"at least one trajectory of each dataset. Use at most {len(keys)} ranks (or a larger dataset / "
                "max_trajectories)"
            )
        keys = keys[dist.rank() :: dist.world_size()]  # this rank's share
        needed = ["obs", "actions"] + (["states"] if load_states else [])
        lens, hw = [], None
        for k in keys:
            for name in needed:
                if name not in f[k]:
                    raise DatasetError(f"{path}: group '{k}' has no '{name}' dataset (it has {list(f[k].keys())})")
            obs, n = f[k]["obs"], f[k]["obs"].shape[0]
            hw = hw or (int(attrs["img_hw"]), *obs.shape[2:3], 3)  # H: the root attribute, W: the first group's
            if obs.shape[1:] != hw or obs.dtype != np.uint8:
                raise DatasetError(
                    f"{path}: group '{k}' 'obs' is {obs.dtype} {obs.shape}; expected uint8 [T, H, W, 3] with H the "
                    f"root attribute img_hw ({attrs['img_hw']}) and W that of group '{keys[0]}'"
                )
            for name in needed[1:]:
                if f[k][name].shape[0] != n:
                    raise DatasetError(f"{path}: group '{k}': '{name}' has {f[k][name].shape[0]} steps, obs has {n}")
            lens.append(n)
        _check_steps(path, keys, lens, frame_stack, min_offset)
        actions = _read_floats(f, keys, "actions", path).to(device)
        states = _read_floats(f, keys, "states", path).to(device) if load_states else None
    fdev = torch.device("cpu" if frames_device in ("auto", "cpu", "pinned") else frames_device)  # auto: place_frames
    lens_t = torch.tensor(lens, dtype=torch.int64)
    starts = torch.cumsum(lens_t, 0) - lens_t
    data = TrajectoryData(
        path=path,
        frames_shape=(sum(lens), 3, hw[0], hw[1]),
        frames_device=fdev,
        actions=actions,
        states=states,
        start_of=torch.repeat_interleave(starts, lens_t).to(fdev),
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


def check_compatible(reference: TrajectoryData, other: TrajectoryData, what: str = "labeled") -> None:
    if other.img_hw != reference.img_hw:
        raise DatasetError(
            f"{what} set {other.path} has {other.img_hw} px frames but {reference.path} has {reference.img_hw} px"
        )
    if other.act_dim != reference.act_dim:
        raise DatasetError(
            f"{what} set {other.path} has action size {other.act_dim} but {reference.path} has {reference.act_dim}"
        )


def load_masks(path: str, data: TrajectoryData) -> torch.Tensor:
    """`data`'s masks from a masks file (docs/MASKS.md), uint8 [N, 1, H, W] on `data.frames_device`."""
    _, _, h, w = data.frames_shape
    lens = data.traj_lens.tolist()
    with _open(path, "masks file") as f:
        for k, n in zip(data.keys, lens, strict=True):
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
        _read_rows(f, data.keys, lens, "masks", masks, f"loading {path}")
    return masks


def stacked_masks(masks: torch.Tensor, data: TrajectoryData, idx: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """uint8 [B, k, H, W] on `data.device`: mask j belongs to channels 3j .. 3j+2 of TrajectoryData.obs(idx)."""
    return data.rows(masks, data.stack_indices(idx, frame_stack), "masks").squeeze(2)  # [B, k, 1, H, W] -> [B, k, H, W]
