"""Every mistake at the command line is one line on stderr naming the value and what to do, without a traceback;
a bug in the code keeps its traceback (src/errors.py). Each case is a real command-line run of train_laom on the
example config and data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.data import check_batch_size
from src.device import check_device
from src.errors import ConfigError, user_message
from tests.fake_cuda import FakeCuda

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/example/laom.yaml"

# Runs train_laom as `python -m train_laom` would, after `prelude` (the machine's CUDA devices, tests/fake_cuda.py).
RUNNER = (
    "import runpy, sys; {prelude}; sys.argv[0] = 'train_laom.py'; runpy.run_module('train_laom', run_name='__main__')"
)
TWO_GPUS = "from tests.fake_cuda import FakeCuda; FakeCuda(count=2)"
CPU_BUILD = "import torch; torch.version.cuda = None"  # the build metadata of a CPU build (this machine's already)


def run_laom(tmp_path: Path, *args: str, prelude: str = "pass", env: dict | None = None):
    command = [sys.executable, "-c", RUNNER.format(prelude=prelude), f"--config_path={CONFIG}"]
    command += [f"--run_dir={tmp_path / 'run'}", "--wandb_mode=disabled", "--lapo.ridge_probe_samples=0", *args]
    environment = {k: v for k, v in os.environ.items() if k != "LAOM_TRACEBACK"}
    env = {**environment, "MUJOCO_GL": "egl", **(env or {})}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stderr


def text_file(tmp_path: Path) -> str:
    path = tmp_path / "notes.hdf5"
    path.write_text("not a dataset\n")
    return str(path)


def config_with_typo(tmp_path: Path) -> str:
    path = tmp_path / "typo.yaml"
    path.write_text((ROOT / CONFIG).read_text().replace("lapo:\n", "lapo:\n  learnig_rate: 0.1\n", 1))
    return str(path)


# Runs on a read-only file system: this machine has none to write to, so the run directory's mkdir fails as there.
READ_ONLY = (
    "import errno, os; mkdir = os.mkdir; os.mkdir = lambda p, *a, **k: mkdir(p, *a, **k) if 'read-only' not in "
    "str(p) else (_ for _ in ()).throw(OSError(errno.EROFS, os.strerror(errno.EROFS), str(p)))"
)

CASES = {
    "missing dataset": (
        lambda tmp: ["--lapo.data_path=/nonexistent.hdf5"],
        "pass",
        ["--lapo.data_path=/nonexistent.hdf5: no such file", "scripts/data/download_data.py"],
    ),
    "text file as dataset": (
        lambda tmp: [f"--lapo.data_path={text_file(tmp)}"],
        "pass",
        ["notes.hdf5: not an HDF5 file; expected an HDF5 dataset"],
    ),
    "cuda on a CPU build": (
        lambda tmp: ["--device=cuda"],
        CPU_BUILD,
        ["--device=cuda: the installed torch", "CPU build", "pip install --force-reinstall torch==", "--device=cpu"],
    ),
    "cuda index beyond the devices": (
        lambda tmp: ["--device=cuda:2"],
        TWO_GPUS,
        ["--device=cuda:2: 2 CUDA devices are visible (cuda:0 .. cuda:1)", "--device=cpu"],
    ),
    "missing config file": (
        lambda tmp: ["--config_path=/nonexistent.yaml"],
        "pass",
        ["--config_path=/nonexistent.yaml: no such file; expected a YAML config"],
    ),
    "learning rate not a number": (
        lambda tmp: ["--lapo.learning_rate=abc"],
        "pass",
        ["--lapo.learning_rate=abc: expected a value of type float"],
    ),
    "fractional epoch count": (  # pyrallis alone would train 1 epoch
        lambda tmp: ["--lapo.num_epochs=1.5"],
        "pass",
        ["--lapo.num_epochs=1.5: expected a value of type int", "expected an integer, got 1.5"],
    ),
    "negative batch size": (
        lambda tmp: ["--lapo.batch_size=-1"],
        "pass",
        ["--lapo.batch_size=-1: expected a positive integer"],
    ),
    "batch larger than the data": (
        lambda tmp: ["--lapo.batch_size=100000"],
        "pass",
        ["--lapo.batch_size=100000: larger than the 1260 samples", "data/example-data.hdf5", "use at most 1260"],
    ),
    "unknown field": (
        lambda tmp: ["--lapo.learnig_rate=0.1"],
        "pass",
        ["unrecognized arguments: --lapo.learnig_rate=0.1", "--help"],
    ),
    "unknown field in a section of the config file": (  # named first, not after the section's whole content
        lambda tmp: [f"--config_path={config_with_typo(tmp)}"],
        "pass",
        ["typo.yaml: lapo.learnig_rate: not a field of the lapo section (--help lists them)"],
    ),
    "a directory as config": (
        lambda tmp: ["--config_path=configs/example"],
        "pass",
        ["--config_path=configs/example: a directory; expected a YAML config file, e.g. configs/example/bc.yaml"],
    ),
    "negative learning rate": (  # torch's ValueError only once the data had loaded
        lambda tmp: ["--lapo.learning_rate=-1"],
        "pass",
        ["--lapo.learning_rate=-1.0: expected a number >= 0"],
    ),
    "negative seed": (  # numpy's ValueError
        lambda tmp: ["--seed=-1"],
        "pass",
        ["--seed=-1: expected a seed from 0 to 2147483647"],
    ),
    "more trajectories than the file holds": (  # trained on the 14 and recorded 100
        lambda tmp: ["--decoder.max_trajectories=100"],
        "pass",
        ["--decoder.max_trajectories=100: data/example-data.hdf5 holds 14 trajectories; use at most 14"],
    ),
    "run directory naming a file": (
        lambda tmp: [f"--run_dir={text_file(tmp)}"],
        "pass",
        ["notes.hdf5: names an existing file, not a directory; give another --run_dir"],
    ),
    "run directory under a file": (
        lambda tmp: [f"--run_dir={text_file(tmp)}/run"],
        "pass",
        ["/run: ", "notes.hdf5 is a file, not a directory; give another --run_dir"],
    ),
    "run directory on a read-only file system": (
        lambda tmp: [f"--run_dir={tmp}/read-only/run"],
        READ_ONLY,
        ["read-only/run: cannot write there (Read-only file system); give a --run_dir on a writable disk"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_naming_the_value(case, tmp_path):
    args, prelude, expected = CASES[case]
    args = args(tmp_path)
    inputs = set(tmp_path.rglob("*"))
    code, err = run_laom(tmp_path, *args, prelude=prelude)
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for part in expected:
        assert part in lines[0], lines[0]
    written = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - inputs)
    # nothing written (a batch too large for the data is found once the data is read, the run's directory taken)
    assert written in ([], ["run", "run/.lock", "run/config.json", "run/config.yaml"]), written
    if case != "batch larger than the data":
        assert written == [], written


def test_the_traceback_of_a_user_error_is_there_when_asked(tmp_path):
    code, err = run_laom(tmp_path, "--lapo.batch_size=-1", env={"LAOM_TRACEBACK": "1"})
    assert code == 1 and "Traceback (most recent call last)" in err
    assert "ConfigError: --lapo.batch_size=-1: expected a positive integer" in err


def test_a_bug_keeps_its_full_traceback(tmp_path):
    """An internal error (here: the encoder broken on purpose) is not shortened."""
    bug = "import src.nn; src.nn.ResNetEncoder.forward = lambda self, x: 1 / 0"
    code, err = run_laom(tmp_path, "--lapo.num_epochs=1", prelude=bug)
    assert code == 1 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert "error: " not in err.splitlines()[-1]


def test_a_cuda_build_without_a_visible_gpu_says_so(monkeypatch):
    FakeCuda(count=0, patch=monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match=r"--device=cuda: torch .* sees no CUDA device \(CUDA_VISIBLE_DEVICES=''\)"):
        check_device("cuda")
    FakeCuda(count=1, patch=monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # torch counts no device where CUDA_VISIBLE_DEVICES is empty
    assert check_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"--device=cuda:1: 1 CUDA device is visible \(cuda:0\)"):
        check_device("cuda:1")
    with pytest.raises(ConfigError, match="--device=gpu: not a device"):
        check_device("gpu")


def test_a_labeled_batch_drawn_with_replacement_only_warns(capsys):
    check_batch_size("--lapo.labeled_batch_size", 300, 200, "labeled.hdf5", with_replacement=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: --lapo.labeled_batch_size=300 is larger than the 200 samples of labeled.hdf5: each batch "
        "repeats samples"
    ]
    with pytest.raises(ConfigError, match="--bc.batch_size=300: larger than the 200 samples"):
        check_batch_size("--bc.batch_size", 300, 200, "full.hdf5")
    check_batch_size("--bc.batch_size", 200, 200, "full.hdf5")  # a batch of all the data is fine


def test_a_value_from_the_config_file_is_named_with_the_file():
    import pyrallis

    error = pyrallis.ParsingError(
        "Failed when parsing value='abc' into field \"<class 'train_laom.LAOMConfig'>.learning_rate\" of type "
        "<class 'float'>.\n\tUnderlying error is \"ValueError: could not convert string to float: 'abc'\""
    )
    message = user_message(error, ["--config_path", "my.yaml"])
    assert message.startswith("my.yaml: learning_rate (LAOMConfig) = abc: expected a value of type float")
    assert user_message(ZeroDivisionError("x"), []) is None  # a bug is not a user error


def test_the_data_files_of_stages_a_run_leaves_out_are_not_checked(tmp_path):
    """lam_only / idm_only runs never read the later stages' files: their placeholders are not errors (the small
    study's LAM-only runs keep studies/small/configs' PATH/TO/... for latent BC and the decoder)."""
    import train_idm
    import train_lapo
    from src.errors import UserError
    from src.run import check_config

    missing = str(tmp_path / "missing.hdf5")
    cfg = train_lapo.Config(lam_only=True)
    cfg.bc.data_path = cfg.decoder.data_path = missing
    check_config(cfg)
    cfg.lam_only = False
    with pytest.raises(UserError, match="--bc.data_path"):
        check_config(cfg)
    idm = train_idm.Config(idm_only=True)
    idm.bc.data_path = missing
    check_config(idm)
    idm.idm.data_path = missing
    with pytest.raises(UserError, match="--idm.data_path"):
        check_config(idm)


def test_a_config_class_source_is_read_once_and_the_help_is_the_same(monkeypatch):
    """pyrallis reads a config class's source for each of its fields' help (about 1.2 s of a script's start); src.errors
    makes it read each class once. The help printed is unchanged."""
    import inspect

    import pyrallis
    from pyrallis.wrappers import docstring

    import train_laom_labels
    from src import errors

    def help_text() -> str:
        return pyrallis.argparsing.ArgumentParser(config_class=train_laom_labels.Config).format_help()

    monkeypatch.setattr(docstring, "inspect", inspect)  # pyrallis as it comes
    plain = help_text()
    reads = []
    getsource = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: reads.append(obj) or getsource(obj))
    monkeypatch.setattr(docstring, "inspect", errors._Inspect())
    assert help_text() == plain and "--lapo.labeled_batch_size" in plain
    assert len(reads) == len(set(reads)) <= 5  # Config and its sections, once each (fields: about 90)
