"""Sample a labeled subset: N whole trajectories, without replacement, renumbered "0" .. "N-1" in original order (each
with `original_traj_idx`; `dataset_return` recomputed), copied in chunks into a temporary file renamed when complete.

    python -m scripts.sample_labeled_data --data_path="path/to/full/dataset" \\
        --save_path="path/to/full/dataset-labeled-1000x$num_traj.hdf5" --chunk_size=1000 --num_trajectories=$num_traj
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import pyrallis
from tqdm.auto import tqdm

from src.data import REQUIRED_ROOT_ATTRS, DatasetError, check_data_file
from src.errors import ConfigError, MissingKeyError, OutputExistsError, cli


@dataclass
class Config:
    data_path: str = ""  # full dataset (HDF5, released layout)
    save_path: str = ""  # output HDF5 file
    chunk_size: int = 1000  # steps copied at a time
    num_trajectories: int = 2  # trajectories to sample
    seed: int = 0  # seed of the sampling
    overwrite: bool = False  # replace an existing save_path
    first: Optional[int] = None  # sample among the first N only (None: all), e.g. not the probe's last fifth
    indices: Optional[str] = None  # comma-separated trajectory numbers to copy instead of sampling, e.g. "16,17"


def trajectory_names(f: h5py.File, path: str) -> list[str]:
    """The groups "0" .. "n-1", checked for the released layout (MissingKeyError / DatasetError naming the file)."""
    for key in [k for k in REQUIRED_ROOT_ATTRS if k not in f.attrs]:
        raise MissingKeyError(f"{path}: root attribute '{key}' missing (it has {list(f.attrs)}).")
    names = sorted((k for k in f.keys() if k.isdigit()), key=int)
    if not names:
        raise DatasetError(f"{path}: no trajectory groups ('0', '1', ...); root keys are {list(f.keys())[:10]}.")
    if names != [str(i) for i in range(len(names))]:
        raise DatasetError(f"{path}: trajectory groups are not numbered 0..{len(names) - 1}: {names[:10]} ...")
    for name, group in ((name, f[name]) for name in names):
        for key in [k for k in ("obs", "actions", "states") if k not in group]:
            raise MissingKeyError(f"{path}: group '{name}' has no dataset '{key}' (it has {list(group.keys())}).")
        if "traj_return" not in group.attrs:
            raise MissingKeyError(
                f"{path}: group '{name}' has no attribute 'traj_return' (it has {list(group.attrs)})."
            )
    return names


def copy_dataset(src: h5py.Dataset, dst_group: h5py.Group, name: str, chunk_size: int, width: int | None = None):
    """Copy one dataset chunk_size rows at a time, keeping dtype, chunks, compression; width: zero-pad the last axis."""
    shape = src.shape if width is None else (*src.shape[:-1], width)
    options = dict(chunks=src.chunks if width is None else None, compression_opts=src.compression_opts)
    dst = dst_group.create_dataset(name, shape=shape, dtype=src.dtype, compression=src.compression, **options)
    if src.ndim == 0:
        dst[()] = src[()]
        return
    for start in range(0, src.shape[0], chunk_size):
        block = src[start : start + chunk_size]
        if width is not None and block.shape[-1] < width:
            block = np.pad(block, [(0, 0)] * (block.ndim - 1) + [(0, width - block.shape[-1])])
        dst[start : start + chunk_size] = block


def write_trajectories(save_path: Path, picks: list, root: dict, chunk_size: int, widths=None, subgroups=True):
    """Writes picks [(group, attributes to add)] as "0", "1", ... of save_path via a temporary file: datasets in
    chunks (zero-padded to widths[name]), subgroups whole; root: `root` and dataset_return (mean traj_return)."""
    tmp_path = save_path.with_name(save_path.name + ".tmp")
    save_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp_path, "w") as dst:
            for new_idx, (src, attrs) in enumerate(tqdm(picks, desc=f"-> {save_path.name}", unit="traj")):
                group = dst.create_group(str(new_idx))
                for name, item in src.items():
                    if isinstance(item, h5py.Dataset):
                        copy_dataset(item, group, name, chunk_size, (widths or {}).get(name))
                    elif subgroups:  # e.g. distractors/ (docs/DATA.md): small per-frame states
                        src.copy(item, group, name=name)
                group.attrs.update(src.attrs)
                group.attrs.update(attrs)
            dst.attrs.update(root)
            dst.attrs["dataset_return"] = float(np.mean([float(src.attrs["traj_return"]) for src, _ in picks]))
        os.replace(tmp_path, save_path)
    finally:
        tmp_path.unlink(missing_ok=True)


def sample_labeled(config: Config) -> Path:
    data_path, save_path = Path(config.data_path), Path(config.save_path)
    check_data_file("--data_path", config.data_path)
    if not config.save_path:
        raise ConfigError("--save_path is required.")
    if save_path.exists() and not config.overwrite:
        raise OutputExistsError(f"--save_path={config.save_path!r} exists; use --overwrite to replace it.")
    if config.chunk_size < 1 or config.num_trajectories < 1:
        raise ConfigError("--chunk_size and --num_trajectories must be positive integers.")

    with h5py.File(data_path, "r") as src:
        names = trajectory_names(src, str(data_path))
        if config.num_trajectories > len(names):
            raise ConfigError(
                f"--num_trajectories={config.num_trajectories} but {data_path} holds only {len(names)} trajectories."
            )
        pool = len(names) if config.first is None else config.first
        if not 0 < pool <= len(names) or config.num_trajectories > pool:
            raise ConfigError(
                f"--first={config.first}: expected between --num_trajectories={config.num_trajectories} and the "
                f"{len(names)} trajectories of {data_path}."
            )
        if config.indices:
            try:
                chosen = np.array(sorted({int(i) for i in config.indices.split(",")}))
            except ValueError:
                raise ConfigError(f"--indices={config.indices!r}: expected comma-separated integers") from None
            if chosen.min() < 0 or chosen.max() >= len(names):
                raise ConfigError(f"--indices={config.indices!r}: {data_path} holds trajectories 0..{len(names) - 1}")
        else:
            rng = np.random.default_rng(config.seed)
            chosen = np.sort(rng.choice(pool, size=config.num_trajectories, replace=False))
        root = {**src.attrs, "source_num_trajectories": len(names), "sample_seed": int(config.seed)}
        if "dataset_return" in src.attrs:
            root["source_dataset_return"] = src.attrs["dataset_return"]
        picks = [(src[str(i)], {"original_traj_idx": int(i)}) for i in chosen]
        write_trajectories(save_path, picks, root, config.chunk_size)
    print(f"Saved {save_path}: {len(chosen)} of {len(names)} trajectories of {data_path}, indices {chosen.tolist()}")
    return save_path


if __name__ == "__main__":
    cli(lambda: sample_labeled(pyrallis.parse(config_class=Config)))
