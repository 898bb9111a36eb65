"""torchrun: every method script on 2 CPU processes (gloo) end to end; 2 ranks take the optimizer step of 1 process
on the same global batch; each rank holds only its shard; bad input (more ranks than trajectories, a global batch
that does not divide) is refused with the numbers; a run that loses a rank resumes, on another number of ranks."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train_bc

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"  # 14 trajectories of 100 steps
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PYTHONPATH": str(ROOT)}
COMMON = ["--device=cpu", "--wandb_mode=disabled", "--log_every=2", "--eval_max_episode_steps=10", "--eval_num_envs=1"]
LAM = ["--lapo.max_trajectories=4", "--bc.max_trajectories=4", "--bc.eval_episodes=0"]
DECODER = ["--decoder.max_trajectories=2", "--decoder.total_updates=4", "--decoder.eval_episodes=2"]
SCRIPTS = {  # script: (example config, tiny overrides, metrics its results.json must hold)
    "train_bc": ("bc", ["--bc.total_updates=6", "--bc.eval_episodes=2"], ["bc/eval_returns_mean"]),
    "train_idm": (
        "idm",
        ["--idm.max_trajectories=4", "--idm.batch_size=64", "--idm.total_updates=6"]
        + ["--bc.max_trajectories=4", "--bc.eval_episodes=2"],
        ["idm/eval_action_mse", "bc/eval_returns_mean"],
    ),
    "train_lapo": ("lapo", LAM + DECODER, ["lapo/final_action_probe_mse", "decoder/eval_returns_mean"]),
    "train_laom": (
        "laom",
        LAM + DECODER + ["--lapo.eval_data_path=null"],
        ["lapo/final_action_probe_mse", "lapo/final_state_probe_mse", "decoder/eval_returns_mean"],
    ),
    "train_laom_labels": (
        "laom-labels",
        LAM + DECODER + ["--lapo.eval_data_path=null"],
        ["lapo/final_action_probe_mse", "decoder/eval_returns_mean"],
    ),
    "train_lapo_mask": ("lapo-mask", LAM + DECODER, ["lapo/final_action_probe_mse", "decoder/eval_returns_mean"]),
}
pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="needs data/example-data.hdf5")


def torchrun(args: list[str], nproc: int = 2, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


def watched(args: list[str], threads_dir: Path) -> list[str]:
    """torchrun arguments `-m <module> ...` run through tests/dist_worker.py, which records the threads each rank
    still has when its interpreter exits."""
    assert args[0] == "-m"
    threads_dir.mkdir(exist_ok=True)
    return ["tests/dist_worker.py", "script", str(threads_dir), *args[1:]]


def gloo_threads_at_exit(threads_dir: Path, ranks: tuple[int, ...] = (0, 1)) -> dict[int, list[str]]:
    """rank -> the gloo threads it still ran at exit: none when the run left its process group (src/run.py, main).
    Left running, they are torn down with the interpreter, which was seen to abort a rank after a finished run."""
    names = {r: json.loads((threads_dir / f"threads-rank{r}.json").read_text()) for r in ranks}
    return {r: [n for n in ns if "gloo" in n] for r, ns in names.items() if any("gloo" in n for n in ns)}


def script_args(script: str, run_dir: Path) -> list[str]:
    config, overrides, _ = SCRIPTS[script]
    return ["-m", script, f"--config_path=configs/example/{config}.yaml", f"--run_dir={run_dir}", *COMMON, *overrides]


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_every_script_runs_under_torchrun(script, tmp_path):
    proc = torchrun(watched(script_args(script, tmp_path), tmp_path / "threads"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list((tmp_path / "threads").glob("threads-rank*.json"))) == 2, proc.stderr[-4000:]
    assert not gloo_threads_at_exit(tmp_path / "threads")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["world_size"] == 2
    assert set(res) == {"config", "world_size", "stages", "metrics", "total_seconds"}
    for key in SCRIPTS[script][2]:
        assert res["metrics"][key] is not None, key
    for name, stage in res["stages"].items():
        assert stage[f"{name}/trained_updates"] == stage[f"{name}/updates"] > 0
    last = list(res["stages"])[-1]  # evaluated: 2 episodes, one per rank, gathered in episode order on rank 0
    assert len(res["stages"][last][f"{last}/eval_returns"]) == 2
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "results.partial.json").exists()


def test_plain_run_records_world_size_one(tmp_path, monkeypatch):
    args = [f"--run_dir={tmp_path}", f"--bc.data_path={EXAMPLE}", "--bc.total_updates=2", "--bc.encoder_scale=1"]
    args += ["--bc.batch_size=8", "--bc.eval_episodes=0", "--wandb_mode=disabled", "--device=cpu"]
    monkeypatch.setattr(sys, "argv", ["train_bc", *args])
    assert train_bc.train()["world_size"] == 1
    assert json.loads((tmp_path / "results.json").read_text())["world_size"] == 1


def test_two_ranks_take_the_step_of_one_process(tmp_path):
    """The same global batch (28 samples: 14 on each rank), 4 LAOM updates with Adam, a schedule and the EMA
    target: rank 0 and rank 1 hold identical networks, equal to those of one process to float tolerance."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    worker = ["tests/dist_worker.py", "step", str(EXAMPLE)]
    plain = subprocess.run([sys.executable, *worker, str(one)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-4000:]
    proc = torchrun([*worker, str(two)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    single, r0, r1 = (torch.load(p, weights_only=False) for p in (one / "rank0.pt", two / "rank0.pt", two / "rank1.pt"))
    assert (single["local_batch"], r0["local_batch"], r1["local_batch"]) == (28, 14, 14)
    moved = max((single["state"]["lam"][k] - v).abs().max().item() for k, v in single["init"]["lam"].items())
    assert moved > 1e-3  # the updates changed the networks well beyond the tolerance below
    for net in ("lam", "probes", "target_encoder"):
        for k, v in single["state"][net].items():
            assert torch.equal(r0["state"][net][k], r1["state"][net][k]), f"{net}.{k}: the ranks differ"
            torch.testing.assert_close(r0["state"][net][k], v, rtol=1e-4, atol=1e-4, msg=f"{net}.{k}")


def test_unequal_shares_give_the_gradient_of_the_union(tmp_path):
    """A stage that keeps an epoch's last partial batch can give the ranks unequal shares of an update: each rank's
    gradient weighted by its samples is the gradient of the mean loss over the union (an equal-weight mean is not)."""
    from tests.dist_worker import unequal_shares

    proc = torchrun(["tests/dist_worker.py", "weighted", str(EXAMPLE), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    x, y, net = unequal_shares()
    union = torch.autograd.grad(torch.nn.functional.mse_loss(net(x), y), list(net.parameters()))
    parts = [torch.autograd.grad(torch.nn.functional.mse_loss(net(x[s]), y[s]), list(net.parameters()))
             for s in (slice(0, 4), slice(4, 5))]  # fmt: skip
    for g0, g1, want, a, b in zip(r0, r1, union, *parts, strict=True):
        assert torch.equal(g0, g1)
        torch.testing.assert_close(g0, want, rtol=1e-6, atol=1e-7)
        assert not torch.allclose((a + b) / 2, want, atol=1e-3)  # the equal-weight mean is another gradient


def test_each_rank_holds_only_its_shard(tmp_path):
    proc = torchrun(["tests/dist_worker.py", "shard", str(EXAMPLE), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["keys"] == [str(i) for i in range(0, 14, 2)] and r1["keys"] == [str(i) for i in range(1, 14, 2)]
    assert r0["num_frames"] + r1["num_frames"] == 1400 and r0["num_frames"] == r1["num_frames"] == 700
    assert r0["frames_bytes"] == 700 * 3 * 64 * 64


def test_bad_input_is_refused_with_the_numbers(tmp_path):
    base = ["-m", "train_bc", f"--bc.data_path={EXAMPLE}", "--bc.encoder_scale=1", "--bc.eval_episodes=0", *COMMON]
    proc = torchrun([*base, f"--run_dir={tmp_path / 'a'}", "--bc.max_trajectories=1", "--bc.batch_size=8"])
    assert proc.returncode != 0
    assert "1 trajectories for 2 ranks" in proc.stderr and "example-data.hdf5" in proc.stderr
    proc = torchrun([*base, f"--run_dir={tmp_path / 'b'}", "--bc.batch_size=33"])
    assert proc.returncode != 0
    assert "--bc.batch_size = 33" in proc.stderr and "use 32 or 34" in proc.stderr


def _worker_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the workers a torchrun process started."""
    out = {}
    for pid in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [e for e in env if e.startswith(b"RANK=")]
        if rank:
            out[int(rank[0][5:])] = int(pid)
    return out


def test_lost_rank_fails_and_the_run_resumes_on_another_number_of_ranks(tmp_path):
    args = ["-m", "train_bc", f"--bc.data_path={EXAMPLE}", "--bc.encoder_scale=1", "--bc.batch_size=8"]
    args += ["--bc.total_updates=60", "--checkpoint_every=5", "--bc.eval_episodes=0", f"--run_dir={tmp_path}", *COMMON]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "bc.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    os.kill(_worker_pids(proc.pid)[1], signal.SIGKILL)  # rank 1 dies
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "rank 0 of 2: " in err and "run the same command (with any number of ranks) to resume" in err
    assert not (tmp_path / "results.json").exists()
    saved = torch.load(tmp_path / "bc.pt", weights_only=False)
    assert not saved["done"] and len(saved["rng"]) == 2  # every rank's RNG state
    # The same command without torchrun (1 process) resumes from the checkpoint.
    plain = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-4000:]
    assert f"resuming from update {saved['step']} of 60" in plain.stderr + plain.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["world_size"] == 1 and res["stages"]["bc"]["bc/trained_updates"] == 60  # by this run


def test_a_preemption_signal_to_one_rank_stops_every_rank_after_the_same_update(tmp_path):
    """SLURM's warning (SIGUSR1) reaching one rank: the ranks agree at the logging cadence, every rank checkpoints
    after the same update and exits 75 (no rank left waiting in a collective), leaving its process group, and the
    same command resumes."""
    run_dir, stopped, resumed = tmp_path / "run", tmp_path / "stopped", tmp_path / "resumed"
    args = ["-m", "train_bc", f"--bc.data_path={EXAMPLE}", "--bc.encoder_scale=1", "--bc.batch_size=8"]
    args += ["--bc.total_updates=400", "--checkpoint_every=5", "--bc.eval_episodes=0", f"--run_dir={run_dir}"]
    args += COMMON  # --log_every=2: the ranks agree every 2 updates
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *watched(args, stopped)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run_dir / "bc.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    os.kill(_worker_pids(proc.pid)[1], signal.SIGUSR1)  # only rank 1 is warned
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and re.search(r"exitcode\s*:\s*75", err), err[-3000:]  # PREEMPTED_EXIT_CODE
    # The rank that exits first has torchrun end the other with SIGTERM, which may cut its record short: the ranks
    # that recorded their exit.
    recorded = tuple(int(p.stem.removeprefix("threads-rank")) for p in stopped.glob("threads-rank*.json"))
    assert recorded and not gloo_threads_at_exit(stopped, recorded)
    saved = torch.load(run_dir / "bc.pt", weights_only=False)
    assert not saved["done"] and 0 < saved["step"] < 400 and saved["step"] % 2 == 0  # at the logging cadence
    assert f"stopped after update {saved['step']} of 400 on another rank's signal" in out + err  # rank 0 speaks
    assert not (run_dir / "results.json").exists()
    again = torchrun(watched(args, resumed))
    assert again.returncode == 0, again.stderr[-4000:]
    assert not gloo_threads_at_exit(resumed)
    assert f"resuming from update {saved['step']} of 400" in again.stdout + again.stderr
