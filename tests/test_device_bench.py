"""scripts/bench/device_check.sh (device_bench.py), the GPU box's one prepared check, kept from rotting by its CPU mode:
the script as a user runs it at tiny sizes, a failing row isolated, its FLOP counts against hand counts, the peak
lookup and the projection."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import train_lapo
from scripts.bench import device_bench as db

REPO = Path(__file__).resolve().parents[1]


def test_device_check_runs_end_to_end_in_its_cpu_mode(tmp_path):
    """bash scripts/bench/device_check.sh OUT_DIR as on a GPU box, in its CPU mode at tiny sizes: stage rows with
    FLOPs and MFU, a compiled row that fails (no C compiler, as in a Docker image without one: Inductor cannot build
    its kernels) recorded in one line while the rows after it run, a method script's real command line, a run
    stopped by SIGTERM (exit 75) and resumed, the data path; one JSON and a printed table under OUT_DIR; no stage
    checkpoint written while timing."""
    out_dir = tmp_path / "check"
    rows = ["laom_labels/lam", "bc/bc", "bc/bc+compile", "script:train_bc", "resume:train_bc", "data_path"]
    cmd = ["bash", "scripts/bench/device_check.sh", str(out_dir), f"--rows=[{','.join(rows)}]"]
    cmd += ["--peak_tflops=0.05", "--windows=2", "--data_batches=3", "--script_updates=4"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    out = out_dir / "device_check.json"
    assert lines[0].startswith("no CUDA device: running the CPU self-check at tiny sizes")
    assert lines[-1].endswith(f"results: {out}") and "6 rows, 1 not ok: bc/bc+compile;" in lines[-1], lines[-1]
    result = json.loads(out.read_text())
    assert result["scale"] == "tiny" and result["peak_bf16_tflops"] == 0.05 and list(result["rows"]) == rows
    for key in ["laom_labels/lam", "bc/bc"]:
        row = result["rows"][key]
        assert row["status"] == "ok" and row["batch"] == 8 and row["flops_per_update"] > 0
        assert row["mfu"] == pytest.approx(row["flops_per_update"] * row["updates_per_s"] / 0.05e12)
        samples = 8 + 2 if key == "laom_labels/lam" else 8  # its labeled batch: 128 per 512, 2 per 8
        assert row["samples_per_update"] == samples
        assert row["samples_per_s"] == pytest.approx(samples * row["updates_per_s"])
        printed = next(line for line in lines if line.startswith(key))
        assert printed.split()[1] == "ok" and f"{100 * row['mfu']:.1f}%" in printed
    measured = {p.name for p in (out_dir / "runs").iterdir() if (p / "config.json").exists()}  # the stage rows' runs
    assert {"laom_labels_lam", "laom_labels_lam-flops", "bc_bc"} <= measured
    assert not list((out_dir / "runs").rglob("*.pt"))
    assert sorted(p.parent.name for p in out_dir.rglob("*.pt")) == ["resume_train_bc", "train_bc"]  # the scripts' own
    assert json.loads((out_dir / "scripts/train_bc/results.json").read_text())["stages"]["bc"]["bc/updates"] == 4
    resumed = result["rows"]["resume:train_bc"]
    assert resumed["status"] == "ok" and resumed["stopped_exit_code"] == 75 and resumed["resumed_exit_code"] == 0
    assert 10 <= resumed["stopped_at_update"] < resumed["total_updates"]
    assert min(v for k, v in result["rows"]["data_path"].items() if k.endswith("samples_per_s")) > 0
    failed = result["rows"]["bc/bc+compile"]
    assert failed["status"] == "failed" and "\n" not in failed["error"], failed
    assert any(line.startswith("bc/bc+compile") and " failed " in line for line in lines)
    assert set(result["projection_assumed_mfu"]["methods"]) == {"bc"}  # only BC's stages were all measured
    assert any(line.startswith("bc ") and "PROJECTION 50% MFU" in line for line in lines)


def test_flops_per_update_scale_with_the_batch_and_match_hand_counts(tmp_path):
    """Through the script's own LAPO stage at tiny sizes (encoder channels 16, 32, 32; Z = 128)."""
    counts = {}
    for batch in (2, 4):
        path = str(tmp_path / f"frames{batch}.hdf5")
        db.write_stage_data(path, batch, 2)
        counts[batch] = db.count_flops("lapo/lam", path, torch.device("cpu"), True, batch)
    assert counts[4][0] == 2 * counts[2][0]
    total, modules = counts[4]
    d, z, b = 32 * 8 * 8, 128, 4
    assert modules["LAPO.idm.fc"] == 3 * 2 * b * d * z  # Linear: forward, input gradient, weight gradient
    # The first Conv2d (6k = 18 channels in, 16 out, 3x3, 64 -> 32 px): forward and weight gradient only (the
    # frames need no gradient).
    assert modules["LAPO.idm.encoder.blocks.0.conv"] == 2 * 2 * b * 16 * 32 * 32 * 18 * 9
    assert total == modules["Global"]


def test_paper_config_flops_match_hand_counts():
    """LAPO's networks at the paper's config (scale 6, Z 8192, batch 512), counted on the meta device."""
    with torch.device("meta"):
        lam = train_lapo.build_lam(train_lapo.LAPOConfig(), 64)
    x = torch.empty(512, 9, 64, 64, device="meta")
    with FlopCounterMode(display=False) as counter:
        lam(x, x)[0].float().mean().backward()
    modules = {m: sum(ops.values()) for m, ops in counter.get_flop_counts().items()}
    assert modules["LAPO.idm.fc"] == 3 * 2 * 512 * (192 * 8 * 8) * 8192  # 309 GFLOP
    assert modules["LAPO.idm.encoder.blocks.0.conv"] == 2 * 2 * 512 * 96 * 32 * 32 * 18 * 9


def test_peak_lookup_and_bad_input():
    """torch.cuda.get_device_name of the cards a user has, with NVIDIA's dense bf16 peaks (half the sparse ones)."""
    assert db.peak_for("NVIDIA H100 80GB HBM3") == 989
    assert db.peak_for("NVIDIA H100 PCIe") == 756
    assert db.peak_for("NVIDIA H100 NVL") == 835
    assert db.peak_for("NVIDIA H200") == 989
    assert db.peak_for("NVIDIA H200 NVL") == 835  # matched the H200 row (989): MFU read low
    assert db.peak_for("NVIDIA GH200 480GB") == 989
    assert db.peak_for("NVIDIA A100-SXM4-80GB") == 312
    assert db.peak_for("NVIDIA GeForce RTX 4090") is None
    cmd = [sys.executable, "-m", "scripts.bench.device_bench", "--rows=[lapo/nope]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("device_bench: rows must be among ['lapo/lam'")
    proc = subprocess.run(["bash", "scripts/bench/device_check.sh"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: bash scripts/bench/device_check.sh OUT_DIR")


def test_paper_run_updates_and_figure8_grid_reuse():
    assert db.paper_updates("lapo/lam", 2) == 10 * (5000 * 990 // 512)  # LAPO drops the last partial batch
    assert db.paper_updates("laom/lam", 2) == 10 * 9668  # LAOM keeps it: ceil(5000 * 990 / 512)
    assert db.paper_updates("laom/latent_bc", 2) == 10 * (5000 * 999 // 512)
    assert db.paper_updates("laom/decoder", 2) == 2500  # 4 batches an epoch, 625 epochs
    assert db.paper_updates("laom/decoder", 32) == 39 * 63  # whole epochs of 63 batches
    assert db.paper_updates("idm/idm", 8) == 10000 and db.paper_updates("bc/bc", 8) == 10000
    assert db.paper_updates("idm/idm", 32) == 158 * 63  # whole epochs of ceil(32 * 999 / 512) = 63 batches
    one_second = {k: 1.0 for k in db.STAGES}
    p = db.project(one_second)
    decoders = sum(db.paper_updates("laom/decoder", b) for b in db.PAPER_BUDGETS)
    lam, bc = db.paper_updates("laom/lam", 2), db.paper_updates("laom/latent_bc", 2)
    assert p["laom"]["figure8_grid_h"] == pytest.approx(12 * (lam + bc + decoders) / 3600)  # LAM, latent BC once
    assert p["laom_labels"]["figure8_grid_h"] == pytest.approx(12 * (7 * (lam + bc) + decoders) / 3600)
    assert p["laom"]["one_run_h"] == pytest.approx((lam + bc + 2500) / 3600)
    assert p["bc"]["paper_table2_x_grid_runs_h"] == pytest.approx((1 + 10 / 60) * 84)


def test_projection_of_one_laom_run_against_a_hand_formula():
    """One LAOM run at budget 2 and 50% MFU of 989 TFLOP/s: the FLOPs of each update times the updates of a paper
    run (10 epochs of ceil(5000 x 990 / 512) LAM updates, 10 of 5000 x 999 // 512 latent BC ones, 2500 decoder
    ones)."""
    gflop = {"laom/lam": 6557, "laom/latent_bc": 74305, "laom/decoder": 24177}
    seconds = {k: g * 1e9 / (0.5 * 989e12) for k, g in gflop.items()}
    hand = (6557 * 96680 + 74305 * 97550 + 24177 * 2500) * 1e9 / (0.5 * 989e12) / 3600
    assert db.project(seconds)["laom"]["one_run_h"] == pytest.approx(hand)
    assert hand == pytest.approx(4.46, abs=0.005)
