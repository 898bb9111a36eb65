"""scripts/python_env.sh, the set-up both README commands source: on a machine with only Python 3.11 it makes .venv/
and installs the pinned requirements into it, saying so; a second command reuses it silently; an active virtual
environment is used instead. Real venvs and a real pip install, of a one-file package (the repository's pins would
take minutes) from a local folder."""

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import laom_env_probe, sys; print('python', sys.prefix, laom_env_probe.VERSION)"


def wheel(folder: Path) -> None:
    """laom-env-probe 1.0, a one-module wheel."""
    files = {
        "laom_env_probe.py": "VERSION = '1.0'\n",
        "laom_env_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: laom-env-probe\nVersion: 1.0\n",
        "laom_env_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("laom_env_probe-1.0.dist-info/RECORD,,")
    files["laom_env_probe-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(folder / "laom_env_probe-1.0-py3-none-any.whl", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def test_a_fresh_machine_gets_a_venv_once_and_an_active_one_is_used(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / ".ci").mkdir()
    shutil.copy(ROOT / "scripts" / "python_env.sh", repo / "scripts")
    shutil.copy(ROOT / ".ci" / "missing_pins.py", repo / ".ci")
    (repo / "requirements-dev.txt").write_text("laom-env-probe==1.0\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel(wheels)
    bin_dir = tmp_path / "bin"  # Python 3.11 as python3.11 and python3, without the probe package
    bin_dir.mkdir()
    for name in ("python3", "python3.11"):
        (bin_dir / name).symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CI", "PYTHONPATH")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))

    def source(extra_env: dict | None = None) -> list[str]:
        command = f'source scripts/python_env.sh && echo "PYTHON=$PYTHON" && python3 -c "{PROBE}"'
        done = subprocess.run(
            ["bash", "-c", command], cwd=repo, env={**env, **(extra_env or {})}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.splitlines()

    venv = repo / ".venv"
    first = source()
    assert first[0].startswith("setting up a virtual environment in .venv/ (Python 3.11")
    assert first[1].startswith(f"installing the pinned Python requirements (requirements-dev.txt) into {venv}")
    assert first[1].endswith("missing: 1 of 1: laom-env-probe")
    assert first[2:] == [f"PYTHON={venv}/bin/python", f"python {venv} 1.0"]
    assert source() == first[2:]  # reused, nothing said

    active = tmp_path / "active"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(active)], check=True)
    lines = source({"VIRTUAL_ENV": str(active)})
    assert lines[0].startswith(f"installing the pinned Python requirements (requirements-dev.txt) into {active}")
    assert lines[1:] == [f"PYTHON={active}/bin/python", f"python {active} 1.0"]
