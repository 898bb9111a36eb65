"""The GPU box's one prepared check: per-stage speed, FLOPs and MFU at the paper's configs, each method script run for a
few updates, a stop and resume, the data path beside the release's, projected hours beside the paper's Table 2.
Rows and what each measures: docs/DOCKER.md ("The GPU check").

    bash scripts/bench/device_check.sh OUT_DIR                 # one H100 / H200: paper configs, bf16, under 8 min
    python -m scripts.bench.device_bench --out_dir=OUT_DIR --device=cpu        # the CPU mode: tiny sizes
"""

import dataclasses
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyrallis
import torch
from torch.utils.flop_counter import FlopCounterMode

from scripts.bench import timing
from scripts.bench.timing import STAGES, write_stage_data
from src.data import num_batches
from src.device import get_device
from src.files import write_json
from src.stage import PREEMPTED_EXIT_CODE

REPO = Path(__file__).resolve().parents[2]

# Dense bf16 peak TFLOPS (datasheets give sparse, twice these) by a part of the device name, first match wins ("H200
# NVL" and "GH200" hold "H200"); a name matching none asks for --peak_tflops.
PEAK_BF16_TFLOPS = [("H200 NVL", 835.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("GH200", 989.0)]
PEAK_BF16_TFLOPS += [("H200", 989.0), ("H100", 989.0), ("A100", 312.0)]
COMPILE_STAGES = ["lapo/lam", "laom/lam", "laom_labels/lam", "laom/latent_bc", "idm/idm", "bc/bc"]  # also compiled
# Table 2's hours (7:38, 6:43, 7:06, 1:10, 5.5 h), in minutes
PAPER_TABLE2_HOURS = {k: m / 60 for k, m in dict(lapo=458, laom=403, laom_labels=426, bc=70, idm=330).items()}
PAPER_DATA = (5000, 1000)  # trajectories x steps of each full dataset (docs/DATA.md)
PAPER_BUDGETS = (2, 4, 8, 16, 32, 64, 128)  # labeled trajectories (Figure 8)
PAPER_ENVS, PAPER_SEEDS = 4, 3
ONE_RUN_BUDGET = 2  # the label budget of "one paper run"


@dataclass
class DeviceBenchConfig:
    out_dir: str = "runs/device_check"  # folder of device_check.json, the rows' logs and the script runs
    device: str = "auto"  # "auto" (cuda if available, else the CPU mode), "cuda", "cpu"
    scale: str = "auto"  # "paper" (configs/<method>.yaml), "tiny" (CPU mode), "auto": paper on CUDA or with only_flops
    peak_tflops: Optional[float] = None  # the device's dense bf16 peak, TFLOPS (None: PEAK_BF16_TFLOPS by name)
    rows: Optional[list[str]] = None  # rows to run, in the order given (None: all of ROWS, in its order)
    compile: str = "both"  # "eager", "compiled" (COMPILE_STAGES only) or "both": which stage rows to run
    window_updates: Optional[int] = None  # updates per timed window (None: 10 at paper scale, 2 tiny)
    windows: int = 3  # timed windows per stage, after one warm-up window
    flops_batch: Optional[int] = None  # samples per update counting FLOPs, scaled to the batch (None: 64 CUDA, 4 CPU)
    only_flops: bool = False  # count FLOPs per update and project hours; no timing, no data path, no script runs
    data_batches: int = 20  # timed batches of each data path
    assumed_mfu: float = 0.5  # MFU of the projected hours when the speed was not measured here
    projection_peak_tflops: float = 989.0  # peak of the projection on a device with none (a CPU): H100 SXM
    time_budget_s: float = 400.0  # rows not started by then are skipped; a row started runs at most OVERRUN_S more
    row_timeout_s: float = 150.0  # a row still running after this long is killed and recorded as timed out
    script_updates: int = 20  # script rows: updates of each stage of the method script's example run
    row: Optional[str] = None  # internal: run this one row in this process and write its JSON (a row subprocess)


def peak_for(name: str) -> Optional[float]:
    """Dense bf16 TFLOPS of a GPU by its torch.cuda name, or None."""
    return next((peak for part, peak in PEAK_BF16_TFLOPS if part in name), None)


def count_flops(key: str, data_path: str, device: torch.device, tiny: bool, flops_batch: int, run_dir=None):
    """(FLOPs, FLOPs by module name) of one update of a stage at `flops_batch` samples; nothing is written."""
    with FlopCounterMode(display=False) as counter:
        kwargs = dict(counter=counter, stop_after=2, run_dir=run_dir)
        log = timing.run_stage(key, data_path, device, tiny, 2, 1, flops_batch, **kwargs)
    if len(log.flops) < 2:
        raise RuntimeError(f"{key}: {len(log.flops)} logged updates while counting FLOPs; expected 2 or more")
    first, second = log.module_flops[:2]
    return log.flops[1] - log.flops[0], {m: n - first.get(m, 0) for m, n in second.items() if n - first.get(m, 0)}


def paper_updates(key: str, budget: int) -> int:
    """Updates of a stage in a paper run (configs/<method>.yaml, 5000 x 1000-step data, `budget` labeled
    trajectories), whole epochs as the scripts count them (last partial batch: docs/FAITHFULNESS.md)."""
    spec = STAGES[key]
    c = getattr(timing.stage_config(spec), spec.section)
    trajectories, steps = PAPER_DATA
    if spec.section == "lapo":
        drop_last = not key.startswith(("laom/", "laom_labels/"))
        return c.num_epochs * num_batches(trajectories * (steps - c.future_obs_offset), c.batch_size, drop_last)
    if spec.section in ("decoder", "idm"):
        per_epoch = num_batches(budget * (steps - 1), c.batch_size, drop_last=False)
        return max(1, c.total_updates // per_epoch) * per_epoch
    if key == "bc/bc" and c.total_updates is not None:
        return c.total_updates
    samples = budget * steps if key == "bc/bc" else trajectories * (steps - 1)  # latent BC, IDM's BC: full data
    return c.num_epochs * num_batches(samples, c.batch_size)


def project(seconds_per_update: dict[str, float]) -> dict:
    """Hours of one run (ONE_RUN_BUDGET) per method and of its Figure 8 grid, from seconds per update (LAPO's and
    LAOM's LAM and latent BC once per environment and seed, the other stages once per budget)."""
    out = {}
    for method, table2_h in PAPER_TABLE2_HOURS.items():
        keys = [k for k in STAGES if k.startswith(method + "/")]
        if not all(k in seconds_per_update for k in keys):
            continue
        once = method in ("lapo", "laom")
        runs = {k: [b for b in PAPER_BUDGETS if not once or "decoder" in k or b == PAPER_BUDGETS[0]] for k in keys}
        one = sum(paper_updates(k, ONE_RUN_BUDGET) * seconds_per_update[k] for k in keys) / 3600
        grid = sum(paper_updates(k, b) * seconds_per_update[k] for k, bs in runs.items() for b in bs)
        out[method] = {
            "one_run_h": one,
            "figure8_grid_h": grid * PAPER_ENVS * PAPER_SEEDS / 3600,
            "paper_table2_one_run_h": table2_h,
            "paper_table2_x_grid_runs_h": table2_h * len(PAPER_BUDGETS) * PAPER_ENVS * PAPER_SEEDS,
        }
    return out


# Example runs of the method scripts (the real command line, on the example data, a few updates per stage).
SCRIPTS = {f"train_{m}": f"configs/example/{m.replace('_', '-')}.yaml"
           for m in ("lapo", "laom", "laom_labels", "idm", "bc", "lapo_mask")}  # fmt: skip
# The rows in the order they run, the most telling first (stage 1s, latent BC, BC, the scripts, resume, the rest).
FIRST = ["lapo/lam", "laom/lam", "laom_labels/lam", "idm/idm", "laom/latent_bc", "bc/bc"]
ROWS = FIRST + [f"script:{m}" for m in SCRIPTS] + ["resume:train_bc"] + [k for k in STAGES if k not in FIRST]
ROWS += ["data_path"] + [f"{k}+compile" for k in COMPILE_STAGES]
OVERRUN_S = 45.0  # how far past time_budget_s the last row started may run
RESUME_EVERY = 10  # resume row: updates between periodic checkpoints; SIGTERM once the first one is written


def stage_data(data_dir: str, name: str, batch: int, updates: int) -> str:
    """Synthetic frames for `updates` updates at `batch`, written once (via a temporary name: no partial file)."""
    path = os.path.join(data_dir, f"{name}-{batch}.hdf5")
    if not os.path.exists(path):
        write_stage_data(path + ".tmp", batch, updates)
        os.replace(path + ".tmp", path)
    return path


def stage_row(name: str, cfg: DeviceBenchConfig, device: torch.device, tiny: bool, data_dir: str) -> dict:
    """One stage (`<stage key>` or `<stage key>+compile`): FLOPs per update (eager), seconds per update, peak memory."""
    key, compiled = name.removesuffix("+compile"), name.endswith("+compile")
    spec = STAGES[key]
    batch = 8 if tiny else getattr(timing.stage_config(spec), spec.section).batch_size
    samples = batch + (timing.labeled_batch(spec, batch) if key == "laom_labels/lam" else 0)  # its labeled batch too
    row = {"batch": batch, "samples_per_update": samples}
    run_dir = os.path.join(cfg.out_dir, "runs", name.replace("/", "_"))  # kept: a stage measured writes no checkpoint
    if not compiled:
        fb = cfg.flops_batch or (64 if device.type == "cuda" and not tiny else 4)
        flops, _ = count_flops(key, stage_data(data_dir, "flops", fb, 2), device, tiny, fb, run_dir + "-flops")
        row |= {"flops_per_update": flops * batch / fb, "flops_batch": fb}
    if cfg.only_flops:
        return row
    window = cfg.window_updates or (2 if tiny else 10)
    path = stage_data(data_dir, "timing", batch, (cfg.windows + 1) * window + 1)
    kwargs = dict(compile=compiled, run_dir=run_dir)
    spu, memory, warmup = timing.time_stage(key, path, device, tiny, batch, window, cfg.windows, **kwargs)
    row |= {"updates_per_s": 1 / spu, "samples_per_s": samples / spu, "peak_memory_gib": memory}
    return row | {"warmup_window_s": warmup}


def data_row(_, cfg: DeviceBenchConfig, device: torch.device, tiny: bool, data_dir: str) -> dict:
    """LAOM's stage-1 batches: this project's batched indexing next to a per-sample Dataset + DataLoader."""
    batch = 8 if tiny else 512
    window = cfg.window_updates or (2 if tiny else 10)
    path = stage_data(data_dir, "timing", batch, (cfg.windows + 1) * window + 1)
    data_cfg = timing.DataBenchConfig(batch_size=batch, data_batches=cfg.data_batches)
    fast, naive = timing.data_throughput(path, data_cfg, device)
    row = {"batch": batch, "batched_frames_on_device_samples_per_s": fast}
    return row | {"per_sample_dataloader_samples_per_s": naive}


def one_row(cfg: DeviceBenchConfig) -> None:
    """A row subprocess: runs cfg.row and writes its JSON; an error (out of GPU memory included) is its row's."""
    device = get_device(cfg.device)
    data_dir = os.path.join(cfg.out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    began = time.perf_counter()
    try:
        measure = data_row if cfg.row == "data_path" else stage_row
        row = {"status": "ok", **measure(cfg.row, cfg, device, tiny_scale(cfg, device), data_dir)}
    except torch.cuda.OutOfMemoryError as e:
        row = {"status": "out of memory", "error": first_line(e)}
    except Exception as e:
        row = {"status": "failed", "error": f"{type(e).__name__}: {first_line(e)}"}
        traceback.print_exc()
    write_json(row_path(cfg.out_dir, cfg.row), row | {"seconds": time.perf_counter() - began})


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def row_path(out_dir: str, name: str) -> Path:
    return Path(out_dir) / "rows" / (name.replace("/", "_").replace(":", "_") + ".json")


def tiny_scale(cfg: DeviceBenchConfig, device: torch.device) -> bool:
    return cfg.scale == "tiny" or (cfg.scale == "auto" and device.type != "cuda" and not cfg.only_flops)


def run_command(command: list[str], log: Path, timeout: float) -> tuple[int, str]:
    """(exit code, output) of a command run to its end, its output kept in `log`; -9 when it ran past `timeout`."""
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        output = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (e.stdout, e.stderr)]
        code, text = -9, "".join(output) + f"\n(killed after {timeout:.0f} s)"
    log.write_text(text)
    return code, text


def script_command(module: str, cfg: DeviceBenchConfig, tiny: bool, run_dir: Path) -> list:
    """The method script's command line on its example config with the check's --device, stages cut to a few updates."""
    command = [sys.executable, "-m", module, f"--config_path={SCRIPTS[module]}", f"--device={cfg.device}"]
    command += [f"--run_dir={run_dir}", "--wandb_mode=disabled", f"--log_every={cfg.script_updates}"]
    config_cls = importlib.import_module(module).Config
    for section in [f for f in dataclasses.fields(config_cls) if dataclasses.is_dataclass(f.type)]:
        fields = {f.name for f in dataclasses.fields(section.type)}
        if "total_updates" in fields:
            command.append(f"--{section.name}.total_updates={cfg.script_updates}")
        if tiny and "eval_episodes" in fields:
            command.append(f"--{section.name}.eval_episodes=0")  # the CPU mode: no rendering
    return command


def script_row(name: str, cfg: DeviceBenchConfig, tiny: bool, timeout: float) -> dict:
    """`script:<module>`: the method script's example run to its end (exit 0, results.json written)."""
    module = name.split(":", 1)[1]
    run_dir = Path(cfg.out_dir) / "scripts" / module
    shutil.rmtree(run_dir, ignore_errors=True)
    code, text = run_command(script_command(module, cfg, tiny, run_dir), run_dir.with_suffix(".log"), timeout)
    ok = code == 0 and (run_dir / "results.json").exists()
    row = {"status": "ok" if ok else "failed", "exit_code": code, "log": str(run_dir.with_suffix(".log"))}
    return row if ok else row | {"error": last_line(text)}


def resume_row(cfg: DeviceBenchConfig, tiny: bool, timeout: float) -> dict:
    """`resume:train_bc`: BC's example run stopped by SIGTERM after its first checkpoint (exit 75), then resumed."""
    run_dir = Path(cfg.out_dir) / "scripts" / "resume_train_bc"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    updates = 40 if tiny else 2000  # long enough that the signal lands while BC trains
    command = script_command("train_bc", cfg, tiny, run_dir)
    command += [f"--bc.total_updates={updates}", f"--checkpoint_every={RESUME_EVERY}", f"--log_every={RESUME_EVERY}"]
    command += ["--bc.eval_episodes=0"] + (["--bc.encoder_scale=1", "--bc.batch_size=16"] if tiny else [])
    deadline = time.perf_counter() + timeout
    with open(run_dir / "stopped.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while not (run_dir / "bc.pt").exists() and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        try:
            stopped = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            stopped = proc.wait()
    text = (run_dir / "stopped.log").read_text()
    row = {"stopped_exit_code": stopped, "log": str(run_dir / "stopped.log")}
    found = re.search(r"stopped after update (\d+) of", text)
    if stopped != PREEMPTED_EXIT_CODE or not found:
        return row | {"status": "failed", "error": f"stopped with exit code {stopped}: {last_line(text)}"}
    step = int(found.group(1))
    code, text = run_command(command, run_dir / "resumed.log", max(1.0, deadline - time.perf_counter()))
    row |= {"stopped_at_update": step, "resumed_exit_code": code, "total_updates": updates}
    ok = code == 0 and f"resuming from update {step} of {updates}" in text and (run_dir / "results.json").exists()
    return row | ({"status": "ok"} if ok else {"status": "failed", "error": last_line(text)})


def row_subprocess(name: str, config_path: Path, out_dir: str, timeout: float) -> dict:
    """A stage or data row in a process of its own: a crash, an out-of-memory error or a hung GPU stays its row's."""
    path = row_path(out_dir, name)
    path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "scripts.bench.device_bench", f"--config_path={config_path}", f"--row={name}"]
    code, text = run_command(command, path.with_suffix(".log"), timeout)
    if path.exists():
        return json.loads(path.read_text())
    status = "timed out" if code == -9 else "failed"
    return {"status": status, "exit_code": code, "error": last_line(text), "log": str(path.with_suffix(".log"))}


def print_row(name: str, row: dict) -> None:
    status = row.get("status", "?")
    gflop = row["flops_per_update"] / 1e9 if "flops_per_update" in row else None
    if "updates_per_s" in row:
        mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "n/a"
        memory = "n/a" if row.get("peak_memory_gib") is None else f"{row['peak_memory_gib']:.2f}"
        gf = "n/a" if gflop is None else f"{gflop:.1f}"
        print(f"{name:<30} {status:<8} {row['batch']:>5} {gf:>11} "
              f"{row['updates_per_s']:>8.2f} {row['samples_per_s']:>10.1f} {memory:>8} {mfu:>6} "
              f"{row.get('seconds', 0):>6.0f}", flush=True)  # fmt: skip
    elif "batched_frames_on_device_samples_per_s" in row:
        fast, naive = row["batched_frames_on_device_samples_per_s"], row["per_sample_dataloader_samples_per_s"]
        print(f"{name:<30} {status:<8} data path: batched {fast:.0f} samples/s, per-sample DataLoader "
              f"{naive:.0f} samples/s ({fast / naive:.1f}x)", flush=True)  # fmt: skip
    else:
        detail = row.get("error") or (f"{gflop:.1f} GFLOP/update" if gflop is not None else row.get("log", ""))
        print(f"{name:<30} {status:<8} {detail}", flush=True)


def print_projection(out: dict) -> None:
    print(f"\nprojected hours, training only (no online evaluation; Table 2 includes it), one run at budget "
          f"{ONE_RUN_BUDGET} and the Figure 8 grid ({PAPER_ENVS} envs x {len(PAPER_BUDGETS)} budgets x {PAPER_SEEDS} "
          f"seeds, LAM / latent BC reused across budgets for LAPO and LAOM)")  # fmt: skip
    print(f"{'method':<12} {'basis':<34} {'one run h':>9} {'grid h':>9} {'paper T2 h':>10} {'T2 x runs h':>11}")
    at_mfu = out["projection_assumed_mfu"]
    bases = [(f"PROJECTION {100 * at_mfu['mfu']:.0f}% MFU of {at_mfu['peak_tflops']:g} TFLOPS", at_mfu["methods"])]
    bases += [("measured here (eager)", out["projection_measured_eager"])] if "projection_measured_eager" in out else []
    for basis, methods in bases:
        for method, p in methods.items():
            print(f"{method:<12} {basis:<34} {p['one_run_h']:>9.2f} {p['figure8_grid_h']:>9.1f} "
                  f"{p['paper_table2_one_run_h']:>10.2f} {p['paper_table2_x_grid_runs_h']:>11.0f}")  # fmt: skip


def main(cfg: DeviceBenchConfig) -> dict:
    began = time.perf_counter()
    rows = cfg.rows if cfg.rows is not None else ROWS
    unknown = [r for r in rows if r not in ROWS]
    if unknown or cfg.compile not in ("eager", "compiled", "both") or cfg.scale not in ("auto", "paper", "tiny"):
        sys.exit(
            f"device_bench: rows must be among {ROWS} (got {unknown}), compile one of eager / compiled / both "
            f"(got {cfg.compile!r}), scale one of auto / paper / tiny (got {cfg.scale!r})"
        )
    if cfg.row is not None:
        return one_row(cfg)
    device = get_device(cfg.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = cfg.peak_tflops if cfg.peak_tflops is not None else (peak_for(name) if cuda else None)
    if cuda and peak is None:
        sys.exit(f"device_bench: unknown GPU {name!r}: give its dense bf16 peak in TFLOPS with --peak_tflops=<N>")
    tiny = tiny_scale(cfg, device)
    if not cuda and not cfg.only_flops:
        print("no CUDA device: running the CPU self-check at tiny sizes (the paper-config speed needs a GPU)")
    if cfg.only_flops:
        rows = [r for r in rows if r in STAGES]
    elif cfg.compile != "both":
        rows = [r for r in rows if not (r.endswith("+compile") if cfg.compile == "eager" else r in STAGES)]
    out_dir = Path(cfg.out_dir)
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    config_path = (out_dir / "rows" / "config.yaml").resolve()  # the row subprocesses' config
    with open(config_path, "w") as f:
        pyrallis.dump(cfg, f)
    out = {"device": name, "peak_bf16_tflops": peak, "scale": "tiny" if tiny else "paper", "config": cfg.__dict__}
    out["rows"] = results = {}
    json_path = out_dir / "device_check.json"
    print(f"{'row':<30} {'status':<8} {'batch':>5} {'GFLOP/upd':>11} {'upd/s':>8} {'samples/s':>10} "
          f"{'peak GiB':>8} {'MFU':>6} {'s':>6}", flush=True)  # fmt: skip
    for row_name in rows:
        left = cfg.time_budget_s - (time.perf_counter() - began)
        if left <= 0:
            results[row_name] = {"status": "skipped", "error": f"past time_budget_s={cfg.time_budget_s:g}"}
            print_row(row_name, results[row_name])
            continue
        timeout = min(cfg.row_timeout_s, left + OVERRUN_S)  # a row started inside the budget may end a little past it
        started = time.perf_counter()
        if row_name.startswith("script:"):
            row = script_row(row_name, cfg, tiny, timeout)
        elif row_name.startswith("resume:"):
            row = resume_row(cfg, tiny, timeout)
        else:
            row = row_subprocess(row_name, config_path, cfg.out_dir, timeout)
        row.setdefault("seconds", time.perf_counter() - started)
        if row_name.endswith("+compile") and "flops_per_update" in results.get(row_name.removesuffix("+compile"), {}):
            row["flops_per_update"] = results[row_name.removesuffix("+compile")]["flops_per_update"]  # the eager row's
        if peak and "updates_per_s" in row and "flops_per_update" in row:
            row["mfu"] = row["flops_per_update"] * row["updates_per_s"] / (peak * 1e12)
        results[row_name] = row
        print_row(row_name, row)
        write_json(json_path, out)

    stages = {k: r for k, r in results.items() if k in STAGES and "flops_per_update" in r}
    proj_peak = peak or cfg.projection_peak_tflops
    at_mfu = project({k: r["flops_per_update"] / (cfg.assumed_mfu * proj_peak * 1e12) for k, r in stages.items()})
    out["projection_assumed_mfu"] = {"mfu": cfg.assumed_mfu, "peak_tflops": proj_peak, "methods": at_mfu}
    if cuda and not cfg.only_flops and not tiny:
        measured = {k: 1 / r["updates_per_s"] for k, r in stages.items() if "updates_per_s" in r}
        out["projection_measured_eager"] = project(measured)
    print_projection(out)
    out["seconds"] = time.perf_counter() - began
    write_json(json_path, out)
    failed = [k for k, r in results.items() if r.get("status") not in ("ok", "skipped")]
    print(f"\ndevice: {name} ({'peak ' + format(peak, 'g') + ' TFLOPS' if peak else 'no peak'}); {len(results)} rows, "
          f"{len(failed)} not ok{': ' + ', '.join(failed) if failed else ''}; {out['seconds']:.0f} s; "
          f"results: {json_path}")  # fmt: skip
    return out


if __name__ == "__main__":
    main(pyrallis.parse(config_class=DeviceBenchConfig))
