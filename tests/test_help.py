"""--help of every method script: each config field shows the whole comment written on its line, and nothing else
(pyrallis takes a comment line above a field as that field's help, so a comment continued on the next line would
end up in the next field's text or a section's title)."""

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap

import pyrallis
import pytest

from src.errors import configure_pyrallis

configure_pyrallis()  # reads each class's source once, as every script does

SCRIPTS = ["train_lapo", "train_laom", "train_laom_labels", "train_idm", "train_bc", "train_lapo_mask"]


def field_comments(cls) -> dict[str, str]:
    """{field: the comment on its line} of a dataclass and its bases, as written in the source."""
    comments = {}
    for klass in reversed(cls.__mro__[:-1]):
        for line in textwrap.dedent(inspect.getsource(klass)).splitlines():
            m = re.match(r"\s+(\w+): [^#]+#\s*(.*)$", line)
            if m:
                comments[m.group(1)] = m.group(2)
    return comments


def docstring(cls) -> str:
    node = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    return ast.get_docstring(node) or ""


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_field_shows_its_whole_comment(script):
    config = importlib.import_module(script).Config
    parser = pyrallis.argparsing.ArgumentParser(config_class=config)
    helps = {a.option_strings[0]: " ".join((a.help or "").split()) for a in parser._actions if a.option_strings}
    sections = [("", config)] + [
        (f"{f.name}.", f.type) for f in dataclasses.fields(config) if dataclasses.is_dataclass(f.type)
    ]
    checked = 0
    for prefix, cls in sections:
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type):
                continue
            flag = f"--{prefix}{f.name}"
            assert comments.get(f.name), f"{script} {flag}: no comment on its line"
            assert helps[flag] == comments[f.name], f"{script} {flag}: help {helps[flag]!r}"
            checked += 1
    assert checked > 20
    for group in parser._action_groups[2:]:  # the config's sections: a title, and the class's docstring if any
        classes = [cls for _, cls in sections if group.title.startswith(cls.__name__)]
        assert (group.description or "") in ("", *map(docstring, classes)), (script, group.title, group.description)
