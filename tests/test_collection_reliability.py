"""Collection never loses data: one writer per output file, --overwrite replaces the old file only with a complete new
one, a killed collector leaves whole trajectories, and a full disk stops with a clear error and whole trajectories.

Real collector processes (`python -m scripts.data_collection.collect_data`), real HDF5 files, real DCS rendering on
short episodes; the full disk is a real, small tmpfs mounted in a private mount namespace (`unshare`).
"""

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from scripts.data_collection.collect_data import (
    LOCK_SUFFIX,
    PARTIAL_SUFFIX,
    RESERVE_MARGIN,
    Config,
    collect,
    complete_groups,
    episode_seed,
)

REPO = Path(__file__).resolve().parents[1]
CHEETAH = REPO.parent / "shared" / "experts" / "cheetah-run-expert"
STEPS = 10  # steps per trajectory
NUM_TRAJECTORIES = 3
SEED = 3
TRAJ_BYTES = STEPS * (64 * 64 * 3 + (17 + 6 + 1) * 4)  # obs + states + actions + rewards of one cheetah trajectory
TIMEOUT = 300  # seconds; generous for a shared 2-core machine


@pytest.fixture(scope="module")
def expert_path() -> Path:
    if not CHEETAH.exists():
        pytest.skip("released cheetah-run expert not available")
    return CHEETAH


def make_config(save_path: Path, **overrides) -> Config:
    config = Config(
        checkpoint_path=str(CHEETAH),
        dcs_backgrounds_path="builtin",
        save_path=str(save_path),
        num_trajectories=NUM_TRAJECTORIES,
        max_episode_steps=STEPS,
        seed=SEED,
    )
    return replace(config, **overrides)


def command(save_path: Path, **overrides) -> list[str]:
    """The command line of `make_config(save_path, **overrides)`."""
    config = make_config(save_path, **overrides)
    names = ("checkpoint_path", "dcs_backgrounds_path", "save_path", "num_trajectories", "max_episode_steps", "seed")
    args = [f"--{name}={getattr(config, name)}" for name in names]
    if config.overwrite:
        args.append("--overwrite=True")
    return [sys.executable, "-m", "scripts.data_collection.collect_data", *args]


def collector_env() -> dict:
    return dict(os.environ, MUJOCO_GL="egl")


@pytest.fixture(scope="module")
def reference(expert_path, tmp_path_factory) -> Path:
    """What an undisturbed run of the command writes."""
    return collect(make_config(tmp_path_factory.mktemp("reference") / "reference.hdf5"))


@contextlib.contextmanager
def started(cmd: list[str], log: Path):
    """A collector process, its stdout and stderr going to `log`; killed if still running when the block ends."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=collector_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=collector_env(), capture_output=True, text=True, timeout=TIMEOUT)


def complete_in(path: Path) -> int:
    """Complete trajectories in a file that another process may be writing (-1 while it cannot be read)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return len(complete_groups(f))
    except Exception:
        return -1


def wait_until(condition, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the collector exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def groups_of(path: Path) -> dict:
    """{group: ({dataset: array}, attrs)} of a file."""
    out = {}
    with h5py.File(path, "r") as f:
        for k, g in f.items():  # datasets of sub-groups too (distractors/camera, ...)
            arrays = {}
            g.visititems(lambda n, d, a=arrays: a.update({n: d[()]}) if isinstance(d, h5py.Dataset) else None)
            out[k] = (arrays, dict(g.attrs))
    return out


def assert_same_groups(path: Path, reference: Path, names: list[str]) -> None:
    """`path` holds exactly the groups `names`, each equal to the reference's."""
    groups, expected = groups_of(path), groups_of(reference)
    assert list(groups) == names
    for name in names:
        data, attrs = groups[name]
        assert attrs == expected[name][1], name
        assert data.keys() == expected[name][0].keys()
        for key in data:
            np.testing.assert_array_equal(data[key], expected[name][0][key], err_msg=f"{name}/{key}")


def assert_same_file(path: Path, reference: Path) -> None:
    with h5py.File(path, "r") as f, h5py.File(reference, "r") as g:
        assert f.attrs.keys() == g.attrs.keys()
        for key in f.attrs:
            np.testing.assert_equal(f.attrs[key], g.attrs[key], err_msg=key)
    assert_same_groups(path, reference, [str(i) for i in range(NUM_TRAJECTORIES)])


def sidecars(path: Path) -> list[Path]:
    return [
        p for p in (path.with_name(path.name + LOCK_SUFFIX), path.with_name(path.name + PARTIAL_SUFFIX)) if p.exists()
    ]


# ------------------------------------------------------------------ two collectors on one file


def test_second_collector_is_refused_while_the_first_writes(reference, tmp_path):
    path = tmp_path / "shared.hdf5"
    log = tmp_path / "first.log"
    with started(command(path), log) as first:
        wait_until(lambda: complete_in(path) >= 1, first, "its first trajectory", log)
        # Keep the first collector mid-run, its file open and trajectories still to write, while others try.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            for overwrite in (False, True):
                second = run(command(path, overwrite=overwrite))
                assert second.returncode == 1, second.stdout + second.stderr
                message = second.stderr.strip().splitlines()[-1]
                assert message.startswith(f"error: Output {path} is being written by another collector"), message
                assert f"pid {first.pid} " in message and "--overwrite" not in message, message
                assert "Traceback" not in second.stderr
            assert complete_in(path) >= 1 and first.poll() is None
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    assert f"Saved {path}: {NUM_TRAJECTORIES} trajectories" in log.read_text()
    assert_same_file(path, reference)  # complete, readable, and what an undisturbed run writes
    assert sidecars(path) == []


# ------------------------------------------------------------------ killed collectors


def test_kill_during_overwrite_keeps_the_old_file(reference, tmp_path):
    path = tmp_path / "data.hdf5"
    shutil.copy(reference, path)
    before = path.read_bytes()
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    log = tmp_path / "overwrite.log"
    with started(command(path, overwrite=True, seed=SEED + 1), log) as proc:
        wait_until(lambda: complete_in(partial) >= 1, proc, "the new file's first trajectory", log)
        proc.kill()
    assert path.read_bytes() == before
    assert_same_file(path, reference)

    # What the kill left (the partial new file, a stale lock file) blocks nothing: the same command replaces the file.
    collect(make_config(path, overwrite=True, seed=SEED + 1))
    assert sidecars(path) == []
    with h5py.File(path, "r") as f:
        assert int(f.attrs["seed"]) == SEED + 1 and len(complete_groups(f)) == NUM_TRAJECTORIES == len(f)
        assert [int(f[k].attrs["seed"]) for k in f] == [episode_seed(SEED + 1, i) for i in range(NUM_TRAJECTORIES)]


def test_kill_during_a_run_leaves_whole_trajectories_and_the_same_command_resumes(reference, tmp_path):
    path = tmp_path / "data.hdf5"
    log = tmp_path / "killed.log"
    with started(command(path), log) as proc:
        wait_until(lambda: complete_in(path) >= 1, proc, "its first trajectory", log)
        proc.kill()
    with h5py.File(path, "r") as f:  # HDF5's own file locking on: the killed writer holds nothing any more
        kept = complete_groups(f)
        names = list(f)
    assert 1 <= len(kept) <= NUM_TRAJECTORIES
    assert set(names) - set(kept) <= {str(len(kept))}  # at most the group being written, never marked complete
    expected = groups_of(reference)
    for name, (data, attrs) in groups_of(path).items():
        if name in kept:  # each whole trajectory is the one an undisturbed run writes
            assert attrs == expected[name][1], name
            for key in data:
                np.testing.assert_array_equal(data[key], expected[name][0][key], err_msg=f"{name}/{key}")

    again = run(command(path))  # the same command, after a kill: the stale lock file does not block it
    assert again.returncode == 0, again.stdout + again.stderr
    if len(kept) < NUM_TRAJECTORIES:
        assert f"Resuming {path}: {len(kept)} complete trajectories found." in again.stdout
    assert_same_file(path, reference)
    assert sidecars(path) == []


# ------------------------------------------------------------------ disk full


def small_filesystem_unavailable(tmp_path: Path) -> str | None:
    """Why a private tmpfs cannot be mounted here (None when it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    mnt = tmp_path / "probe"
    mnt.mkdir()
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mnt}"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot mount a private tmpfs (user and mount namespaces): {probe.stderr.strip()}"
    return None


def in_small_filesystem(tmp_path: Path, size: int, script: str) -> Path:
    """Run the shell `script` with a `size`-byte tmpfs mounted at $SMALL (a private mount namespace: gone with the
    script) and an ordinary folder $OUT (returned) to copy results into."""
    reason = small_filesystem_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    small, out = tmp_path / "small", tmp_path / "out"
    small.mkdir()
    out.mkdir()
    shell = (
        f"set -u; SMALL={small}; OUT={out}; mount -t tmpfs -o size={size // 1024}k tmpfs $SMALL; cd {REPO}; {script}"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell],
        env=collector_env(),
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def last_line(path: Path) -> str:
    return path.read_text().strip().splitlines()[-1]


def test_disk_full_keeps_whole_trajectories_and_the_same_command_resumes(reference, tmp_path):
    # Room for two trajectories and the reservation of a third (HDF5 metadata and the lock file: under 24 KiB), but
    # not for three trajectories: without a reservation the third one would hit the full disk halfway.
    room_for_two, three = 2 * TRAJ_BYTES + RESERVE_MARGIN + 24 * 1024, 3 * TRAJ_BYTES
    assert room_for_two < three
    size = (room_for_two + three) // 2
    target = tmp_path / "small" / "data.hdf5"
    cmd = shlex.join(command(target))
    script = (
        f"{cmd} >$OUT/full.out 2>$OUT/full.err; echo $? >$OUT/full.rc; cp $SMALL/data.hdf5 $OUT/full.hdf5; "
        "ls -A $SMALL >$OUT/full.ls; "
        f"mount -o remount,size=4m $SMALL; {cmd} >$OUT/resumed.out 2>$OUT/resumed.err; echo $? >$OUT/resumed.rc; "
        "cp $SMALL/data.hdf5 $OUT/resumed.hdf5; ls -A $SMALL >$OUT/resumed.ls"
    )
    out = in_small_filesystem(tmp_path, size, script)

    assert (out / "full.rc").read_text().strip() == "1", (out / "full.err").read_text()[-3000:]
    assert last_line(out / "full.err") == (
        f"error: no space left on device while writing {target} (trajectory 2); the file keeps its 2 whole "
        "trajectories; free space and run the same command to resume"
    )
    assert "Traceback" not in (out / "full.err").read_text()
    assert (out / "full.ls").read_text().split() == ["data.hdf5"]
    assert_same_groups(out / "full.hdf5", reference, ["0", "1"])

    # After space is freed, the same command resumes and gives the file an undisturbed run writes.
    assert (out / "resumed.rc").read_text().strip() == "0", (out / "resumed.err").read_text()[-3000:]
    assert f"Resuming {target}: 2 complete trajectories found." in (out / "resumed.out").read_text()
    assert_same_file(out / "resumed.hdf5", reference)
    assert (out / "resumed.ls").read_text().split() == ["data.hdf5"]


def test_disk_full_during_overwrite_keeps_the_old_file(reference, tmp_path):
    # Room for the old file and about one trajectory of the new one next to it.
    size = reference.stat().st_size + RESERVE_MARGIN + int(1.5 * TRAJ_BYTES) + 16 * 1024
    target = tmp_path / "small" / "data.hdf5"
    cmd = shlex.join(command(target, overwrite=True, seed=SEED + 1))
    script = (
        f"cp {reference} $SMALL/data.hdf5; {cmd} >$OUT/run.out 2>$OUT/run.err; echo $? >$OUT/run.rc; "
        "cp $SMALL/data.hdf5 $OUT/data.hdf5; ls -A $SMALL >$OUT/run.ls"
    )
    out = in_small_filesystem(tmp_path, size, script)

    assert (out / "run.rc").read_text().strip() == "1", (out / "run.err").read_text()[-3000:]
    message = last_line(out / "run.err")
    assert message.startswith(f"error: no space left on device while writing {target}{PARTIAL_SUFFIX}"), message
    assert f"{target} is unchanged and the incomplete new file was removed" in message
    assert (out / "run.ls").read_text().split() == ["data.hdf5"]
    assert (out / "data.hdf5").read_bytes() == reference.read_bytes()


def test_disk_full_inside_a_group_without_reservation_keeps_whole_trajectories(reference, tmp_path):
    """Where space cannot be reserved ahead (copy-on-write filesystems), HDF5 itself meets the full disk halfway
    through a group: the collector deletes that group. Here the reservation is switched off to reach that path."""
    size = int(2.5 * TRAJ_BYTES) + 16 * 1024
    target = tmp_path / "small" / "data.hdf5"
    args = command(target)[3:]
    code = (
        "import sys; from scripts.data_collection import collect_data as c; "
        "c.reserve_space = lambda *args: None; sys.argv[1:] = " + repr(args) + "; c.main(c.Config)"
    )
    script = (
        f"{shlex.join([sys.executable, '-c', code])} >$OUT/run.out 2>$OUT/run.err; echo $? >$OUT/run.rc; "
        "cp $SMALL/data.hdf5 $OUT/data.hdf5"
    )
    out = in_small_filesystem(tmp_path, size, script)

    assert (out / "run.rc").read_text().strip() == "1", (out / "run.err").read_text()[-3000:]
    assert last_line(out / "run.err") == (
        f"error: no space left on device while writing {target} (trajectory 2); the file keeps its 2 whole "
        "trajectories; free space and run the same command to resume"
    )
    assert_same_groups(out / "data.hdf5", reference, ["0", "1"])
