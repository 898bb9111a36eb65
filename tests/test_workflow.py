"""Experiment workflow: sweep scripts (syntax, dry run, skip, parallel runner and failure reporting), the results
report of scripts/plot_results.py and the cross-embodied dataset builder, on real files."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from scripts.data.make_cross_embodied import Config as MixConfig
from scripts.data.make_cross_embodied import make_cross_embodied
from scripts.plot_results import write_report

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "scripts" / "sweeps").glob("*.sh")) + [ROOT / "scripts" / "data" / "make_labeled_sets.sh"]


# ---------------------------------------------------------------- sweeps


@pytest.mark.parametrize("script", SWEEPS, ids=lambda p: p.name)
def test_sweep_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def _sweep(script: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "RUNS_DIR": str(tmp_path / "runs"),
        "ENVS": "cheetah-run",
        "BUDGETS": "2 4",
        "SEEDS": "0 1",
        **env,
    }
    return subprocess.run(
        ["bash", f"scripts/sweeps/{script}"], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60
    )


def _touch_data(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("cheetah-run", "cheetah-run-labeled-1000x2", "cheetah-run-labeled-1000x4"):
        (tmp_path / "data" / f"{name}.hdf5").touch()


def test_dry_run_reuses_lam_and_skips_finished_runs(tmp_path):
    _touch_data(tmp_path)
    done = tmp_path / "runs" / "laom" / "cheetah-run" / "budget4" / "seed1"
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    res = _sweep("laom.sh", tmp_path, DRY_RUN="1")
    assert res.returncode == 0, res.stderr
    commands = [line for line in res.stdout.splitlines() if line.startswith("[dry-run]")]
    assert len(commands) == 3  # 2 budgets x 2 seeds, one finished
    assert f"[skip]   {done} (results.json exists)" in res.stdout
    base = tmp_path / "runs" / "laom" / "cheetah-run" / "budget2" / "seed0"
    (reuse,) = [c for c in commands if "budget4/seed0 " in c]
    assert f"--lapo.checkpoint_path={base}/lam.pt" in reuse
    assert f"--bc.checkpoint_path={base}/latent_bc.pt" in reuse
    assert "--decoder.data_path=" + str(tmp_path / "data" / "cheetah-run-labeled-1000x4.hdf5") in reuse
    (first,) = [c for c in commands if "--run_dir=" + str(base) + " " in c]
    assert "checkpoint_path" not in first


def test_missing_data_stops_the_sweep(tmp_path):
    res = _sweep("bc.sh", tmp_path)
    assert res.returncode == 2
    assert "cheetah-run-labeled-1000x4.hdf5" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_runner_parallel_logs_and_failures(tmp_path):
    """A stand-in for python writes results.json and fails for seed 1: the sweep runs the rest (2 at once), keeps a
    log per run, lists the failure with its log and exits non-zero; a second sweep skips the finished runs."""
    _touch_data(tmp_path)
    fake = tmp_path / "fake_python.sh"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do case $a in --run_dir=*) d=${a#--run_dir=};; --seed=1) echo boom >&2; exit 3;; esac; done\n'
        'mkdir -p "$d"; echo "{}" > "$d/results.json"; echo "trained $d"\n'
    )
    fake.chmod(0o755)
    res = _sweep("idm.sh", tmp_path, PYTHON=str(fake), PARALLEL="2")
    assert res.returncode == 1
    runs = tmp_path / "runs" / "idm" / "cheetah-run"
    assert sorted(p.parent.parent.name for p in runs.glob("*/seed0/results.json")) == ["budget2", "budget4"]
    assert not list(runs.glob("*/seed1/results.json"))
    assert "boom" in (runs / "budget2" / "seed1" / "train.log").read_text()
    assert "trained" in (runs / "budget4" / "seed0" / "train.log").read_text()
    assert f"{runs}/budget4/seed1\t{runs}/budget4/seed1/train.log" in res.stderr
    again = _sweep("idm.sh", tmp_path, PYTHON=str(fake), SEEDS="0")
    assert again.returncode == 0 and again.stdout.count("[skip]") == 2


# ---------------------------------------------------------------- results report


def _write_run(
    runs: Path, method: str, env: str, budget, seed: int, metrics: dict, stages: dict | None = None, lam_from=None
):
    data = f"data/{env}.hdf5" if budget == "full" else f"data/{env}-labeled-1000x{budget}.hdf5"
    sections = {
        "bc": {"bc": {"data_path": data}},
        "bc_full": {"bc": {"data_path": data}},
        "idm": {"idm": {"data_path": data}, "bc": {"data_path": f"data/{env}.hdf5"}},
        "laom": {"lapo": {"data_path": f"data/{env}.hdf5"}, "bc": {}, "decoder": {"data_path": data}},
        "lapo": {
            "lapo": {"data_path": f"data/{env}.hdf5", "quantize": "none"},
            "bc": {},
            "decoder": {"data_path": data},
        },
        "laom_labels": {"lapo": {"labeled_data_path": data}, "bc": {}, "decoder": {"data_path": None}},
    }[method]
    if lam_from:  # a run that reuses another run's LAM (--lapo.checkpoint_path)
        sections["lapo"]["checkpoint_path"] = lam_from
    d = runs / method / env / ("full" if budget == "full" else f"budget{budget}") / f"seed{seed}"
    d.mkdir(parents=True)
    results = {"config": {"seed": seed, **sections}, "stages": stages or {}, "metrics": metrics}
    (d / "results.json").write_text(json.dumps(results))


def test_report_values(tmp_path):
    runs = tmp_path / "runs"
    scores = {  # (method, env, budget) -> score per seed
        ("laom_labels", "cheetah-run", 2): [0.2, 0.4, 0.6],
        ("laom_labels", "walker-run", 2): [0.1, 0.3, 0.2],
        ("laom_labels", "cheetah-run", 4): [0.5, 0.7],  # seed 2 missing
        ("bc", "cheetah-run", 2): [0.05, 0.15, 0.1],
    }
    for (method, env, budget), values in scores.items():
        for seed, v in enumerate(values):
            metrics = {"decoder/normalized_score": v, "lapo/final_action_probe_mse": 0.1 * (seed + 1)}
            if method == "bc":
                metrics = {"bc/normalized_score": v}
            _write_run(runs, method, env, budget, seed, metrics)
    for seed, (mse_idm, mse_sup) in enumerate([(0.3, 0.1), (0.5, 0.3)]):
        _write_run(runs, "idm", "cheetah-run", 2, seed, {"bc/eval_returns_mean": 411.5, "idm/eval_action_mse": mse_idm})
        m = {"decoder/normalized_score": None, "lapo/eval_action_mse": mse_sup}
        _write_run(runs, "laom_labels", "hopper-hop", 2, seed, m)
    for seed in range(2):  # LAOM: the LAM-training run (budget 2) and a run that reused it (budget 4)
        _write_run(runs, "laom", "cheetah-run", 2, seed, {"lapo/final_action_probe_mse": 0.4 + seed * 0.2})
        reused = {"lapo": {"skipped": True}}
        lam_from = f"runs/laom/cheetah-run/budget2/seed{seed}/lam.pt"
        _write_run(runs, "laom", "cheetah-run", 4, seed, {"lapo/final_action_probe_mse": 9.0}, reused, lam_from)
    # A LAPO run resumed after its LAM stage had finished: the stage says skipped, yet the run trained the LAM.
    _write_run(runs, "lapo", "cheetah-run", 2, 0, {"lapo/final_action_probe_mse": 7.0}, {"lapo": {"skipped": True}})
    _write_run(runs, "bc_full", "cheetah-run", "full", 0, {"bc/normalized_score": 1.02})
    (runs / "laom" / "cheetah-run" / "budget8" / "seed0").mkdir(parents=True)
    (runs / "laom" / "cheetah-run" / "budget8" / "seed0" / "config.json").write_text("{}")

    out = tmp_path / "out"
    summary = write_report(runs, out)

    rows = {(r["method"], r["env"], r["budget"]): r for r in csv.DictReader(open(out / "scores.csv"))}
    for key, values in scores.items():
        row = rows[(key[0], key[1], str(key[2]))]
        assert float(row["mean"]) == pytest.approx(np.mean(values))
        assert float(row["std"]) == pytest.approx(np.std(values))
        assert int(row["n"]) == len(values)
    # IDM recorded only a return: its score comes from Table 3 (cheetah-run 823).
    assert float(rows[("idm", "cheetah-run", "2")]["mean"]) == pytest.approx(411.5 / 823)
    assert float(rows[("bc_full", "cheetah-run", "full")]["mean"]) == pytest.approx(1.02)
    # Average over environments of laom_labels at budget 2: mean of the env means (hopper-hop has no score);
    # std over seeds of the per-seed mean over environments.
    avg = rows[("laom_labels", "average", "2")]
    assert float(avg["mean"]) == pytest.approx((0.4 + 0.2) / 2)
    assert float(avg["std"]) == pytest.approx(np.std([(0.2 + 0.1) / 2, (0.4 + 0.3) / 2, (0.6 + 0.2) / 2]))
    # Probes: LAOM's shared LAM counted once per seed, from the run that trained it.
    probe = [r for r in summary["probes"]["action_probe_mse"] if r["method"] == "laom" and r["env"] == "cheetah-run"]
    assert [(p["budget"], p["n"]) for p in probe] == [("-", 2)]
    assert probe[0]["mean"] == pytest.approx(0.5) and probe[0]["std"] == pytest.approx(0.1)
    lapo = [r for r in summary["probes"]["action_probe_mse"] if r["method"] == "lapo" and r["env"] == "cheetah-run"]
    assert [(p["budget"], p["n"], p["mean"]) for p in lapo] == [("-", 1, 7.0)]
    novel = {(r["method"], r["env"]): r for r in summary["novel_distractors"]}
    assert novel[("idm", "cheetah-run")]["mean"] == pytest.approx(0.4)
    assert novel[("laom_labels", "hopper-hop")]["mean"] == pytest.approx(0.2)
    # Missing seeds and unfinished runs are reported.
    missing = {(m["method"], m["env"], m["budget"]): m["missing_seeds"] for m in summary["missing"]}
    assert missing[("laom_labels", "cheetah-run", 4)] == [2]
    assert missing[("bc_full", "cheetah-run", "full")] == [1, 2]
    assert summary["unfinished"] == [str(runs / "laom" / "cheetah-run" / "budget8" / "seed0")]
    md = (out / "results.md").read_text()
    # mean ± std (seeds), then rliable's IQM (the mean, for 3 or 2 seeds) and its 95% bootstrap interval, which for
    # these few seeds spans the smallest to the largest seed
    assert "| LAOM+supervision | 0.40 ± 0.16 (3); IQM 0.4 [0.2, 0.6] | 0.60 ± 0.10 (2); IQM 0.6 [0.5, 0.7] |" in md
    assert "no seeds [2]" in md
    for name in ("scores.png", "probe_mse.png", "novel_distractors.png", "summary.json", "probes.csv"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["num_runs"] == len(summary["runs"])


def test_report_normalised_by_the_sweeps_own_bc_on_all_data(tmp_path):
    """--normalize_by=bc_full: every score is return / mean return of the bc_full runs of its env; an env
    without bc_full runs gets no scores and says why; ridge-probe columns and their figure come with it."""
    runs = tmp_path / "runs"
    for seed, ret in enumerate([100.0, 300.0]):
        _write_run(runs, "bc_full", "cheetah-run", "full", seed, {"bc/eval_returns_mean": ret})
    for seed, ret in enumerate([50.0, 150.0]):
        probes = {"lapo/ridge_probe_mse": 2.0 + seed, "lapo/ridge_probe_baseline_mse": 10.0}
        metrics = {"decoder/eval_returns_mean": ret, "decoder/normalized_score": 0.9, **probes}
        _write_run(runs, "laom", "cheetah-run", 2, seed, metrics)
        _write_run(runs, "bc", "walker-run", 2, seed, {"bc/eval_returns_mean": ret})
    out = tmp_path / "out"
    summary = write_report(runs, out, normalize_by="bc_full")
    rows = {(r["method"], r["env"], r["budget"]): r for r in summary["scores"]}
    assert rows[("bc_full", "cheetah-run", "full")]["mean"] == pytest.approx(1.0)
    assert rows[("laom", "cheetah-run", 2)]["mean"] == pytest.approx(np.mean([50 / 200, 150 / 200]))
    assert ("bc", "walker-run", 2) not in rows  # no bc_full for walker-run: no score
    assert any("walker-run: no scores" in p for p in summary["left_out"])
    ridge = [r for r in summary["probes"]["ridge_probe_mse"] if r["env"] == "cheetah-run"]
    assert ridge[0]["mean"] == pytest.approx(2.5)
    md = (out / "results.md").read_text()
    assert "this sweep's BC runs on all the data" in md and "ridge, held out" in md
    assert (out / "ridge_probe_mse.png").stat().st_size > 0
    with pytest.raises(ValueError, match="normalize_by='bogus'"):
        write_report(runs, out, normalize_by="bogus")


def test_report_cli(tmp_path):
    _write_run(tmp_path / "runs", "bc", "walker-run", 8, 0, {"bc/normalized_score": 0.25})
    subprocess.run(
        [sys.executable, "-m", "scripts.plot_results", "--runs_dir", str(tmp_path / "runs"), "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (row,) = [r for r in csv.DictReader(open(tmp_path / "scores.csv")) if r["env"] == "walker-run"]
    assert math.isclose(float(row["mean"]), 0.25) and row["budget"] == "8"


def _example_run(runs: Path, name: str, config: dict, metrics: dict) -> None:
    """A run as `python -m train_<method> --config_path configs/example/<method>.yaml` leaves it: runs/<name>-seed0,
    outside the sweep layout, on data/example-data.hdf5 (relative to where it was launched)."""
    d = runs / f"{name}-seed0"
    d.mkdir(parents=True)
    results = {"config": {"seed": 0, **config}, "stages": {}, "metrics": metrics}
    (d / "results.json").write_text(json.dumps(results))


def test_report_counts_the_example_runs(tmp_path, monkeypatch):
    """The five example runs name neither env nor budget: env from the data file's attributes, budget from its
    trajectory count (at most the stage's max_trajectories), bc on every trajectory of its file = bc_full."""
    monkeypatch.chdir(tmp_path)  # the runs were launched here: their relative data paths are read from here
    (tmp_path / "data").mkdir()
    _source(tmp_path / "data" / "example-data.hdf5", "cheetah", "run", 5, act_dim=6, state_dim=17)
    data = "data/example-data.hdf5"
    decoder = {"data_path": data, "max_trajectories": None}
    runs = tmp_path / "runs"
    score = {"decoder/normalized_score": 0.5, "decoder/eval_returns_mean": 411.5}
    _example_run(runs, "example-bc", {"bc": {"data_path": data}}, {"bc/eval_returns_mean": 823.0})
    idm = {"idm": {"data_path": data}, "bc": {"data_path": data}}
    _example_run(runs, "example-idm", idm, {"bc/normalized_score": 0.25, "idm/eval_action_mse": 0.3})
    lapo = {"lapo": {"data_path": data, "quantize": None}, "bc": {"data_path": data}, "decoder": decoder}
    _example_run(runs, "example-lapo", lapo, score)
    capped = {**decoder, "max_trajectories": 3}
    _example_run(runs, "example-laom", {"lapo": {"data_path": data}, "bc": {}, "decoder": capped}, score)
    labels = {"lapo": {"data_path": data, "labeled_data_path": data}, "bc": {}, "decoder": {"data_path": None}}
    _example_run(runs, "example-laom-labels", labels, score)
    _example_run(runs, "elsewhere-idm", {"idm": {"data_path": "/nowhere/mine.hdf5"}}, {"bc/normalized_score": 0.1})

    summary = write_report("runs", "out")

    found = {r["method"]: (r["env"], r["budget"]) for r in summary["runs"]}
    assert found == {
        "bc_full": ("cheetah-run", "full"),
        "idm": ("cheetah-run", 5),
        "lapo": ("cheetah-run", 5),
        "laom": ("cheetah-run", 3),
        "laom_labels": ("cheetah-run", 5),
    }
    (left_out,) = summary["left_out"]  # the run whose data file is not at hand and whose name says nothing
    assert "elsewhere-idm" in left_out and "/nowhere/mine.hdf5" in left_out
    rows = {(r["method"], r["env"]): r for r in csv.DictReader(open(tmp_path / "out" / "scores.csv"))}
    assert float(rows[("bc_full", "cheetah-run")]["mean"]) == pytest.approx(1.0)  # 823 / 823 from the file's attrs
    assert float(rows[("laom", "cheetah-run")]["mean"]) == pytest.approx(0.5)


def test_report_writes_outside_the_source_tree_by_default(tmp_path):
    _write_run(tmp_path / "runs", "bc", "walker-run", 8, 0, {"bc/normalized_score": 0.25})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "scripts.plot_results"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    assert (tmp_path / "runs" / "results" / "scores.csv").is_file()  # default --runs_dir runs, --out runs/results
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/results/scores.csv"], cwd=ROOT)
    assert ignored.returncode == 0  # in a checkout, the report lands in the git-ignored runs/


# ---------------------------------------------------------------- cross-embodied datasets


def _source(path: Path, domain: str, task: str, n: int, act_dim: int, state_dim: int, hw: int = 8, steps: int = 5):
    with h5py.File(path, "w") as f:
        f.attrs.update(domain_name=domain, task_name=task, difficulty="scale_easy_video_hard", dynamic=True)
        f.attrs.update(img_hw=hw, split="train", dataset_return=1.0)
        for i in range(n):
            g = f.create_group(str(i))
            g.create_dataset("obs", data=np.full((steps, hw, hw, 3), i, dtype=np.uint8))
            g.create_dataset("actions", data=np.full((steps, act_dim), i + 1, dtype=np.float32))
            g.create_dataset("states", data=np.full((steps, state_dim), -(i + 1), dtype=np.float32))
            g.attrs["traj_return"] = float(10 * i)
    return path


def test_cross_embodied(tmp_path):
    a = _source(tmp_path / "walker-run.hdf5", "walker", "run", 4, act_dim=6, state_dim=24)
    b = _source(tmp_path / "hopper-hop.hdf5", "hopper", "hop", 3, act_dim=4, state_dim=15)
    out = tmp_path / "mixed.hdf5"
    cfg = MixConfig(target_env="cheetah-run", sources=f"{a},{b}", counts="3,2", save_path=str(out), chunk_size=2)
    make_cross_embodied(cfg)
    with h5py.File(out) as f:
        assert sorted(f.keys(), key=int) == [str(i) for i in range(5)]
        assert (f.attrs["domain_name"], f.attrs["task_name"], bool(f.attrs["mixed"])) == ("cheetah", "run", True)
        assert (f.attrs["act_dim_max"], f.attrs["state_dim_max"], f.attrs["img_hw"]) == (6, 24, 8)
        sources = json.loads(f.attrs["sources"])
        assert [(s["env"], s["trajectories"], s["act_dim"], s["state_dim"]) for s in sources] == [
            ("walker-run", 3, 6, 24),
            ("hopper-hop", 2, 4, 15),
        ]
        envs = [f[str(i)].attrs["source_env"] for i in range(5)]
        assert envs == ["walker-run"] * 3 + ["hopper-hop"] * 2
        hop = f["4"]
        assert hop["actions"].shape == (5, 6) and hop["states"].shape == (5, 24) and hop["obs"].shape == (5, 8, 8, 3)
        assert (hop.attrs["act_dim"], hop.attrs["state_dim"]) == (4, 15)
        idx = int(hop.attrs["original_traj_idx"])
        np.testing.assert_array_equal(hop["actions"][:, :4], idx + 1)
        np.testing.assert_array_equal(hop["actions"][:, 4:], 0)  # zero padding
        np.testing.assert_array_equal(hop["states"][:, 15:], 0)
        np.testing.assert_array_equal(hop["obs"][:], idx)
        assert hop.attrs["traj_return"] == 10 * idx
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_cross_embodied(cfg)
    c = _source(tmp_path / "humanoid-walk.hdf5", "humanoid", "walk", 2, act_dim=21, state_dim=67, hw=16)
    bad = MixConfig(target_env="cheetah-run", sources=f"{a},{c}", counts="1,1", save_path=str(tmp_path / "bad.hdf5"))
    with pytest.raises(ValueError, match="img_hw differs") as err:
        make_cross_embodied(bad)
    assert str(a) in str(err.value) and str(c) in str(err.value)
    assert not list(tmp_path.glob("bad.hdf5*"))  # nothing left behind
    too_many = MixConfig(target_env="cheetah-run", sources=str(a), counts="5", save_path=str(tmp_path / "x.hdf5"))
    with pytest.raises(ValueError, match="holds 4 trajectories, 5 requested"):
        make_cross_embodied(too_many)


def test_cross_embodied_sweep_trains_the_lam_on_the_mixture(tmp_path):
    _touch_data(tmp_path)
    (tmp_path / "data" / "cheetah-run-mixed.hdf5").touch()
    res = _sweep("cross_embodied.sh", tmp_path, DRY_RUN="1", SEEDS="0")
    assert res.returncode == 0, res.stderr
    commands = [line for line in res.stdout.splitlines() if line.startswith("[dry-run]")]
    assert len(commands) == 4  # laom and laom_labels, 2 budgets
    data = tmp_path / "data"
    for c in commands:
        assert f"--lapo.data_path={data}/cheetah-run-mixed.hdf5 " in c and "--lapo.eval_data_path=null" in c
        assert f"--bc.data_path={data}/cheetah-run.hdf5 " in c
        assert f"--run_dir={tmp_path}/runs/cross_embodied/" in c
