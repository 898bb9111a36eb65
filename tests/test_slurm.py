"""Preemption and the SLURM launcher of the sweeps, with real processes and a real scheduler.

- A training process stopped by SIGUSR1 checkpoints after its current update, exits with 75 and, run again,
  resumes there and ends with the weights of an uninterrupted run.
- A single-node SLURM (scripts/slurm/setup_local_slurm.sh: Debian's slurmctld, slurmd and munge on localhost, as
  root) runs a 2-run BC sweep (scripts/sweeps/tiny.sh) through LAUNCHER=slurm: one job gets SLURM's warning signal
  (`scancel --signal=USR1 --batch`, what --signal=B:USR1@N sends before a time limit), checkpoints, requeues itself
  and resumes; the other loses its training process without a signal (as on a lost node), fails with a clear line,
  and resumes when the sweep is submitted again. The report and the weights then equal the local launcher's.
- The dependency of a LAOM budget run on its base run's job (afterok), with a stand-in for python.

Exact equality after a resume needs the data order to continue as uninterrupted: the epoch's permutation is not
part of a stage checkpoint (the resumed run draws a new one from the restored RNG), so these runs use one batch per
epoch (1 trajectory of 100 steps, batch 64), where every update draws its permutation from the checkpointed RNG.
On CPU with OMP_NUM_THREADS=1 the runs are then bit-identical.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.stage import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[1]
# BC for 100 updates on one trajectory, one batch per epoch, a periodic checkpoint every 10 updates.
TINY_BC = (
    "--bc.total_updates=100 --bc.batch_size=64 --bc.encoder_scale=1 --checkpoint_every=10 --log_every=10 "
    "--wandb_mode=disabled"
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _actor(run_dir: Path) -> dict:
    state = torch.load(run_dir / "bc.pt", map_location="cpu", weights_only=False)
    assert state["done"], f"{run_dir}/bc.pt is not a finished stage"
    return state["objects"]["actor"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _actor(a), _actor(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between {a} and {b}"


def _one_trajectory(tmp_path: Path) -> Path:
    out = tmp_path / "one.hdf5"
    subprocess.run(
        [sys.executable, "-m", "scripts.sample_labeled_data", "--data_path=data/example-data.hdf5",
         f"--save_path={out}", "--chunk_size=100", "--num_trajectories=1", "--seed=0"],
        cwd=ROOT, env=ENV, check=True, capture_output=True,
    )  # fmt: skip
    return out


# ---------------------------------------------------------------- the signal hook of src/stage.py


def test_signal_checkpoints_then_the_same_command_resumes(tmp_path):
    data = _one_trajectory(tmp_path)

    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "train_bc", "--config_path=configs/example/bc.yaml", f"--bc.data_path={data}",
                f"--run_dir={run_dir}", "--bc.eval_episodes=0", *TINY_BC.split()]  # fmt: skip

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(command(stopped), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(lambda: (stopped / "bc.pt").exists(), 120, "the first periodic checkpoint")
    proc.send_signal(signal.SIGUSR1)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == PREEMPTED_EXIT_CODE, out
    step = torch.load(stopped / "bc.pt", weights_only=False)["step"]
    assert 10 <= step < 100 and f"bc: stopped after update {step} of 100 on signal SIGUSR1; run the same" in out
    assert not (stopped / "results.json").exists()

    again = subprocess.run(command(stopped), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming from update {step} of 100" in again.stdout + again.stderr
    whole = tmp_path / "whole"
    subprocess.run(command(whole), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=300)
    _assert_same_weights(stopped, whole)


# ---------------------------------------------------------------- a real single-node SLURM


SETUP_LINE = "sudo bash scripts/slurm/setup_local_slurm.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")


def _local_cluster_up() -> bool:
    """The single-node cluster of setup_local_slurm.sh is configured (its slurm.conf, never a real cluster's) and
    its partition answers."""
    try:
        if "written by scripts/slurm/setup_local_slurm.sh" not in SLURM_CONF.read_text():
            return False
        res = subprocess.run(
            ["sinfo", "-h", "-p", "debug", "-n", "localhost", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and res.stdout.strip().startswith(("idle", "mixed", "allocated", "completing"))


@pytest.fixture(scope="module")
def slurm():
    """The local test cluster: set up (or found running) by the repository's script under CI (CI=true) or when asked
    (LAOM_CI_SETUP=1, as root); elsewhere used when it is up, and skipped with the line that sets it up."""
    asked = os.environ.get("CI") == "true" or os.environ.get("LAOM_CI_SETUP") == "1"
    if not asked and not _local_cluster_up():
        pytest.skip(f"no local SLURM cluster; set one up with: {SETUP_LINE}")
    if asked and not _local_cluster_up():
        if os.geteuid() != 0:
            pytest.skip(f"not root: setup_local_slurm.sh installs slurm-wlm and starts daemons; run: {SETUP_LINE}")
        res = subprocess.run(["bash", "scripts/slurm/setup_local_slurm.sh"], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        if res.returncode == 3:
            pytest.skip(f"SLURM cannot be set up here: {res.stderr.strip()}")
        assert res.returncode == 0, f"setup_local_slurm.sh failed:\n{res.stdout}\n{res.stderr}"
    return {"LAUNCHER": "slurm", "SLURM_PARTITION": "debug", "SLURM_TIME": "30", "SLURM_GPUS_PER_RUN": "0",
            "SLURM_CPUS_PER_RUN": "1", "SLURM_WAIT": "1", "SLURM_POLL": "1"}  # fmt: skip


def _tiny(tmp_path: Path, name: str, **env) -> subprocess.Popen:
    full = {**ENV, "TINY_DIR": str(tmp_path / name), "METHODS": "bc", "BUDGETS": "1", "SEEDS": "0 1",
            "PARALLEL": "2", "EXTRA_ARGS": TINY_BC, **env}  # fmt: skip
    return subprocess.Popen(["bash", "scripts/sweeps/tiny.sh"], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out


def _job(run_dir: Path) -> str:
    return _wait_for(lambda: (run_dir / "slurm.jobid").exists() and (run_dir / "slurm.jobid").read_text().strip(),
                     120, f"the job of {run_dir}")  # fmt: skip


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_slurm_sweep_survives_preemption_and_a_lost_process_and_equals_local(tmp_path, slurm):
    local = _tiny(tmp_path, "local")
    code, out = _finish(local)
    assert code == 0, out

    proc = _tiny(tmp_path, "slurm", **slurm)
    runs = tmp_path / "slurm" / "runs" / "bc" / "cheetah-run" / "budget1"
    warned, lost = runs / "seed0", runs / "seed1"
    try:
        _preempt_and_resume(tmp_path, slurm, proc, warned, lost)
    finally:  # a failed check leaves no job of this test behind
        proc.kill()
        ids = [p.read_text().strip() for p in runs.glob("seed*/slurm.jobid")]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)
    for seed in ("seed0", "seed1"):
        _assert_same_weights(runs / seed, tmp_path / "local" / "runs" / "bc" / "cheetah-run" / "budget1" / seed)
    for table in ("scores.csv", "probes.csv", "novel_distractors.csv"):
        assert _rows(tmp_path / "slurm" / "results" / table) == _rows(tmp_path / "local" / "results" / table), table
    assert _rows(tmp_path / "local" / "results" / "scores.csv"), "the report has no scores"


def _preempt_and_resume(tmp_path: Path, slurm: dict, proc: subprocess.Popen, warned: Path, lost: Path) -> None:
    warned_job, lost_job = _job(warned), _job(lost)
    _wait_for(lambda: (warned / "bc.pt").exists() and (lost / "bc.pt").exists(), 300, "the periodic checkpoints")
    # seed 0: SLURM's warning signal (what --signal=B:USR1@N sends before the time limit), to the batch script.
    subprocess.run(["scancel", "--signal=USR1", "--batch", warned_job], check=True)
    # seed 1: its training process dies without a signal, as on a lost node.
    pids = subprocess.run(["scontrol", "listpids", lost_job], capture_output=True, text=True, check=True).stdout
    trainer = [int(p.split()[0]) for p in pids.splitlines()[1:] if "train_bc" in _argv(p.split()[0])]
    assert len(trainer) == 1, pids
    os.kill(trainer[0], signal.SIGKILL)
    code, out = _finish(proc)
    assert code == 1, out
    assert f"[done]   {warned} (job {warned_job})" in out, out
    assert f"[FAILED] {lost}: job {lost_job} ended (FAILED, exit 137:0) without results.json" in out, out
    log = (warned / f"slurm-{warned_job}.log").read_text()
    for line in (
        "got SIGUSR1",
        "on signal SIGUSR1",
        f"job {warned_job}: requeueing (exit 75)",
        "(start 2)",
        "resuming from update",
    ):
        assert line in log, log
    assert (
        "Restarts=1" in subprocess.run(["scontrol", "show", "job", warned_job], capture_output=True, text=True).stdout
    )
    assert "the run failed (exit 137)" in (lost / f"slurm-{lost_job}.log").read_text()

    # Submitted again: the finished run is skipped, the other resumes from its last periodic checkpoint.
    code, out = _finish(_tiny(tmp_path, "slurm", **slurm))
    assert code == 0, out
    assert f"[skip]   {warned}" in out and f"[done]   {lost}" in out, out
    again = lost / f"slurm-{(lost / 'slurm.jobid').read_text().strip()}.log"
    assert "resuming from update" in again.read_text()


def _argv(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def test_budget_run_waits_for_its_base_run_job(tmp_path, slurm):
    """LAOM: the budget-4 job depends (afterok) on the budget-2 job that trains the LAM it reuses, and starts after
    that run wrote its checkpoint; a second sweep skips both."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("cheetah-run", "cheetah-run-labeled-1000x2", "cheetah-run-labeled-1000x4"):
        (data / f"{name}.hdf5").touch()
    fake = tmp_path / "fake_python.sh"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do case $a in --run_dir=*) d=${a#--run_dir=};; --bc.checkpoint_path=*) b=${a#*=};; esac; done\n'
        '[[ -z "${b:-}" || -f "$b" ]] || { echo "no $b" >&2; exit 3; }\n'
        'sleep 2; touch "$d/latent_bc.pt"; echo "{}" > "$d/results.json"\n'
    )
    fake.chmod(0o755)
    env = {**ENV, **slurm, "DATA_DIR": str(data), "RUNS_DIR": str(tmp_path / "runs"), "ENVS": "cheetah-run",
           "BUDGETS": "2 4", "SEEDS": "0", "PYTHON": str(fake)}  # fmt: skip
    res = subprocess.run(["bash", "scripts/sweeps/laom.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    runs = tmp_path / "runs" / "laom" / "cheetah-run"
    base = (runs / "budget2" / "seed0" / "slurm.jobid").read_text().strip()
    assert "budget4/seed0: job" in res.stdout and f"(after job {base})" in res.stdout, res.stdout
    assert all((runs / b / "seed0" / "results.json").exists() for b in ("budget2", "budget4"))
    again = subprocess.run(["bash", "scripts/sweeps/laom.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert again.returncode == 0 and again.stdout.count("[skip]") == 2, again.stdout


def test_lost_node_requeues_the_job(tmp_path, slurm):
    """The node goes down under a running job (scontrol marks it DOWN, as when slurmd stops answering): SLURM
    requeues the job (--requeue), it runs again from the top once the node is back, and the sweep reports the run
    done."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cheetah-run-labeled-1000x2.hdf5").touch()
    fake = tmp_path / "fake_python.sh"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do case $a in --run_dir=*) d=${a#--run_dir=};; esac; done\n'
        'touch "$d/started"; sleep 10; echo "{}" > "$d/results.json"\n'
    )
    fake.chmod(0o755)
    env = {**ENV, **slurm, "DATA_DIR": str(data), "RUNS_DIR": str(tmp_path / "runs"), "ENVS": "cheetah-run",
           "BUDGETS": "2", "SEEDS": "0", "PYTHON": str(fake)}  # fmt: skip
    proc = subprocess.Popen(["bash", "scripts/sweeps/bc.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    run = tmp_path / "runs" / "bc" / "cheetah-run" / "budget2" / "seed0"
    try:
        _wait_for(lambda: (run / "started").exists(), 120, "the job to start")
        down = ["scontrol", "update", "nodename=localhost", "state=down", "reason=test-lost-node"]
        subprocess.run(down, check=True)
        out = proc.communicate(timeout=180)[0]
    finally:
        proc.kill()
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], capture_output=True)
    job = (run / "slurm.jobid").read_text().strip()
    assert proc.returncode == 0 and f"[done]   {run} (job {job})" in out, out
    log = (run / f"slurm-{job}.log").read_text()
    assert "DUE TO NODE FAILURE" in log and "(start 2)" in log and "the run finished" in log, log


def test_missing_slurm_settings_are_named(tmp_path):
    env = {**ENV, "LAUNCHER": "slurm", "RUNS_DIR": str(tmp_path), "DRY_RUN": "1"}
    env.pop("SLURM_PARTITION", None)
    res = subprocess.run(["bash", "scripts/sweeps/bc.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "SLURM_PARTITION" in res.stderr, res.stderr
    res = subprocess.run(["bash", "scripts/sweeps/bc.sh"], cwd=ROOT, env={**env, "SLURM_PARTITION": "gpu"},
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "SLURM_TIME" in res.stderr, res.stderr
    bad = {**env, "SLURM_PARTITION": "gpu", "SLURM_TIME": "1:00:00", "SLURM_GPUS_PER_RUN": "x"}
    res = subprocess.run(["bash", "scripts/sweeps/bc.sh"], cwd=ROOT, env=bad, capture_output=True, text=True)
    assert res.returncode == 2 and "SLURM_GPUS_PER_RUN=x" in res.stderr, res.stderr
    short = {**bad, "SLURM_GPUS_PER_RUN": "1", "SLURM_TIME": "5:00"}  # the warning would come at once
    res = subprocess.run(["bash", "scripts/sweeps/bc.sh"], cwd=ROOT, env=short, capture_output=True, text=True)
    assert res.returncode == 2 and "SLURM_TIME=5:00 is too short" in res.stderr, res.stderr
    res = subprocess.run(["bash", "scripts/sweeps/bc.sh"], cwd=ROOT, env={**env, "LAUNCHER": "k8s"},
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "LAUNCHER=k8s" in res.stderr, res.stderr


def test_dry_run_shows_the_sbatch_line(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("cheetah-run", "cheetah-run-labeled-1000x2", "cheetah-run-labeled-1000x4"):
        (tmp_path / "data" / f"{name}.hdf5").touch()
    env = {**ENV, "LAUNCHER": "slurm", "SLURM_PARTITION": "gpu", "SLURM_TIME": "12:00:00", "SLURM_ACCOUNT": "lab",
           "SLURM_GPU_TYPE": "h100", "SLURM_MEM": "64G", "SLURM_EXTRA_ARGS": "--qos=high", "DRY_RUN": "1",
           "DATA_DIR": str(tmp_path / "data"), "RUNS_DIR": str(tmp_path / "runs"), "ENVS": "cheetah-run",
           "BUDGETS": "2 4", "SEEDS": "0"}  # fmt: skip
    res = subprocess.run(["bash", "scripts/sweeps/lapo.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("[dry-run] sbatch")]
    assert len(lines) == 2
    for flag in ("--partition=gpu", "--time=12:00:00", "--account=lab", "--gres=gpu:h100:1", "--mem=64G",
                 "--qos=high", "--requeue", "--signal=B:USR1@300", "--cpus-per-task=8"):  # fmt: skip
        assert all(flag in line for line in lines), flag
    assert "--dependency" not in lines[0] and "--dependency=afterok:" in lines[1]
