"""Collect an expert dataset: the expert acts on proprioceptive states while the DCS renders the distracted frames, in
the released HDF5 layout; resumable, one writer per file (docs/DATA.md). --record_masks=True also writes
`<stem>-masks.hdf5`.

    python -m scripts.data_collection.collect_data --checkpoint_path=../shared/experts/cheetah-run-expert \\
        --dcs_backgrounds_path=builtin --save_path=data/example-data.hdf5 --num_trajectories=14 \\
        --max_episode_steps=100 --dcs_difficulty=scale_easy_video_hard --dcs_backgrounds_split=train \\
        --dcs_img_hw=64 --seed=0 --compression=gzip --num_workers=2     # data/example-data.hdf5, as it was made
"""

import contextlib
import errno
import fcntl
import importlib.metadata
import json
import multiprocessing as mp
import os
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import pyrallis
import torch
from tqdm.auto import tqdm

from scripts.data_collection.experts import Expert, load_expert, resolve_checkpoint
from src.data import plain_attr
from src.errors import ConfigError, DatasetError, MissingFileError, OutputExistsError, UserError, user_errors

COMPLETE_ATTR = "complete"  # group attribute written last: the group holds a whole trajectory
LOCK_SUFFIX = ".lock"  # <save_path>.lock: the advisory lock of the output's writer
PARTIAL_SUFFIX = ".partial"  # <save_path>.partial: the new file of an --overwrite run, until it replaces the old one
RESERVE_MARGIN = 64 * 1024  # bytes reserved per trajectory beyond its arrays (HDF5 metadata, compression overhead)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Version 2: raw expert actions (as the paper's); version 1 (no attribute): clipped to [-1, 1], src/data.py warns.
COLLECTOR_VERSION = 2
# <group>/distractors/<name>: each frame's distractor state, float32 [T, k]; attribute `columns` names the columns.
DISTRACTOR_COLUMNS = {
    "background": "video,frame,direction",
    "camera": "dx,dy,dz,rx,ry,rz",
    "color": "r,g,b per material (offsets from the model's colours)",
}


@dataclass
class Config:
    checkpoint_path: str = ""  # PPO checkpoint folder or SB3 SAC zip (".zip" may be left out)
    checkpoint_name: str = "checkpoint.pt"  # state-dict file inside a PPO checkpoint folder
    dcs_backgrounds_path: str = "builtin"  # DAVIS-layout folder <root>/<video>/<frame>.jpg, or "builtin"
    save_path: str = "data/dataset.hdf5"  # output HDF5 file
    num_trajectories: int = 5  # trajectories in the file
    dcs_difficulty: str = "scale_easy_video_hard"  # DCS difficulty (src/dcs/constants.py)
    dcs_backgrounds_split: str = "train"  # DAVIS split of the background videos: "train" or "val"
    dcs_img_hw: int = 64  # rendered frame height = width, pixels
    seed: int = 0  # base seed; trajectory i uses episode_seed(seed, i)
    cuda: bool = False  # run the expert on CUDA when available
    num_workers: int = 1  # worker processes, each collecting whole trajectories
    max_episode_steps: int = 1000  # steps per trajectory (fewer if the episode ends earlier)
    dynamic: bool = True  # distractors change during the episode
    dcs_camera_mode: str = "release"  # DCS camera: "release" (the paper's data) or "corrected" (docs/FAITHFULNESS.md)
    overwrite: bool = False  # replace an existing output file (by a new one, swapped in when complete), not resume it
    compression: str = "none"  # HDF5 compression of the datasets: none, gzip or lzf
    domain_name: Optional[str] = None  # dm_control domain; default: from the checkpoint (an SB3 zip has none)
    task_name: Optional[str] = None  # dm_control task; default: from the checkpoint
    record_masks: bool = False  # also write true foreground masks to <save_path stem>-masks.hdf5 (src/masks.py)
    record_distractors: bool = True  # each frame's distractor state in <group>/distractors/ (docs/DATA.md)


@dataclass
class Trajectory:
    obs: np.ndarray  # uint8 [T, H, W, 3]
    actions: np.ndarray  # float32 [T, A]
    states: np.ndarray  # float32 [T, S]
    rewards: np.ndarray  # float32 [T]
    traj_return: float  # sum of rewards (float64)
    seed: int  # episode seed
    seconds: float  # wall time of the rollout (physics, expert, rendering)
    masks: Optional[np.ndarray] = None  # uint8 [T, H, W] true foreground masks (record_masks), else None
    distractors: Optional[dict] = None  # name -> float32 [T, k], each frame's distractor state (record_distractors)


def episode_seed(seed: int, index: int) -> int:
    """Seed of episode `index` of a dataset with base `seed` (independent streams per index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def collect_trajectory(
    env, expert: Expert, seed: int, max_steps: int, record_masks: bool = False, record_distractors: bool = True
) -> Trajectory:
    """One greedy episode; the expert sees info["state"]; optionally each frame's mask and distractor state."""
    if record_masks:
        from src.masks import segmentation_mask
    start = time.perf_counter()
    obs, info = env.reset(seed=seed)
    frames, states, actions, rewards, masks, distractors = [], [], [], [], [], []
    for _ in range(max_steps):
        frames.append(obs)
        if record_distractors:
            distractors.append(env.dcs_env.distractor_state())
        if record_masks:
            masks.append(segmentation_mask(env.dcs_env.physics, env.camera_id, obs.shape[0], obs.shape[1]))
        states.append(info["state"])
        action = expert.act(info["state"][None])[0].astype(np.float32)  # [A] raw, as released; the env clips it
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return Trajectory(
        obs=np.stack(frames).astype(np.uint8),
        actions=np.stack(actions).astype(np.float32),
        states=np.stack(states).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        traj_return=float(np.sum(np.asarray(rewards, dtype=np.float64))),
        seed=seed,
        seconds=time.perf_counter() - start,
        masks=np.stack(masks) if record_masks else None,
        distractors={k: np.stack([d[k] for d in distractors]) for k in distractors[0]} if record_distractors else None,
    )


def check_config(config: Config) -> None:
    """Errors a user can act on, raised before anything is loaded or written."""
    from src.dcs.constants import CAMERA_MODES, DIFFICULTIES

    if not config.checkpoint_path:
        raise ConfigError("--checkpoint_path is required (a PPO checkpoint folder or an SB3 SAC zip).")
    for name in ("num_trajectories", "num_workers", "max_episode_steps", "dcs_img_hw"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name}={getattr(config, name)}: expected a positive integer.")
    if config.seed < 0:
        raise ConfigError(f"--seed={config.seed}: expected a non-negative integer.")
    choices = dict(compression=("none", "gzip", "lzf"), dcs_camera_mode=CAMERA_MODES, dcs_difficulty=DIFFICULTIES)
    for name, valid in choices.items():
        if getattr(config, name) not in valid:
            raise ConfigError(f"--{name}={getattr(config, name)!r}: expected one of {tuple(valid)}.")
    if config.dcs_backgrounds_path != "builtin" and not Path(config.dcs_backgrounds_path).is_dir():
        raise MissingFileError(
            f"--dcs_backgrounds_path={config.dcs_backgrounds_path!r}: no such folder "
            "(expected a DAVIS-layout folder <root>/<video>/<frame>.jpg, or 'builtin')."
        )
    resolve_checkpoint(config.checkpoint_path, config.checkpoint_name)


def root_attrs(config: Config, domain_name: str, task_name: str) -> dict:
    """The file's root attributes; an existing file is resumed only when all of them match."""
    builtin = config.dcs_backgrounds_path == "builtin"
    path = config.dcs_backgrounds_path if builtin else os.path.normpath(config.dcs_backgrounds_path)
    attrs = dict(domain_name=domain_name, task_name=task_name, difficulty=config.dcs_difficulty)
    attrs |= dict(dynamic=bool(config.dynamic), img_hw=int(config.dcs_img_hw), split=config.dcs_backgrounds_split)
    attrs |= dict(background_source="builtin" if builtin else "davis", dcs_backgrounds_path=path, seed=int(config.seed))
    attrs |= dict(max_episode_steps=int(config.max_episode_steps), collector_version=COLLECTOR_VERSION)
    attrs |= dict(expert_checkpoint=os.path.normpath(config.checkpoint_path), dcs_camera_mode=config.dcs_camera_mode)
    # actions are the expert's raw outputs, as released; groups hold distractors/ (none when vanilla)
    return attrs | dict(actions_clipped=False, distractors_recorded=bool(config.record_distractors))


def package_versions() -> str:
    versions = {}
    for name in ("numpy", "torch", "mujoco", "dm_control", "gymnasium", "h5py", "stable_baselines3"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return json.dumps(versions, sort_keys=True)


class OutputInUseError(UserError):
    """Another process is writing the output file."""


class DiskFullError(UserError):
    """The disk filled up; the output keeps only whole trajectories."""


def sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _lock_holder(fd: int, lock_path: Path) -> str:
    for _ in range(20):  # the holder writes its record right after locking
        holder = os.pread(fd, 1 << 16, 0).decode(errors="replace").strip()
        if holder:
            return holder
        time.sleep(0.05)
    return f"a process that has not recorded its pid in {lock_path}"


@contextlib.contextmanager
def output_lock(path: Path):
    """Hold an exclusive flock on `<path>.lock` for the block, or raise OutputInUseError; the kernel frees it even
    on SIGKILL. The file names its holder and is removed, still locked, when the block ends."""
    lock_path = sibling(path, LOCK_SUFFIX)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the worker processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd, lock_path)
            os.close(fd)
            raise OutputInUseError(
                f"Output {path} is being written by another collector ({holder}; lock {lock_path}). "
                "Wait for it to finish or stop it, or choose another --save_path."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # A holder that exited between our open and flock removed the file we locked: lock the current one instead.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock_path)):
                break
        os.close(fd)
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        record = f"pid {os.getpid()} on host {socket.gethostname()}, started {started}: {shlex.join(sys.orig_argv)}"
        with contextlib.suppress(OSError):  # a full disk must not stop the lock: the record only serves messages
            os.ftruncate(fd, 0)
            os.pwrite(fd, (record + "\n").encode(), 0)
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


def refuse_if_open_for_writing(path: Path) -> None:
    """Raise OutputInUseError when another program holds `path` open for writing (HDF5's own file lock)."""
    if not path.exists():
        return
    try:
        with h5py.File(path, "r"):
            pass
    except BlockingIOError as e:
        raise OutputInUseError(
            f"Output {path} is open for writing by another program (HDF5 file lock: {e}). "
            "Wait for it to close the file, or choose another --save_path."
        ) from None
    except OSError:
        pass  # unreadable: checked by the caller


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C / SIGTERM received inside the block take effect (KeyboardInterrupt) only when it ends."""
    received = []
    deferred = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, _: received.append(signum)) for sig in deferred}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt


def is_disk_full(e: BaseException) -> bool:
    """True for h5py's no-space errors: OSError with errno, or RuntimeError with "errno = 28" in the text."""
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(e, (OSError, RuntimeError)) and any(f"errno = {code}," in str(e) for code in DISK_FULL_ERRNOS)


def complete_groups(f: h5py.File) -> list[str]:
    """Names of the leading run of complete trajectory groups "0", "1", ..., "k-1"."""
    names = []
    while str(len(names)) in f and f[str(len(names))].attrs.get(COMPLETE_ATTR, False):
        names.append(str(len(names)))
    return names


def count_complete(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return len(complete_groups(f))


def open_output(path: Path, attrs: dict, num_trajectories: int) -> tuple[h5py.File, list[float]] | None:
    """(file, returns of complete trajectories): new, or resumed if the same command made it (incomplete groups
    dropped); None, writing nothing, when it is complete."""
    if not path.exists():
        f = h5py.File(path, "w")
        f.attrs.update(attrs | dict(package_versions=package_versions(), dataset_return=float("nan")))
        f.flush()
        return f, []
    refuse_if_open_for_writing(path)
    try:
        with h5py.File(path, "r") as f:
            existing = {k: plain_attr(v) for k, v in f.attrs.items()}
            num_complete = len(complete_groups(f))
    except OSError as e:
        raise DatasetError(f"Output {path} exists but is not a readable HDF5 file ({e}); use --overwrite.") from None
    differing = {k: (existing.get(k), v) for k, v in attrs.items() if existing.get(k) != v}
    if differing:
        details = "; ".join(f"{k}: file has {a!r}, command gives {b!r}" for k, (a, b) in differing.items())
        if "collector_version" in differing:
            details += " (a file without collector_version was written by the earlier collector, which clipped actions)"
        raise OutputExistsError(
            f"Output {path} exists and was made by a different command ({details}). "
            "Use --overwrite to replace it, or another --save_path."
        )
    if num_complete > num_trajectories:
        raise OutputExistsError(
            f"Output {path} already holds {num_complete} trajectories, more than --num_trajectories="
            f"{num_trajectories}. Use --overwrite to replace it, or another --save_path."
        )
    if num_complete == num_trajectories:
        return None
    f = h5py.File(path, "a")
    keep = complete_groups(f)
    for name in [k for k in f.keys() if k not in keep]:
        del f[name]
    returns = [float(f[k].attrs["traj_return"]) for k in keep]
    f.attrs["dataset_return"] = float(np.mean(returns)) if returns else float("nan")
    f.flush()
    return f, returns


def reserve_space(path: str, start: int, nbytes: int) -> None:
    """Allocate bytes [start, start + nbytes) before HDF5 writes there, so a full disk shows up before a group
    is half written (skipped where the filesystem cannot preallocate)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, start, nbytes)
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise
    finally:
        os.close(fd)


def write_group(f: h5py.File, index: int, fill) -> None:
    """Write group `index` with fill(group), mark it complete last, flush; on failure delete it and restore the
    root attributes, so the file keeps only whole trajectories."""
    root = dict(f.attrs)
    try:
        group = f.create_group(str(index))
        fill(group)
        group.attrs[COMPLETE_ATTR] = True
        f.flush()
    except Exception:
        group = None  # noqa: F841 (release the group's HDF5 id before deleting it)
        with contextlib.suppress(Exception):
            if str(index) in f:
                del f[str(index)]
            f.attrs.update(root)
            f.flush()
        raise


def write_trajectory(f: h5py.File, index: int, traj: Trajectory, returns: list[float], compression: str) -> None:
    """Write group `index` whole with its distractors, update dataset_return and `returns`."""
    kwargs = {} if compression == "none" else {"compression": compression}
    distractors = traj.distractors or {}  # vanilla data has none
    nbytes = sum(a.nbytes for a in (traj.obs, traj.actions, traj.states, traj.rewards, *distractors.values()))
    # HDF5 appends at its end of file (get_filesize); the reservation covers the group and its metadata.
    reserve_space(f.filename, f.id.get_filesize(), nbytes + nbytes // 64 + RESERVE_MARGIN)

    def fill(group: h5py.Group) -> None:
        for name in ("obs", "actions", "states", "rewards"):
            chunks = (min(32, len(traj.obs)), *traj.obs.shape[1:]) if kwargs and name == "obs" else None
            group.create_dataset(name, data=getattr(traj, name), chunks=chunks, **kwargs)
        for name, values in distractors.items():
            dataset = group.create_dataset(f"distractors/{name}", data=values, **kwargs)
            dataset.attrs["columns"] = DISTRACTOR_COLUMNS.get(name, "")
        group.attrs.update({"traj_return": traj.traj_return, "seed": traj.seed})
        f.attrs["dataset_return"] = float(np.mean([*returns, traj.traj_return]))

    write_group(f, index, fill)
    returns.append(traj.traj_return)


def open_masks(path: Path, attrs: dict, dataset_groups: list[str], dataset_path: Path) -> h5py.File:
    """Open (or create) the masks file for writing, its groups made to match the dataset's complete ones."""
    f = h5py.File(path, "a")
    try:
        missing = [k for k in dataset_groups if k not in f or not f[k].attrs.get(COMPLETE_ATTR, False)]
        if missing:
            raise OutputExistsError(
                f"{path} lacks the masks of {len(missing)} complete trajectories of {dataset_path} (first: "
                f"'{missing[0]}'), which was collected without --record_masks: use --overwrite to collect both anew"
            )
        for name in [k for k in f.keys() if k not in dataset_groups]:
            del f[name]  # beyond the dataset's complete groups: collected again
        f.attrs.update(attrs)
        f.flush()
    except BaseException:
        f.close()
        raise
    return f


def close_output(f: h5py.File) -> None:
    """Flush and close, then give back the disk space reserved beyond HDF5's end of file (reserve_space)."""
    path = f.filename
    f.flush()
    size = f.id.get_filesize()  # max(end of allocated space, end of written data): nothing of the file lies beyond
    f.close()
    if os.path.getsize(path) > size:
        os.truncate(path, size)


def abandon_output(f: h5py.File, discard: bool) -> None:
    """Close an output after a failure (best effort: it keeps the groups it had flushed); `discard` removes it."""
    path = f.filename
    try:
        close_output(f)
    except Exception:
        with contextlib.suppress(Exception):
            f.close()
    if discard:
        Path(path).unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_WORKER: dict = {}


def _init_worker(kwargs: dict, checkpoint_path: str, checkpoint_name: str, device: str, recording: tuple) -> None:
    from src.envs import make_env

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops the pool
    torch.set_num_threads(1)  # same arithmetic in every worker and in the main process
    _WORKER["recording"] = recording
    try:
        _WORKER["env"] = make_env(**kwargs)
        _WORKER["expert"] = load_expert(checkpoint_path, checkpoint_name, device)
    except Exception as e:  # a failing initializer would make the pool respawn workers forever: report it per job
        _WORKER["error"] = e


def _collect_in_worker(job: tuple[int, int]) -> tuple[int, Trajectory]:
    if "error" in _WORKER:
        raise _WORKER["error"]
    index, seed = job
    return index, collect_trajectory(_WORKER["env"], _WORKER["expert"], seed, *_WORKER["recording"])


def collect(config: Config) -> Path:
    """Validate everything, then record the missing trajectories in index order, holding the output's lock."""
    check_config(config)
    path = Path(config.save_path)
    target = Path(os.path.realpath(path))  # the lock and the partial file live next to the real file
    target.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(target):
        _collect_locked(config, path, target)
    return path


def _disk_full_message(path: Path, write_path: Path, index: int, overwrite: bool) -> str:
    if overwrite:
        return (
            f"no space left on device while writing {write_path}, the new {path} (trajectory {index}); {path} is "
            "unchanged and the incomplete new file was removed; free space (the new file is written next to the "
            "old one) and run the same command again"
        )
    try:
        kept = f"the file keeps its {count_complete(write_path)} whole trajectories"
    except Exception as e:  # say so rather than claim what was not checked
        kept = f"the file could not be read back ({e})"
    return (
        f"no space left on device while writing {path} (trajectory {index}); {kept}; "
        "free space and run the same command to resume"
    )


def _collect_locked(config: Config, path: Path, target: Path) -> None:
    from src.envs import env_kwargs_from_attrs, make_env

    device = "cuda" if config.cuda and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(1)
    expert = load_expert(config.checkpoint_path, config.checkpoint_name, device)
    domain_name, task_name = config.domain_name or expert.domain_name, config.task_name or expert.task_name
    if domain_name is None or task_name is None:
        raise ConfigError(f"Checkpoint {expert.name} does not record its task: pass --domain_name and --task_name.")
    attrs = root_attrs(config, domain_name, task_name)
    # single frames (frame_stack=1), episodes seeded at reset
    split, steps = config.dcs_backgrounds_split, config.max_episode_steps
    kwargs = env_kwargs_from_attrs(attrs, config.dcs_backgrounds_path, split, frame_stack=1, max_episode_steps=steps)
    env = make_env(**kwargs)  # raises on unknown difficulty, missing videos of the split, ...
    _, info = env.reset(seed=episode_seed(config.seed, 0))
    expert.check_fits(len(info["state"]), env.action_space.shape[0], f"{domain_name}-{task_name}")

    partial, masks_target = sibling(target, PARTIAL_SUFFIX), target.with_name(target.stem + "-masks.hdf5")
    for stale in (partial, sibling(masks_target, PARTIAL_SUFFIX)):
        if stale.exists():  # we hold the lock: no running collector owns it
            stale.unlink()
            print(f"Removed {stale}, left by an interrupted --overwrite run.")
    if config.overwrite:
        refuse_if_open_for_writing(target)
    write_path = partial if config.overwrite else target
    created = not write_path.exists()
    try:
        opened = open_output(write_path, attrs, config.num_trajectories)
    except Exception as e:
        if created:
            write_path.unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFullError(f"no space left on device while opening {write_path}; {e}") from None
        raise
    if opened is None:
        print(f"{path} is already complete ({config.num_trajectories} trajectories); nothing to do.")
        return
    f, returns = opened
    start = len(returns)
    if start:
        print(f"Resuming {path}: {start} complete trajectories found.")

    recording = (config.max_episode_steps, config.record_masks, config.record_distractors)
    jobs = [(i, episode_seed(config.seed, i)) for i in range(start, config.num_trajectories)]
    seconds, frames, begin = 0.0, 0, time.perf_counter()
    mf = pool = None
    masks_write = sibling(masks_target, PARTIAL_SUFFIX) if config.overwrite else masks_target
    try:
        if config.record_masks:
            masks_attrs = dict(source_file=path.name, method="true", camera_id=int(env.camera_id))
            masks_attrs |= dict(img_hw=int(config.dcs_img_hw), domain_name=domain_name, task_name=task_name)
            mf = open_masks(masks_write, masks_attrs, complete_groups(f), path)
        with tqdm(total=config.num_trajectories, initial=start, desc="trajectories") as bar:
            if config.num_workers == 1:
                results = ((i, collect_trajectory(env, expert, s, *recording)) for i, s in jobs)
            else:
                env.close()
                initargs = (kwargs, config.checkpoint_path, config.checkpoint_name, device, recording)
                pool = mp.get_context("spawn").Pool(config.num_workers, initializer=_init_worker, initargs=initargs)
                results = pool.imap(_collect_in_worker, jobs)  # in order of `jobs`
            for index, traj in results:
                with signals_deferred():  # Ctrl-C / SIGTERM wait for the trajectory's write
                    if mf is not None:  # masks first: a complete dataset group always has its masks
                        masks = dict(data=traj.masks, compression="gzip", chunks=(1, *traj.masks.shape[1:]))
                        write_group(mf, index, lambda group, kw=masks: group.create_dataset("masks", **kw))
                    write_trajectory(f, index, traj, returns, config.compression)
                seconds, frames = seconds + traj.seconds, frames + len(traj.obs)
                bar.update(1)
                bar.set_postfix(traj_return=f"{traj.traj_return:.1f}")
        close_output(f)
        if mf is not None:
            close_output(mf)
    except BaseException as e:
        for out in (f, mf):
            if out is not None:
                abandon_output(out, discard=config.overwrite)
        if isinstance(e, KeyboardInterrupt):
            if config.overwrite:
                print(f"\nInterrupted: {path} is unchanged; the incomplete new file was removed.")
            else:
                print(f"\nInterrupted: {len(returns)} complete trajectories in {path}; run the same command to resume.")
        elif is_disk_full(e):
            raise DiskFullError(_disk_full_message(path, write_path, len(returns), config.overwrite)) from None
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    if config.overwrite:  # the new file is complete: make it durable, then let it replace the old one
        if config.record_masks:
            fsync_path(masks_write)
            os.replace(masks_write, masks_target)
        fsync_path(write_path)
        os.replace(write_path, target)
        fsync_path(target.parent)
    num_complete = count_complete(target)  # report what the file on disk holds, not what was meant to be written
    if num_complete != config.num_trajectories:
        raise DatasetError(
            f"{path} holds {num_complete} complete trajectories after writing, expected {config.num_trajectories}."
        )
    wall = time.perf_counter() - begin
    print(
        f"Saved {path}: {config.num_trajectories} trajectories ({len(jobs)} new, {frames} frames in {wall:.1f} s), "
        f"dataset_return {np.mean(returns):.2f} (std {np.std(returns):.2f}), "
        f"{frames / seconds:.1f} frames/s per worker, {1000 * seconds / frames:.2f} ms per frame "
        "(physics + expert + rendering)"
    )


def main(config_class: type = Config) -> None:
    """Command line: SIGTERM stops it as Ctrl-C does; a user error is one line, exit status 1."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with user_errors():
        try:
            collect(pyrallis.parse(config_class=config_class))
        except DiskFullError as e:
            # HDF5's exit clean-up may retry (and crash on) the writes that failed; the file is closed and checked.
            print(f"error: {e}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)


if __name__ == "__main__":
    main(Config)
