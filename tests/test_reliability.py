"""A run directory belongs to one run, a result never describes another model, bad numbers stop at the door, and
the console says what happened. Real processes, real files, the real BC script on tiny settings."""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import train_bc
import train_lapo
from src.checkpoint import CheckpointError, restore_stage, save_checkpoint, save_stage
from src.data import DatasetError, load_dataset
from src.files import write_json
from src.run import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"


def bc_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        f"--run_dir={run_dir}",
        "--wandb_mode=disabled",
        "--device=cpu",
        f"--bc.data_path={EXAMPLE}",
        "--bc.max_trajectories=2",
        "--bc.total_updates=4",
        "--bc.batch_size=16",
        "--bc.encoder_scale=1",
        "--bc.eval_episodes=0",
        "--log_every=2",
        *extra,
    ]


def run_bc(args: list[str], monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", ["train_bc", *args])
    return train_bc.train()


# ---------------------------------------------------------------- a run directory belongs to one run


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from src.run import lock_run_dir; from pathlib import Path; "
         f"lock_run_dir(Path({str(run_dir)!r})); print('locked', flush=True); import time; time.sleep(60)"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"{run_dir} is in use by pid {holder.pid} "):
            run_bc(bc_args(run_dir), monkeypatch)
        assert not (run_dir / "config.json").exists() and not (run_dir / "bc.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    run_bc(bc_args(run_dir), monkeypatch)  # the holder is gone: the directory is free (a stale lock file is fine)
    assert (run_dir / "results.json").exists()


def test_a_finished_run_rerun_with_another_config_is_refused(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_bc(bc_args(run_dir), monkeypatch)
    before = (run_dir / "results.json").read_text()
    with pytest.raises(ValueError, match=r"another config \(bc.learning_rate: 0.0001 -> 0.5\)"):
        run_bc(bc_args(run_dir, "--bc.learning_rate=0.5"), monkeypatch)
    assert (run_dir / "results.json").read_text() == before
    assert json.loads((run_dir / "config.json").read_text())["bc"]["learning_rate"] == 0.0001
    run_bc(bc_args(run_dir, "--log_every=1", "--wandb_mode=offline"), monkeypatch)  # watching differently is fine


def test_a_finished_run_rerun_is_a_no_op_on_its_results(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_bc(bc_args(run_dir), monkeypatch)
    first = json.loads((run_dir / "results.json").read_text())
    out = capsys.readouterr().out
    assert f"results: {run_dir / 'results.json'}" in out
    run_bc(bc_args(run_dir), monkeypatch)
    second = json.loads((run_dir / "results.json").read_text())
    assert second["metrics"] == first["metrics"] and second["metrics"]["bc/trained_updates"] == 4
    assert second["stages"]["bc"]["skipped"]
    assert f"bc: finished earlier ({run_dir / 'bc.pt'}), skipped" in capsys.readouterr().out


def test_results_and_checkpoints_have_the_same_permissions_and_failed_saves_leave_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_bc(bc_args(run_dir), monkeypatch)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.suffix in (".json", ".pt", ".yaml")}
    assert len(set(modes.values())) == 1, modes
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'x.pt'}"):
        save_checkpoint(tmp_path / "x.pt", {"f": lambda: 0})  # not picklable: the save fails half-way
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---------------------------------------------------------------- bad numbers are stopped at the door


def test_non_finite_actions_are_named_when_the_dataset_loads(tmp_path):
    path = tmp_path / "nan.hdf5"
    with h5py.File(EXAMPLE, "r") as src, h5py.File(path, "w") as dst:
        dst.attrs.update(dict(src.attrs))
        for k in ("0", "1"):
            src.copy(src[k], dst, name=k)
        actions = dst["1"]["actions"][()]
        actions[7, 2] = np.nan
        dst["1"]["actions"][...] = actions
    with pytest.raises(DatasetError, match=r"nan.hdf5: group '1' 'actions'\[7, 2\] is nan; expected finite"):
        load_dataset(str(path), frame_stack=3, min_offset=1)


def test_a_nan_metric_is_an_error_and_json_stays_valid(tmp_path):
    with pytest.raises(FloatingPointError, match=r"metrics.lapo/final_action_probe_mse = nan"):
        write_json(tmp_path / "r.json", {"metrics": {"lapo/final_action_probe_mse": float("nan")}})
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.iterdir())
    write_json(tmp_path / "r.json", {"metrics": {"a": 1.5, "b": None}})
    assert json.loads((tmp_path / "r.json").read_text()) == {"metrics": {"a": 1.5, "b": None}}


@pytest.mark.parametrize(
    "module, arg, match",
    [
        (train_bc, "--bc.batch_size=0", r"--bc.batch_size=0: expected a positive integer"),
        (train_bc, "--bc.total_updates=0", r"--bc.total_updates=0: expected a positive integer"),
        (train_lapo, "--lapo.num_epochs=0", r"--lapo.num_epochs=0: expected a positive integer"),
        (train_bc, "--bc.eval_episodes=-1", r"--bc.eval_episodes=-1: expected 0"),
    ],
)
def test_zero_counts_are_clear_errors(module, arg, match, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module.__name__, f"--run_dir={tmp_path / 'run'}", "--wandb_mode=disabled", arg])
    with pytest.raises(ValueError, match=match):
        module.train()
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the console tells a person what happened


def test_resume_message_and_loss_on_the_progress_bar(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_bc(bc_args(run_dir, "--bc.total_updates=6", "--checkpoint_every=2"), monkeypatch)
    state = torch.load(run_dir / "bc.pt", weights_only=False)
    state.update(step=2, done=False)
    torch.save(state, run_dir / "bc.pt")
    (run_dir / "bc.metrics.json").unlink()
    capsys.readouterr()
    run_bc(bc_args(run_dir, "--bc.total_updates=6", "--checkpoint_every=2"), monkeypatch)
    captured = capsys.readouterr()
    assert f"bc: resuming from update 2 of 6 ({run_dir / 'bc.pt'})" in captured.out
    assert "loss=" in captured.err  # the progress bar


def test_ctrl_c_checkpoints_the_stage_and_says_where_it_resumes(tmp_path):
    """A real SIGINT to a real process (sent by the stage's test hook after update 7, before the first periodic
    checkpoint at 100): the update in progress completes, the stage is checkpointed after it, and the last line says
    where the same command resumes, under wandb offline (the default), whose sync hint would follow the line at exit."""
    run_dir = tmp_path / "run"
    args = [a for a in bc_args(run_dir, "--bc.total_updates=10", "--checkpoint_every=100") if "wandb" not in a]
    env = {**os.environ, "MUJOCO_GL": "egl", "LAOM_INTERRUPT_AT": "bc:7", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_QUIET", None)
    # A shell without job control starts background commands with SIGINT ignored, and a Python started with SIGINT
    # ignored never raises KeyboardInterrupt: the training process gets the default disposition back, as a terminal's.
    proc = subprocess.run(
        [sys.executable, "-m", "train_bc", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == (
        f"bc: stopped after update 7 of 10 on Ctrl-C; run the same command again to resume from there "
        f"({run_dir / 'bc.pt'})"
    )
    saved = torch.load(run_dir / "bc.pt", weights_only=False)
    assert saved["step"] == 7 and not saved["done"]
    assert list((run_dir / "wandb").glob("offline-run-*"))  # wandb did run


def test_the_last_screen_is_the_headline_and_the_results_path(tmp_path):
    """A real run with wandb offline and an evaluation (a DCS environment compiled): wandb's summary panel and
    MuJoCo's settotalmass deprecation do not follow the headline metrics and the results.json path."""
    run_dir = tmp_path / "run"
    args = [a for a in bc_args(run_dir, "--wandb_mode=offline") if a != "--wandb_mode=disabled"]
    args = [a for a in args if a != "--bc.eval_episodes=0"]
    args += ["--bc.eval_episodes=1", "--eval_num_envs=1", "--eval_max_episode_steps=5"]
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_QUIET", None)
    done = subprocess.run(
        [sys.executable, "-m", "train_bc", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    screen = done.stdout.decode()
    assert done.returncode == 0, screen[-3000:]
    assert (run_dir / "wandb").is_dir()  # wandb did run, offline
    assert "Run summary" not in screen and "Run history" not in screen and "settotalmass" not in screen
    last = [line for line in screen.replace("\r", "\n").splitlines() if line.strip()][-3:]
    assert last[0].startswith("bc/eval_returns_mean: ") and last[1].startswith("bc/normalized_score: ")
    assert last[2] == f"results: {run_dir / 'results.json'}"
    # The same command again skips every stage: the same last lines, and no new wandb run.
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    again = subprocess.run(
        [sys.executable, "-m", "train_bc", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    screen = again.stdout.decode()
    assert again.returncode == 0 and "bc: finished earlier" in screen, screen[-3000:]
    assert [line for line in screen.splitlines() if line.strip()][-3:] == last
    assert sorted((run_dir / "wandb").glob("offline-run-*")) == wandb_runs and len(wandb_runs) == 1


def test_only_the_known_harmless_mujoco_warning_is_dropped(caplog):
    from src.dcs import suite  # noqa: F401  (installs the filter on dm_control's absl logger)

    absl_logger = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING):
        absl_logger.warning("compiler attribute 'settotalmass' is deprecated and will be removed in a future release")
        absl_logger.warning("Nan, Inf or huge value in QACC at DOF 0. The simulation is unstable.")
    assert [r.getMessage()[:3] for r in caplog.records] == ["Nan"]


def files_of(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.name != ".lock"}


@pytest.mark.parametrize("whose", ["the run's own", "given with --bc.checkpoint_path"])
def test_an_unreadable_stage_checkpoint_is_one_line_naming_it_and_nothing_is_touched(
    whose, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    run_bc(bc_args(run_dir), monkeypatch)
    full = (run_dir / "bc.pt").read_bytes()
    if whose == "the run's own":
        cut, args = run_dir / "bc.pt", bc_args(run_dir)
    else:
        cut, args = (
            tmp_path / "copy" / "bc.pt",
            bc_args(tmp_path / "other", f"--bc.checkpoint_path={tmp_path / 'copy' / 'bc.pt'}"),
        )
        cut.parent.mkdir()
    cut.write_bytes(full[: len(full) // 3])  # a copy cut short
    before = files_of(run_dir)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["train_bc", *args])
    with pytest.raises(SystemExit) as e:
        main(train_bc.train)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: {cut}: ") and "bc" in line and "truncated or damaged" in line
    if whose == "the run's own":
        assert "remove it and run the same command: the bc stage is trained again" in line
    else:
        assert "--bc.checkpoint_path" in line and "leave --bc.checkpoint_path out to train it here" in line
    assert files_of(run_dir) == before  # the damaged file and everything beside it as they were


def test_a_checkpoint_of_another_architecture_names_the_config_fields_that_differ(tmp_path, monkeypatch):
    run_bc(bc_args(tmp_path / "small"), monkeypatch)
    other = bc_args(tmp_path / "wide", f"--bc.checkpoint_path={tmp_path / 'small' / 'bc.pt'}", "--bc.encoder_scale=2")
    with pytest.raises(CheckpointError, match=r"its 'actor' is of another architecture .*bc\.encoder_scale: 1 -> 2"):
        run_bc(other, monkeypatch)
    (tmp_path / "small" / "config.json").unlink()  # no config beside it: the first mismatching parameter is named
    with pytest.raises(CheckpointError, match=r"size mismatch for encoder\."):
        run_bc(other, monkeypatch)


def test_a_missing_or_unfinished_given_checkpoint_is_named(tmp_path):
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(
        CheckpointError, match=r"nope.pt: not found \(the bc checkpoint given with --bc\.checkpoint_path"
    ):
        restore_stage(tmp_path / "bc.pt", {"actor": lin}, str(tmp_path / "nope.pt"), stage="bc")
    save_stage(tmp_path / "other.pt", {"actor": lin}, step=3, done=False)
    with pytest.raises(CheckpointError, match="unfinished stage .update 3.; give a finished bc.pt"):
        restore_stage(tmp_path / "bc.pt", {"actor": lin}, str(tmp_path / "other.pt"), stage="bc")


def test_main_turns_keyboard_interrupt_into_exit_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        main(interrupted)
    assert e.value.code == 130 and "run the same command to resume" in capsys.readouterr().err


def test_a_checkpoint_save_on_a_full_disk_says_so_and_leaves_nothing(tmp_path):
    """A real 1 MiB filesystem (tmpfs in a private mount namespace): the save fails, the error names the file and
    says the disk is full, and no .tmp is left beside the previous checkpoint."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "small"
    mnt.mkdir()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import torch, os\n"
        "from src.checkpoint import CheckpointError, restore_stage, save_checkpoint, save_stage\n"
        f"path = {str(mnt / 'lam.pt')!r}\n"
        "save_checkpoint(path, {'w': torch.zeros(16)})\n"
        "try:\n"
        "    save_checkpoint(path, {'w': torch.zeros(1 << 20)})\n"
        "except OSError as e:\n"
        "    print('ERROR', e)\n"
        "print('FILES', sorted(os.listdir(os.path.dirname(path))), torch.load(path)['w'].shape[0])\n"
    )
    script = tmp_path / "save.py"
    script.write_text(code)
    shell = f"mount -t tmpfs -o size=1m tmpfs {mnt} && {sys.executable} {script}"
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0 and "mount" in done.stderr and "ERROR" not in done.stdout:
        pytest.skip(f"cannot mount a private tmpfs: {done.stderr.strip()[-200:]}")
    assert f"ERROR [Errno 28] no space left on device while writing {mnt / 'lam.pt'}" in done.stdout, done.stderr
    assert "FILES ['lam.pt'] 16" in done.stdout  # the previous checkpoint intact, no .tmp
