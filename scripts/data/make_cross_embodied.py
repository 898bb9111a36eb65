"""Leave-one-out cross-embodied dataset (paper, Fig. 10): trajectories of every environment except the target, in the
released layout, zero-padded to the largest action / state size; the root attributes name the TARGET
(docs/REPRODUCING.md, "Cross-embodied pre-training").

    python -m scripts.data.make_cross_embodied --target_env=cheetah-run --data_dir=data  # data/cheetah-run-mixed.hdf5
"""

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import pyrallis

from scripts.sample_labeled_data import trajectory_names, write_trajectories
from src.dcs.constants import PAPER_ENVS
from src.errors import ConfigError, DatasetError, OutputExistsError, check_hdf5_file, cli

SHARED_ROOT_ATTRS = ("difficulty", "dynamic", "split")  # expected equal across sources (a warning otherwise)


@dataclass
class Config:
    target_env: str = "cheetah-run"  # the left-out environment, "<domain>-<task>": root domain_name / task_name
    data_dir: str = "data"  # where <env>.hdf5 of the default sources are
    sources: Optional[str] = None  # comma-separated files (default: <data_dir>/<env>.hdf5, env in PAPER_ENVS - target)
    num_per_source: int = 1666  # trajectories sampled from each source (paper: 1666 x 3 ~ 5k)
    counts: Optional[str] = None  # comma-separated trajectories per source, overriding num_per_source
    save_path: Optional[str] = None  # output (default: <data_dir>/<target_env>-mixed.hdf5)
    seed: int = 0  # seed of the sampling
    chunk_size: int = 1000  # steps copied at a time
    overwrite: bool = False  # replace an existing save_path


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def source_paths(cfg: Config) -> list[Path]:
    if cfg.sources:
        return [Path(p.strip()) for p in cfg.sources.split(",") if p.strip()]
    if cfg.target_env not in PAPER_ENVS:
        raise ConfigError(f"--target_env={cfg.target_env!r} is not one of {PAPER_ENVS}: pass --sources explicitly")
    return [Path(cfg.data_dir) / f"{env}.hdf5" for env in PAPER_ENVS if env != cfg.target_env]


def make_cross_embodied(cfg: Config) -> Path:
    """Writes the mixed dataset; returns its path."""
    if "-" not in cfg.target_env:
        raise ConfigError(f"--target_env={cfg.target_env!r}: expected '<domain>-<task>', e.g. cheetah-run")
    paths = source_paths(cfg)
    save_path = Path(cfg.save_path or Path(cfg.data_dir) / f"{cfg.target_env}-mixed.hdf5")
    counts = [int(c) for c in cfg.counts.split(",")] if cfg.counts else [cfg.num_per_source] * len(paths)
    if len(counts) != len(paths):
        raise ConfigError(f"--counts has {len(counts)} values for {len(paths)} sources ({[str(p) for p in paths]})")
    if any(c < 1 for c in counts) or cfg.chunk_size < 1:
        raise ConfigError(f"trajectory counts {counts} and --chunk_size={cfg.chunk_size} must be positive")
    for p in paths:
        check_hdf5_file(f"source dataset {p}", p)
        if p.resolve() == save_path.resolve():
            raise ConfigError(f"--save_path={save_path} is also a source")
    if save_path.exists() and not cfg.overwrite:
        raise OutputExistsError(f"--save_path={save_path} exists; pass --overwrite to replace it")

    files = [h5py.File(p, "r") for p in paths]
    try:
        # Check everything before writing anything.
        rng = np.random.default_rng(cfg.seed)
        picks, infos = [], []  # picks: (trajectory group, attributes to add), in output order
        for f, p, count in zip(files, paths, counts, strict=True):
            names = trajectory_names(f, str(p))
            if count > len(names):
                raise DatasetError(
                    f"{p} holds {len(names)} trajectories, {count} requested (--counts/--num_per_source)"
                )
            first, img_hw, hw = f[names[0]], int(f.attrs["img_hw"]), int(files[0].attrs["img_hw"])
            if img_hw != hw:
                raise DatasetError(f"img_hw differs: {paths[0]} has {hw} px frames, {p} {img_hw} px; resample first")
            for key in SHARED_ROOT_ATTRS:
                if key in f.attrs and key in files[0].attrs and _str(f.attrs[key]) != _str(files[0].attrs[key]):
                    warnings.warn(
                        f"{key} differs: {paths[0]} {files[0].attrs[key]!r}, {p} {f.attrs[key]!r}", stacklevel=2
                    )
            dims_of = {"act_dim": int(first["actions"].shape[-1]), "state_dim": int(first["states"].shape[-1])}
            env = f"{_str(f.attrs['domain_name'])}-{_str(f.attrs['task_name'])}"
            infos.append({"file": p.name, "env": env, "trajectories": count, **dims_of})
            for name in (names[j] for j in np.sort(rng.choice(len(names), size=count, replace=False))):
                g = f[name]
                for key, item in g.items():
                    steps = isinstance(item, h5py.Dataset) and item.ndim and item.shape[0] != g["obs"].shape[0]
                    if steps or (key == "obs" and item.shape[1] != hw):
                        raise DatasetError(f"{p}: group '{name}' dataset '{key}' has shape {item.shape}")
                dims = {"act_dim": int(g["actions"].shape[-1]), "state_dim": int(g["states"].shape[-1])}
                picks.append((g, dict(source_env=env, source_file=p.name, original_traj_idx=int(name), **dims)))
        widths = {"actions": max(x["act_dim"] for x in infos), "states": max(x["state_dim"] for x in infos)}
        domain, task = cfg.target_env.split("-", 1)
        root = {key: files[0].attrs[key] for key in SHARED_ROOT_ATTRS if key in files[0].attrs}
        root.update(domain_name=domain, task_name=task, img_hw=hw, sources=json.dumps(infos), mixed=True)
        root.update(act_dim_max=widths["actions"], state_dim_max=widths["states"], sample_seed=cfg.seed)
        write_trajectories(save_path, picks, root, cfg.chunk_size, widths, subgroups=False)
    finally:
        for f in files:
            f.close()
    print(
        f"Saved {save_path}: {len(picks)} trajectories, " + ", ".join(f"{x['trajectories']} {x['env']}" for x in infos)
    )
    return save_path


if __name__ == "__main__":
    cli(lambda: make_cross_embodied(pyrallis.parse(config_class=Config)))
