"""Throughput: the data pipeline beside a naive per-sample DataLoader, each method's stage-1 update, the DCS (rendered
frames/s of cheetah-run, each beside the release's way). Results also go to --out (JSON).

    python -m scripts.bench.benchmark                       # synthetic data in the released layout, CPU-sized models
    python -m scripts.bench.benchmark --paper_scale         # the paper's networks (use on a GPU)
    python -m scripts.bench.benchmark --only_dcs=true --dcs_way=release --dcs_workers=0   # one way per process
"""

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyrallis
import torch
from PIL import Image

from scripts.bench.timing import STAGES, DataBenchConfig, data_throughput, time_stage, write_stage_data, write_synthetic
from src.checkpoint import set_seed
from src.dcs import constants as dcs_constants
from src.dcs import load as load_dcs
from src.dcs import videos as dcs_videos
from src.dcs.suite import BackgroundDistraction
from src.device import get_device
from src.envs import make_env, make_vec_env
from src.files import write_json


@dataclass
class BenchConfig(DataBenchConfig):
    data_path: Optional[str] = None  # HDF5 dataset; None: write a synthetic one (released layout) to a temp dir
    methods: list[str] = field(default_factory=lambda: ["lapo", "laom", "laom_labels", "idm", "bc"])
    update_steps: int = 6  # updates per timed window of the stage-1 update rows (two windows after a warm-up one)
    update_batch_size: Optional[int] = None  # batch of the update benchmark (None: 64 on CPU, 512 on GPU)
    paper_scale: bool = False  # the paper's networks (else scripts.bench.timing's tiny ones, for a CPU)
    device: str = "auto"
    seed: int = 0
    out: str = "runs/benchmark.json"  # results JSON
    dcs: bool = True  # also measure the DCS's rendered frames/s, the port's way and the release's way
    only_dcs: bool = False  # measure the DCS only
    dcs_way: str = "both"  # "port", "release" or "both" (one way per process suits whole-process timing)
    dcs_sources: str = "both"  # "builtin", "davis" (the DAVIS-sized folder) or "both"
    dcs_modes: str = "both"  # "collection", "evaluation" or "both"
    dcs_episodes: int = 4  # episodes per DCS measurement (each with its reset)
    dcs_steps: int = 100  # steps per DCS episode
    dcs_davis_frames: int = 80  # frames per video of the DAVIS-sized (854x480) folder; 0 skips it
    dcs_workers: int = 2  # worker processes of the parallel rows (collect_data --num_workers, eval_num_envs); 0 skips


def write_davis_sized(root: str, num_frames: int) -> None:
    """A DAVIS-layout folder of the train videos with 854 x 480 jpgs; the videos hard-link their files."""
    first = Path(root) / dcs_constants.DAVIS17_TRAINING_VIDEOS[0]
    first.mkdir(parents=True)
    for i, frame in enumerate(dcs_videos.builtin_video("train", 0, num_frames=num_frames)):
        Image.fromarray(frame).resize((854, 480), Image.BICUBIC).save(first / f"{i:05d}.jpg", quality=90)
    for name in dcs_constants.DAVIS17_TRAINING_VIDEOS[1:]:
        (Path(root) / name).mkdir()
        for f in first.iterdir():
            os.link(f, Path(root) / name / f.name)


def bench_dcs(backgrounds: str, evaluation: bool, release: bool, cfg: BenchConfig) -> tuple[float, float]:
    """Rendered 64 px frames/s of cheetah-run (resets included, caches cold) and the mean seconds of a reset;
    `release`: every frame of the video read and resized at each reset."""
    dcs_videos._cache.clear()
    dcs_videos._skybox_cache.clear()
    kwargs = dict(difficulty="scale_easy_video_hard", dynamic=True, seed=cfg.seed)
    if evaluation:
        env = make_env("cheetah", "run", backgrounds_path=backgrounds, img_hw=64, **kwargs)
        dcs_env = env.dcs_env
    else:
        env = dcs_env = load_dcs("cheetah", "run", background_dataset_path=backgrounds, **kwargs)
    for d in dcs_env._distractions if release else []:
        if isinstance(d, BackgroundDistraction):
            d.cache_resized = False
    rng = np.random.default_rng(cfg.seed)
    total = resets = 0.0
    for episode in range(cfg.dcs_episodes):
        start = time.perf_counter()
        if evaluation:
            env.reset(seed=cfg.seed + episode)
        else:
            env.seed(cfg.seed + episode)
            env.reset()
            env.physics.render(64, 64, camera_id=0)
        resets += time.perf_counter() - start
        for _ in range(cfg.dcs_steps):
            env.step(rng.uniform(-1, 1, 6))
            if not evaluation:  # make_env renders in step
                env.physics.render(64, 64, camera_id=0)
        total += time.perf_counter() - start
    return cfg.dcs_episodes * (cfg.dcs_steps + 1) / total, resets / cfg.dcs_episodes


def bench_dcs_workers(backgrounds: str, cfg: BenchConfig) -> float:
    """Rendered frames/s of cfg.dcs_workers environments in worker processes (make_vec_env), resets included."""
    kwargs = dict(domain_name="cheetah", task_name="run", difficulty="scale_easy_video_hard", dynamic=True)
    kwargs |= dict(img_hw=64, backgrounds_path=backgrounds, max_episode_steps=cfg.dcs_steps + 1)
    n = cfg.dcs_workers
    envs = make_vec_env(kwargs, num_envs=n, seed=cfg.seed, asynchronous=True)
    rng = np.random.default_rng(cfg.seed)
    try:
        envs.reset(seed=[cfg.seed + 1000 + i for i in range(n)])  # worker start-up is not part of the rate
        start = time.perf_counter()
        for episode in range(0, cfg.dcs_episodes, n):
            envs.reset(seed=[cfg.seed + episode + i for i in range(n)])
            for _ in range(cfg.dcs_steps):
                envs.step(rng.uniform(-1, 1, (n, 6)))
        elapsed = time.perf_counter() - start
    finally:
        envs.close()
    return len(range(0, cfg.dcs_episodes, n)) * n * (cfg.dcs_steps + 1) / elapsed


def dcs_rows(cfg: BenchConfig) -> dict[str, dict]:
    """{what: frames/s and seconds per reset (None where resets are not timed apart)} of each DCS measurement."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = [("built-in 160 px, 60 frames", dcs_constants.BUILTIN)] if cfg.dcs_sources != "davis" else []
        if cfg.dcs_davis_frames > 0 and cfg.dcs_sources != "builtin":
            write_davis_sized(os.path.join(tmp, "davis"), cfg.dcs_davis_frames)
            sources.append((f"DAVIS-sized 854x480, {cfg.dcs_davis_frames} frames", os.path.join(tmp, "davis")))
        for source_name, backgrounds in sources:
            for evaluation in {"collection": (False,), "evaluation": (True,)}.get(cfg.dcs_modes, (False, True)):
                for release in {"port": (False,), "release": (True,)}.get(cfg.dcs_way, (False, True)):
                    mode = "evaluation (make_env)" if evaluation else "collection (DCS env)"
                    way = "release's way" if release else "port"
                    what = f"DCS {mode}, {source_name}: {way}"
                    fps, reset_s = bench_dcs(backgrounds, evaluation, release, cfg)
                    rows[what] = {"frames_per_s": fps, "reset_s": reset_s}
                    print(f"{what:<80} {fps:>8.1f} {1000 * reset_s:>9.0f}", flush=True)
            if cfg.dcs_workers > 0 and cfg.dcs_way != "release":
                what = f"DCS {cfg.dcs_workers} worker processes, {source_name}: port"
                # resets run inside the workers, in parallel with steps: no reset time to report
                rows[what] = {"frames_per_s": bench_dcs_workers(backgrounds, cfg), "reset_s": None}
                print(f"{what:<80} {rows[what]['frames_per_s']:>8.1f} {'n/a':>9}", flush=True)
    return rows


def bench_update(method: str, cfg: BenchConfig, device: torch.device) -> float:
    """Stage-1 samples/s of a method script's own stage on synthetic data: median of two windows after a warm-up
    (scripts.bench.timing)."""
    batch = cfg.update_batch_size or (512 if device.type == "cuda" else 64)
    key = next(k for k in STAGES if k.startswith(f"{method}/"))  # the method's first stage
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "updates.hdf5")
        write_stage_data(path, batch, 3 * cfg.update_steps + 1)
        seconds, _, _ = time_stage(key, path, device, not cfg.paper_scale, batch, cfg.update_steps, 2)
    return batch / seconds


@pyrallis.wrap()
def main(cfg: BenchConfig) -> dict:
    set_seed(cfg.seed)
    device = get_device(cfg.device)
    out = {"device": str(device), "config": cfg.__dict__}
    if not cfg.only_dcs:
        with tempfile.TemporaryDirectory() as tmp:
            path = cfg.data_path or os.path.join(tmp, "synthetic.hdf5")
            if cfg.data_path is None:
                write_synthetic(path, cfg)
            fast, naive = data_throughput(path, cfg, device)
        rows = {"data pipeline: batched tensor indexing": fast}
        rows[f"data pipeline: per-sample DataLoader (num_workers={cfg.naive_num_workers})"] = naive
        rows |= {f"{method}: stage-1 update": bench_update(method, cfg, device) for method in cfg.methods}
        print(f"\ndevice: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
        print(f"{'what':<60} {'samples/s':>12}")
        for name, value in rows.items():
            print(f"{name:<60} {value:>12.1f}")
        print(f"data pipeline speedup vs per-sample loader: {fast / naive:.1f}x")
        out.update(rows=rows, data_pipeline_speedup=fast / naive)
    if cfg.dcs or cfg.only_dcs:
        print(f"\nDCS, {cfg.dcs_episodes} episodes x {cfg.dcs_steps} steps, resets included (CPU, EGL)")
        print(f"{'what':<80} {'frames/s':>8} {'reset ms':>9}")
        out["dcs_rows"] = dcs_rows(cfg)
    write_json(Path(cfg.out), out)
    return out


if __name__ == "__main__":
    main()
