"""The project's modules import one another without a circle: every import statement of every Python file (those
inside functions too) read with ast, and no module reaches itself again through them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("src", "scripts", "studies")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for the method scripts and every file under src/, scripts/ and studies/."""
    files = sorted(ROOT.glob("train_*.py"))
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    modules = {}
    for path in files:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports; `from package import name` counts the module `package.name` where there
    is one, else the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if name in modules:
                    out.add(name)
                elif node.module in modules:
                    out.add(node.module)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or of one that imports itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    modules = project_modules()
    graph = {name: imported(path, modules) - {name} for name, path in modules.items()}
    assert "scripts.bench.timing" in graph["scripts.bench.device_bench"]  # the reader sees the scripts' imports
    assert cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_src_is_at_most_five_import_layers_deep():
    """A module of src/ that imports nothing of src/ is layer 1; each import adds one (the issue-31 design: a small,
    flat src/)."""
    modules = {name: path for name, path in project_modules().items() if name.startswith("src.")}
    graph = {name: imported(path, modules) - {name} for name, path in modules.items()}
    chains: dict[str, list[str]] = {}

    def chain(name: str) -> list[str]:
        if name not in chains:
            chains[name] = [name, *max((chain(d) for d in sorted(graph[name])), key=len, default=[])]
        return chains[name]

    deepest = max((chain(name) for name in graph), key=len)
    assert len(deepest) <= 5, " -> ".join(deepest)


def test_importing_src_patches_no_library():
    """pyrallis is configured by one call where a command line starts (src.errors.user_errors), not on import."""
    import subprocess
    import sys

    code = (
        "import argparse, pyrallis; from pyrallis.wrappers import docstring; before = docstring.inspect; "
        "error = argparse.ArgumentParser.error; "
        "import src.run, src.errors, src.probes, src.evaluation; "
        "assert docstring.inspect is before and argparse.ArgumentParser.error is error; "
        "assert pyrallis.decode(int, 1.5) == 1  # pyrallis's own int(), not strict_int"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
