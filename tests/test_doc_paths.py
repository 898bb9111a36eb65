"""Every tool the README, docs/ and studies/ name is where they say: each `scripts/...` or `studies/...` path exists
and each `python -m` module of the project resolves to a file, so a moved script cannot leave a command behind that
no longer runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "studies").rglob("*.md"))]
PATH = re.compile(r"(?<![\w/.-])(?:scripts|studies)/[\w./-]*\w")  # as a user types it (not a placeholder's <...>)
MODULE = re.compile(r"python3? -m ((?:scripts|studies|train_)[\w.]*)")
# Named in a document its owner updates next: none now.
PENDING: set = set()  # (doc, module) pairs allowed to be missing for a while


def named(pattern: re.Pattern) -> list[tuple[str, str]]:
    """(document, match) of every match, not a placeholder or glob (`scripts/sweeps/<method>.sh`, `scripts/*.py`)."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in pattern.finditer(text):
            if text[m.end() : m.end() + 1] not in ("<", "*", "{"):
                out.append((str(doc.relative_to(ROOT)), m.group(m.lastindex or 0)))
    return out


def test_named_script_paths_exist():
    paths = named(PATH)
    assert len(paths) > 20
    assert [(doc, p) for doc, p in paths if not (ROOT / p).exists()] == []


def test_named_modules_resolve():
    modules = named(MODULE)
    assert any(m == "scripts.bench.benchmark" for _, m in modules)
    missing = []
    for doc, module in modules:
        path = ROOT / module.replace(".", "/")
        if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists()) and (doc, module) not in PENDING:
            missing.append((doc, module))
    assert missing == []
