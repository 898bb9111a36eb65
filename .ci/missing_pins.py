"""Print how many pins of a requirements file (and its -r includes) the running Python lacks, and their names; nothing
when none is missing. A pin installed at another version is named on stderr and counts as present.

    python3 .ci/missing_pins.py requirements-dev.txt     # e.g. "35 of 35: torch, numpy, h5py, pyrallis, ..."
"""

import importlib.metadata
import sys
from pathlib import Path


def pins(path: Path) -> list[tuple[str, str]]:
    """(name, version) of every `name==version` line, those of included files in place."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out += pins(path.parent / line[3:].strip())
        elif "==" in line:
            name, version = line.split("==")
            out.append((name.strip(), version.strip()))
    return out


def main(path: str) -> None:
    wanted = pins(Path(path))
    missing, other = [], []
    for name, pinned in wanted:
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if installed.split("+")[0] != pinned:  # a local build label (torch's +cpu, +cu126) is the same release
            other.append(f"{name} {installed} (pinned {pinned})")
    if other:
        print(f"note: installed at another version than {path} pins, kept: {', '.join(other)}", file=sys.stderr)
    if missing:
        print(f"{len(missing)} of {len(wanted)}: {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}")


if __name__ == "__main__":
    main(sys.argv[1])
