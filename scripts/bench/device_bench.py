"""Per-stage speed, FLOPs and MFU on one GPU at the paper's configs; the data path beside the release's; the hours
of the paper's runs projected from them, next to the paper's Table 2.

    bash scripts/bench/device_check.sh                         # one H100 / H200: paper configs, bf16, under 8 min
    python -m scripts.bench.device_bench --peak_tflops=989     # a GPU whose name is not in PEAK_BF16_TFLOPS
    python -m scripts.bench.device_bench                       # without CUDA: says so, runs the CPU self-check (tiny)
    python -m scripts.bench.device_bench --only_flops=true --device=cpu   # FLOPs per update at the paper configs on
                                                               # a CPU, and the hours they project at an assumed MFU

Every stage is the method script's own stage function (train_<method>.<stage>), run on synthetic frames in the
released layout (64 px, frame stack 3) at the config of configs/<method>.yaml, bf16 autocast on CUDA as in the paper:
  updates/s, samples/s  median over timed windows of `window_updates` updates after one warm-up window (which holds
                        cudnn autotuning, or compilation for the compiled rows); the script's own logging cadence
                        (log_every = window_updates) marks the windows; samples count every sample of an update
                        (LAOM + supervision's stage 1: 512 unlabeled + 128 labeled)
  peak memory           torch.cuda.max_memory_allocated over the stage
  FLOPs / update        torch.utils.flop_counter.FlopCounterMode (PyTorch's counter: matmuls and convolutions,
                        forward and backward) around the stage, the difference between two logged updates; counted
                        at `flops_batch` samples and scaled to the stage's batch (the count is linear in the batch)
  MFU                   FLOPs / update x updates/s / the device's dense bf16 peak
Stages given a frozen network (latent BC its LAM, the decoder its actor, IDM's BC its IDM) get one freshly built
at the config: the cost of an update does not depend on its weights. Each stage runs eager and, for COMPILE_STAGES,
with --compile=true (src/compile.py) while time_budget_s allows; a compiled row that fails (no C compiler for
Inductor, a Triton error) is recorded as failed with its one-line reason and the rest of the script goes on.

Data path: LAOM's stage-1 batches (512, offsets 1..10) as uint8 on the device, this project's (frames on the GPU,
batched indexing: src.data) next to the release's (a per-sample Dataset + DataLoader): scripts.bench.timing's data
path, the one scripts.bench.benchmark's rows time. The stages run through scripts.bench.timing too (STAGES, run_stage).

Projection: hours of one paper run per method and of the Figure 8 grid (4 environments x 7 budgets x 3 seeds) with
this project's stage reuse (LAPO and LAOM: one LAM and latent BC per environment and seed for all budgets), from the
updates a paper run makes (5000 x 1000-step datasets, the configs' epochs and batches) at the measured speed and at
an assumed MFU. Online evaluation is not included (Table 2's times include it).
"""

import functools
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyrallis
import torch
from torch.utils.flop_counter import FlopCounterMode

from scripts.bench.timing import (
    STAGES,
    DataBenchConfig,
    StageSpec,
    bench_fast,
    bench_naive,
    parse_stage_config,
    run_stage,
    time_stage,
    write_stage_data,
)
from src.files import write_json
from src.run import get_device

# Dense bf16 peak, TFLOPS (no sparsity), by a part of torch.cuda.get_device_name: (contains, excludes, peak).
# The first row that matches wins (the specific names first: "H200 NVL" holds "H200", "GH200" holds "H200"); a name
# matching none asks for --peak_tflops. NVIDIA's datasheets give the sparse figure, twice these.
PEAK_BF16_TFLOPS = [
    ("H200 NVL", (), 835.0),  # "NVIDIA H200 NVL": PCIe card, lower clocks and power than the SXM H200
    ("H100 NVL", (), 835.0),  # "NVIDIA H100 NVL"
    ("H100 PCIe", (), 756.0),  # "NVIDIA H100 PCIe"
    ("GH200", (), 989.0),  # "NVIDIA GH200 480GB": the H100 SXM chip (or H200's) beside a Grace CPU
    ("H200", (), 989.0),  # "NVIDIA H200": the H100 SXM chip with more memory
    ("H100", (), 989.0),  # H100 SXM: "NVIDIA H100 80GB HBM3"
    ("A100", (), 312.0),
]
# Stages timed with --compile=true as well (the keys of scripts.bench.timing.STAGES).
COMPILE_STAGES = ["lapo/lam", "laom/lam", "laom_labels/lam", "laom/latent_bc", "idm/idm", "bc/bc"]
PAPER_TABLE2_HOURS = {
    "lapo": 7 + 38 / 60,
    "laom": 6 + 43 / 60,
    "laom_labels": 7 + 6 / 60,
    "bc": 1 + 10 / 60,
    "idm": 5.5,
}
PAPER_DATA = (5000, 1000)  # trajectories x steps of each full dataset (docs: REFERENCE-FACTS, dataset format)
PAPER_BUDGETS = (2, 4, 8, 16, 32, 64, 128)  # labeled trajectories (Figure 8)
PAPER_ENVS, PAPER_SEEDS = 4, 3
ONE_RUN_BUDGET = 2  # the label budget of "one paper run"


@dataclass
class DeviceBenchConfig:
    device: str = "auto"  # "auto" (cuda if available), "cuda", "cpu"
    scale: str = "auto"  # "paper" (configs/<method>.yaml networks and batches), "tiny" (CPU self-check); auto:
    # paper on CUDA or with only_flops, tiny otherwise
    peak_tflops: Optional[float] = None  # the device's dense bf16 peak, TFLOPS (None: PEAK_BF16_TFLOPS by name)
    stages: list[str] = field(default_factory=lambda: list(STAGES))  # stages to measure (keys of STAGES)
    compile: str = "both"  # "eager", "compiled" (COMPILE_STAGES only) or "both"
    window_updates: Optional[int] = None  # updates per timed window (None: 10 at paper scale, 2 tiny)
    windows: int = 3  # timed windows per stage, after one warm-up window
    flops_batch: Optional[int] = None  # samples per update while counting FLOPs (None: the stage's batch on
    # CUDA, 4 on a CPU); scaled to the stage's batch
    only_flops: bool = False  # count FLOPs per update and project hours; no timing, no data path
    data_batches: int = 20  # timed batches of each data path
    assumed_mfu: float = 0.5  # MFU of the projected hours when the speed was not measured here
    projection_peak_tflops: float = 989.0  # peak of the projection on a device with none (a CPU): H100 SXM
    time_budget_s: float = 330.0  # compiled rows (measured last) are skipped once the script has run this long
    seed: int = 0
    out: str = "runs/device_check.json"  # results JSON (rewritten after every stage)


def peak_for(name: str) -> Optional[float]:
    """Dense bf16 TFLOPS of a GPU by its torch.cuda name, or None."""
    for part, excluded, peak in PEAK_BF16_TFLOPS:
        if part in name and not any(x in name for x in excluded):
            return peak
    return None


def count_flops(key: str, data_path: str, device: torch.device, tiny: bool, flops_batch: int) -> tuple[int, dict]:
    """FLOPs of one update of a stage at `flops_batch` samples: the counter's total between two logged updates, and
    the same per module (PyTorch's names: the class of the network, then its attribute path)."""
    with FlopCounterMode(display=False) as counter:
        log = run_stage(key, data_path, device, tiny, 2, 1, flops_batch, counter=counter)
    if len(log.flops) < 2:
        raise RuntimeError(f"{key}: {len(log.flops)} logged updates while counting FLOPs; expected 2 or more")
    first, second = log.module_flops[:2]
    return log.flops[1] - log.flops[0], {m: n - first.get(m, 0) for m, n in second.items() if n - first.get(m, 0)}


def samples_per_update(key: str, batch: int, device: torch.device) -> int:
    """Samples one update of a stage holds at unlabeled batch `batch`: LAOM + supervision's stage 1 adds its
    labeled batch (128 per 512: 640 at the paper's config), scaled as run_stage scales it."""
    if key != "laom_labels/lam":
        return batch
    c = parse_stage_config(STAGES[key], [], device, "unused")[1].lapo
    return batch + batch * c.labeled_batch_size // c.batch_size


@functools.cache
def paper_config(spec: StageSpec):
    """A stage's method script Config from its paper YAML, parsed once per process (a projection asks for it about a
    hundred times)."""
    return parse_stage_config(spec, [], torch.device("cpu"), "unused")[1]


def paper_updates(key: str, budget: int) -> int:
    """Updates of a stage in a paper run (configs/<method>.yaml, 5000 x 1000-step data, `budget` labeled
    trajectories), by the scripts' own counting: whole epochs; the last partial batch kept by LAOM's and LAOM +
    supervision's stage 1, the IDM and the decoder, dropped by the others (docs/FAITHFULNESS.md)."""
    spec = STAGES[key]
    c = getattr(paper_config(spec), spec.section)
    full = PAPER_DATA[0] * (PAPER_DATA[1] - 1)  # transitions (o_t, o_{t+1})
    labeled = budget * (PAPER_DATA[1] - 1)
    if spec.section == "lapo":
        samples = PAPER_DATA[0] * (PAPER_DATA[1] - c.future_obs_offset)
        keep_last = key.startswith(("laom/", "laom_labels/"))
        return c.num_epochs * (math.ceil(samples / c.batch_size) if keep_last else samples // c.batch_size)
    if spec.section in ("decoder", "idm"):
        per_epoch = math.ceil(labeled / c.batch_size)
        return max(1, c.total_updates // per_epoch) * per_epoch
    if key == "bc/bc":
        return (
            c.total_updates if c.total_updates is not None else c.num_epochs * (budget * PAPER_DATA[1] // c.batch_size)
        )
    return c.num_epochs * (full // c.batch_size)  # latent BC, IDM's BC: the full data


def runs_of_stages(method: str) -> dict[str, dict[str, int]]:
    """For one paper run and for the Figure 8 grid of a method: how many times each stage trains, per budget."""
    keys = [k for k in STAGES if k.startswith(method + "/")]
    grid = {}
    for k in keys:
        stage = k.split("/")[1]
        reused = method in ("lapo", "laom") and stage in ("lam", "latent_bc")  # once per env and seed
        grid[k] = {b: (1 if not reused or b == PAPER_BUDGETS[0] else 0) for b in PAPER_BUDGETS}
    return grid


def project(seconds_per_update: dict[str, float]) -> dict:
    """Hours of one run (budget ONE_RUN_BUDGET) per method and of its Figure 8 grid, from seconds per update."""
    out = {}
    for method in PAPER_TABLE2_HOURS:
        grid = runs_of_stages(method)
        if not all(k in seconds_per_update for k in grid):
            continue
        one = sum(paper_updates(k, ONE_RUN_BUDGET) * seconds_per_update[k] for k in grid) / 3600
        per_env_seed = sum(
            n * paper_updates(k, b) * seconds_per_update[k] for k, bs in grid.items() for b, n in bs.items()
        )
        out[method] = {
            "one_run_h": one,
            "figure8_grid_h": per_env_seed * PAPER_ENVS * PAPER_SEEDS / 3600,
            "paper_table2_one_run_h": PAPER_TABLE2_HOURS[method],
            "paper_table2_x_grid_runs_h": PAPER_TABLE2_HOURS[method] * len(PAPER_BUDGETS) * PAPER_ENVS * PAPER_SEEDS,
        }
    return out


def fmt(x: Optional[float], spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


@pyrallis.wrap()
def main(cfg: DeviceBenchConfig) -> dict:
    began = time.perf_counter()
    unknown = [k for k in cfg.stages if k not in STAGES]
    if unknown or cfg.compile not in ("eager", "compiled", "both") or cfg.scale not in ("auto", "paper", "tiny"):
        sys.exit(
            f"device_bench: stages must be among {list(STAGES)} (got {unknown}), compile one of eager / compiled / "
            f"both (got {cfg.compile!r}), scale one of auto / paper / tiny (got {cfg.scale!r})"
        )
    device = get_device(cfg.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = cfg.peak_tflops if cfg.peak_tflops is not None else (peak_for(name) if cuda else None)
    if cuda and peak is None:
        sys.exit(f"device_bench: unknown GPU {name!r}: give its dense bf16 peak in TFLOPS with --peak_tflops=<N>")
    tiny = cfg.scale == "tiny" or (cfg.scale == "auto" and not cuda and not cfg.only_flops)
    if not cuda and not cfg.only_flops:
        print("no CUDA device: running the CPU self-check at tiny sizes (the paper-config speed needs a GPU)")
    window = cfg.window_updates or (2 if tiny else 10)
    batch = 8 if tiny else None  # None: the config's (512)
    flops_batch = cfg.flops_batch or (4 if tiny or not cuda else None)
    out = {"device": name, "peak_bf16_tflops": peak, "scale": "tiny" if tiny else "paper", "config": cfg.__dict__}
    out["stages"] = stages = {}
    tmp = tempfile.TemporaryDirectory()
    print(f"{'stage':<24} {'batch':>5} {'GFLOP/upd':>11} {'mode':>8} {'upd/s':>8} {'samples/s':>10} "
          f"{'peak GiB':>8} {'MFU':>6} {'warm-up s':>9}", flush=True)  # fmt: skip

    def measure(key: str, compiled: bool) -> None:
        """One timed run of a stage (eager or compiled): its row of the table and of the JSON."""
        row, mode = stages[key], "compiled" if compiled else "eager"
        timing_path = os.path.join(tmp.name, f"timing-{row['batch']}.hdf5")  # every paper stage has 512
        if not os.path.exists(timing_path):
            write_stage_data(timing_path, row["batch"], (cfg.windows + 1) * window + 1)
        spu, memory, warmup = time_stage(key, timing_path, device, tiny, batch, window, cfg.windows, compiled)
        mfu = row["flops_per_update"] / spu / (peak * 1e12) if peak else None
        mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
        row[mode] = {"updates_per_s": 1 / spu, "samples_per_s": row["samples_per_update"] / spu}
        row[mode] |= {"peak_memory_gib": memory}
        row[mode] |= {"mfu": mfu, "warmup_window_s": warmup}
        print(f"{key:<24} {row['batch']:>5} {row['gflop_per_update']:>11.1f} {mode:>8} {1 / spu:>8.2f} "
              f"{row['samples_per_update'] / spu:>10.1f} {fmt(memory, '.2f'):>8} {mfu_text:>6} {warmup:>9.1f}",
              flush=True)  # fmt: skip
        write_json(Path(cfg.out), out)

    # FLOPs and the eager rows of every stage first, then the compiled ones while time_budget_s lasts.
    for key in cfg.stages:
        spec = STAGES[key]
        stage_batch = batch or getattr(parse_stage_config(spec, [], device, "unused")[1], spec.section).batch_size
        fb = flops_batch or stage_batch
        flops_path = os.path.join(tmp.name, f"flops-{fb}.hdf5")  # one file per size: src.data reads a path once
        if not os.path.exists(flops_path):
            write_stage_data(flops_path, fb, 2)
        flops, _ = count_flops(key, flops_path, device, tiny, fb)
        row = stages[key] = {"batch": stage_batch, "flops_per_update": flops * stage_batch / fb, "flops_batch": fb}
        row["samples_per_update"] = samples_per_update(key, stage_batch, device)
        row["gflop_per_update"] = row["flops_per_update"] / 1e9
        if cfg.only_flops:
            print(f"{key:<24} {stage_batch:>5} {row['gflop_per_update']:>11.1f}", flush=True)
            write_json(Path(cfg.out), out)
        elif cfg.compile != "compiled":
            measure(key, False)
    if not cfg.only_flops:
        data_path = os.path.join(tmp.name, f"timing-{batch or 512}.hdf5")
        if not os.path.exists(data_path):
            write_stage_data(data_path, batch or 512, (cfg.windows + 1) * window + 1)
        data_cfg = DataBenchConfig(batch_size=batch or 512, data_batches=cfg.data_batches)
        fast, naive = bench_fast(data_path, data_cfg, device), bench_naive(data_path, data_cfg, device)
        out["data_path"] = {
            "batched_frames_on_device_samples_per_s": fast,
            "per_sample_dataloader_samples_per_s": naive,
        }
        print(f"data path ({data_cfg.batch_size} LAOM stage-1 samples, uint8 on {device.type}): batched "
              f"{fast:.0f} samples/s, per-sample Dataset + DataLoader {naive:.0f} samples/s "
              f"({fast / naive:.1f}x)", flush=True)  # fmt: skip
    if not cfg.only_flops and cfg.compile != "eager":
        for key in [k for k in cfg.stages if k in COMPILE_STAGES]:
            if time.perf_counter() - began > cfg.time_budget_s:
                stages[key]["compiled"] = f"skipped: past time_budget_s={cfg.time_budget_s:g}"
                print(f"{key:<24} compiled: skipped (past time_budget_s={cfg.time_budget_s:g})")
            else:
                try:
                    measure(key, True)
                except Exception as e:  # e.g. no C compiler for Triton / Inductor: the row says so, the rest goes on
                    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    stages[key]["compiled"] = f"failed: {type(e).__name__}: {reason}"
                    print(f"{key:<24} compiled: failed ({type(e).__name__}: {reason})", flush=True)
                    write_json(Path(cfg.out), out)
    tmp.cleanup()

    proj_peak = peak or cfg.projection_peak_tflops
    at_mfu = {k: r["flops_per_update"] / (cfg.assumed_mfu * proj_peak * 1e12) for k, r in stages.items()}
    out["projection_assumed_mfu"] = {"mfu": cfg.assumed_mfu, "peak_tflops": proj_peak, "methods": project(at_mfu)}
    if cuda and not cfg.only_flops and not tiny:
        measured = {k: 1 / r["eager"]["updates_per_s"] for k, r in stages.items() if isinstance(r.get("eager"), dict)}
        out["projection_measured_eager"] = project(measured)
    print(f"\nprojected hours, training only (no online evaluation; Table 2 includes it), one run at budget "
          f"{ONE_RUN_BUDGET} and the Figure 8 grid ({PAPER_ENVS} envs x {len(PAPER_BUDGETS)} budgets x {PAPER_SEEDS} "
          f"seeds, LAM / latent BC reused across budgets for LAPO and LAOM)")  # fmt: skip
    print(f"{'method':<12} {'basis':<34} {'one run h':>9} {'grid h':>9} {'paper T2 h':>10} {'T2 x runs h':>11}")
    bases = [
        (
            f"PROJECTION {100 * cfg.assumed_mfu:.0f}% MFU of {proj_peak:g} TFLOPS",
            out["projection_assumed_mfu"]["methods"],
        )
    ]
    if "projection_measured_eager" in out:
        bases.append(("measured here (eager)", out["projection_measured_eager"]))
    for basis, methods in bases:
        for method, p in methods.items():
            print(f"{method:<12} {basis:<34} {p['one_run_h']:>9.2f} {p['figure8_grid_h']:>9.1f} "
                  f"{p['paper_table2_one_run_h']:>10.2f} {p['paper_table2_x_grid_runs_h']:>11.0f}")  # fmt: skip
    write_json(Path(cfg.out), out)
    print(f"\ndevice: {name} ({'peak ' + format(peak, 'g') + ' TFLOPS' if peak else 'no peak'}); "
          f"{len(stages)} stages; {time.perf_counter() - began:.0f} s; results: {cfg.out}")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
