""".ci/missing_pins.py, which decides whether .ci/run installs the pinned requirements: it names the pins missing
here (those of included files too), keeps one installed at another version and prints nothing when none is missing."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def missing_pins(path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / ".ci" / "missing_pins.py"), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


def test_names_missing_pins_and_keeps_other_versions(tmp_path):
    numpy = importlib.metadata.version("numpy")
    (tmp_path / "base.txt").write_text(f"numpy=={numpy}  # installed, as pinned\nh5py==0.0.1\n")
    (tmp_path / "dev.txt").write_text("-r base.txt\n# a comment\nlaom-no-such-package==1.0\n")
    proc = missing_pins(tmp_path / "dev.txt")
    assert proc.stdout.strip() == "1 of 3: laom-no-such-package"
    assert "h5py" in proc.stderr and "(pinned 0.0.1)" in proc.stderr


def test_silent_when_the_project_pins_are_installed():
    assert missing_pins(ROOT / "requirements-dev.txt").stdout == ""
