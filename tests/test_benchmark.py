"""python -m scripts.bench.benchmark finishes at tiny sizes and writes every row it prints; a row with nothing to
measure (the worker processes' reset time) says so instead of NaN."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_finishes_with_every_row(tmp_path):
    out = tmp_path / "benchmark.json"
    args = ["--num_trajectories=2", "--trajectory_length=40", "--batch_size=8", "--data_batches=2"]
    args += ["--methods=[bc]", "--update_steps=1", "--update_batch_size=4"]
    args += ["--dcs_sources=builtin", "--dcs_modes=collection", "--dcs_way=port", "--dcs_episodes=2"]
    args += ["--dcs_steps=2", "--dcs_workers=2", f"--out={out}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench.benchmark", *args], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {
        "data pipeline: batched tensor indexing",
        "data pipeline: per-sample DataLoader (num_workers=0)",
        "bc: stage-1 update",
    }
    assert min(result["rows"].values()) > 0
    dcs = result["dcs_rows"]
    workers = dcs["DCS 2 worker processes, built-in 160 px, 60 frames: port"]
    assert workers["frames_per_s"] > 0 and workers["reset_s"] is None  # no reset time of its own
    single = dcs["DCS collection (DCS env), built-in 160 px, 60 frames: port"]
    assert single["frames_per_s"] > 0 and single["reset_s"] > 0
    assert "DCS 2 worker processes, built-in 160 px, 60 frames: port" in proc.stdout
    assert "nan" not in proc.stdout.lower()
