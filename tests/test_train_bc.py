"""train_bc.py end to end on the example data: train a tiny actor, evaluate it in the DCS, write results.json and
bc.pt; the same command again skips the finished stage."""

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

import train_bc
from src.evaluation import NORMALIZING_RETURNS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"  # cheetah-run, scale_easy_video_hard, built-in videos
UPDATES = 4


def bc_args(run_dir: Path) -> list[str]:
    return [
        f"--run_dir={run_dir}",
        f"--bc.data_path={EXAMPLE}",
        f"--bc.total_updates={UPDATES}",
        "--bc.encoder_scale=1",
        "--bc.batch_size=16",
        "--bc.eval_episodes=1",
        "--eval_max_episode_steps=10",
        "--eval_num_envs=1",
        "--log_every=2",
        "--wandb_mode=disabled",
        "--device=cpu",
    ]


def run_bc(run_dir: Path, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", ["train_bc", *bc_args(run_dir)])
    return train_bc.train()


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory) -> Path:
    if not EXAMPLE.exists():
        pytest.skip("data/example-data.hdf5 is not in this checkout")
    run_dir = tmp_path_factory.mktemp("bc") / "run"
    with pytest.MonkeyPatch.context() as mp:
        run_bc(run_dir, mp)
    return run_dir


def test_bc_trains_evaluates_and_writes_results(bc_run):
    res = json.loads((bc_run / "results.json").read_text())
    assert res["config"]["bc"]["data_path"] == str(EXAMPLE) and res["config"]["bc"]["total_updates"] == UPDATES
    assert list(res["stages"]) == ["bc"]
    stage = res["stages"]["bc"]
    assert stage["seconds"] > 0 and not stage["skipped"]
    m = res["metrics"]
    assert m["bc/updates"] == m["bc/trained_updates"] == UPDATES
    for key in ("bc/eval_returns_mean", "bc/eval_returns_std", "bc/normalized_score"):
        assert math.isfinite(m[key]), key
    returns = stage["bc/eval_returns"]  # one 10-step episode; per-episode lists stay in the stage entry
    assert len(returns) == 1 and math.isfinite(returns[0]) and m["bc/eval_returns_mean"] == pytest.approx(returns[0])
    assert m["bc/normalized_score"] == pytest.approx(returns[0] / NORMALIZING_RETURNS["cheetah-run"]["distractors"])
    assert not (bc_run / "results.partial.json").exists()
    state = torch.load(bc_run / "bc.pt", map_location="cpu", weights_only=False)
    assert state["done"] and state["step"] == UPDATES


def test_bc_rerun_skips_the_finished_stage(bc_run, tmp_path, monkeypatch):
    # This test process still holds the first run's directory lock (src/run.py lock_run_dir, released at exit), so
    # the same command runs on a copy of the finished run directory (a copy may change run_dir: not a training field).
    rerun = tmp_path / "rerun"
    shutil.copytree(bc_run, rerun, ignore=shutil.ignore_patterns(".lock"))
    checkpoint = (rerun / "bc.pt").read_bytes()
    first = json.loads((bc_run / "results.json").read_text())
    run_bc(rerun, monkeypatch)
    again = json.loads((rerun / "results.json").read_text())
    assert list(again["stages"]) == ["bc"] and again["stages"]["bc"]["skipped"]
    assert (rerun / "bc.pt").read_bytes() == checkpoint  # not trained again
    assert again["metrics"]["bc/updates"] == UPDATES
    assert again["metrics"]["bc/eval_returns_mean"] == pytest.approx(first["metrics"]["bc/eval_returns_mean"])
