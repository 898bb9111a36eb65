"""python -m scripts.bench.benchmark finishes at tiny sizes and writes every row it prints; a row with nothing to
measure (the worker processes' reset time) says so instead of NaN."""

import json
import os
import re
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


def test_update_timer_splits_the_script_update_into_its_parts(capsys):
    """python -m scripts.bench.timing times train_<method>'s own stage 1 on the example data: one line, the median
    ms per update and each part's share (data, forward + backward, optimizer), the parts adding up to the total."""
    from scripts.bench.timing import UpdateBenchConfig, main

    main(UpdateBenchConfig(method="laom", updates=2, warmup=1, batch_size=4, latent_action_dim=16, head_dim=16))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("laom batch 4, scale 1, 1 res unit(s), 1 thread(s), Adam fused: "), line
    total = float(line.split("Adam fused: ")[1].split(" ms per update")[0])
    parts = {name: float(ms) for name, ms in re.findall(r"(\w+) ([\d.]+) ms \(\d+%\)", line)}
    assert list(parts) == ["data", "forward_backward", "optimizer"] and min(parts.values()) > 0, line
    assert abs(sum(parts.values()) - total) < 0.2, line
