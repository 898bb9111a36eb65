"""scripts/reproduce_small.sh end to end on tiny settings: real collection with the released expert, all six runs
through the sweep scripts, the report normalised by the sweep's own BC on all data, and a resume that redoes
nothing. The configs are configs/small with the update and episode counts cut (the settings a user can change)."""

import json
import os
import re
import subprocess
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERT = ROOT.parent / "shared" / "experts" / "cheetah-run-expert"

pytestmark = pytest.mark.skipif(not EXPERT.is_dir(), reason=f"the released expert is not at {EXPERT}")


def tiny_configs(dest: Path) -> Path:
    """configs/small with a few updates per stage, one evaluation episode and a small ridge probe."""
    dest.mkdir()
    for src in (ROOT / "configs" / "small").glob("*.yaml"):
        text = src.read_text()
        text = re.sub(r"total_updates: \d+.*", "total_updates: 3", text)
        text = text.replace("eval_episodes: 3", "eval_episodes: 1").replace(
            "ridge_probe_samples: 10000", "ridge_probe_samples: 200"
        )
        (dest / src.name).write_text(text)
    return dest


def run_script(env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["bash", "scripts/reproduce_small.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_reproduce_small_end_to_end_and_resume(tmp_path):
    small = tmp_path / "small"
    env = {
        **os.environ,
        "SMALL_DIR": str(small),
        "CONFIG_DIR": str(tiny_configs(tmp_path / "configs")),
        "NUM_TRAJ": "3",
        "NUM_EVAL": "1",
        "STEPS": "40",
        "BUDGET": "1",
        "SEEDS": "0",
        "EXTRA_ARGS": "--eval_max_episode_steps=10",
        "MUJOCO_GL": "egl",
    }
    out = run_script(env).stdout
    assert "6 of 6 runs finished" in out
    # The data: training videos for the dataset, validation videos (novel distractors) for the evaluation set.
    with h5py.File(small / "data" / "cheetah-run.hdf5") as f:
        assert f.attrs["split"] == "train" and len([k for k in f if k.isdigit()]) == 3
        assert f["0/obs"].shape == (40, 64, 64, 3)
    with h5py.File(small / "data" / "cheetah-run-eval.hdf5") as f:
        assert f.attrs["split"] == "val"
    assert (small / "data" / "cheetah-run-labeled-1000x1.hdf5").is_file()
    # Every run finished; every LAM run wrote the closed-form probe next to the online one.
    results = {p.relative_to(small / "runs").parts[0]: json.loads(p.read_text()) for p in small.rglob("results.json")}
    assert sorted(results) == ["bc", "bc_full", "idm", "laom", "laom_labels", "lapo"]
    for method in ("lapo", "laom", "laom_labels"):
        m = results[method]["metrics"]
        assert m["lapo/ridge_probe_mse"] > 0 and m["lapo/ridge_probe_baseline_mse"] > 0, method
        assert m["lapo/eval_ridge_probe_mse"] > 0 and m["lapo/action_variance"] > 0, method
    # The report: scores normalised by this sweep's BC on all data, the probe figures, how it was made.
    report = small / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["normalize_by"] == "bc_full" and summary["num_runs"] == 6
    bc_full = [r for r in summary["scores"] if r["method"] == "bc_full" and r["env"] == "cheetah-run"]
    assert bc_full[0]["mean"] == pytest.approx(1.0)
    ret = (
        results["laom"]["metrics"]["decoder/eval_returns_mean"] / results["bc_full"]["metrics"]["bc/eval_returns_mean"]
    )
    laom = [r for r in summary["scores"] if r["method"] == "laom" and r["env"] == "cheetah-run"]
    assert laom[0]["mean"] == pytest.approx(ret)
    for name in ("results.md", "scores.png", "probe_mse.png", "ridge_probe_mse.png", "run-info.md"):
        assert (report / name).stat().st_size > 0, name
    assert "bash scripts/reproduce_small.sh" in (report / "run-info.md").read_text()

    # The same command again: the data is complete, every run is skipped, the report is rewritten.
    again = run_script(env).stdout
    assert again.count("[skip]") == 6 and "[start]" not in again
    assert "6 of 6 runs finished" in again
    assert (small / "timings.txt").read_text().count("bash scripts/reproduce_small.sh") == 2


def test_missing_expert_is_named(tmp_path):
    env = {**os.environ, "SMALL_DIR": str(tmp_path / "s"), "EXPERT": str(tmp_path / "nowhere")}
    proc = subprocess.run(["bash", "scripts/reproduce_small.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and f"EXPERT={tmp_path / 'nowhere'} is not a folder" in proc.stderr
