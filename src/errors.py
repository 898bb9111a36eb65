"""Errors the person at the terminal can act on, reported the same way by every script: one line on stderr,
`error: <message>` naming the file, field or value, what was expected and what to do, exit status 1, no traceback
(LAOM_TRACEBACK=1 shows it). A user error is a UserError, a pyrallis parse error or an argparse error; any other
exception is a bug and keeps its traceback. `user_errors` is where every command line starts: it also makes
pyrallis strict about integers and quick with --help (`configure_pyrallis`)."""

import argparse
import ast
import contextlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pyrallis
import yaml
from pyrallis.wrappers import docstring as pyrallis_docstring

TRACEBACK_VARIABLE = "LAOM_TRACEBACK"


class UserError(Exception):
    """An error caused by the user's input; its message is one line naming the file, field or value, what was
    expected and the fix."""


class ConfigError(UserError, ValueError):
    """A config field or command-line argument that cannot be used."""


class DatasetError(UserError, ValueError):
    """A dataset file does not have the layout or the content that was expected."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist."""


class OutputExistsError(UserError, FileExistsError):
    """An output file exists already (the message says how to replace it)."""


class MissingKeyError(UserError, KeyError):
    """A file lacks a group, dataset or attribute that the command needs (printed without KeyError's quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def strict_int(raw) -> int:
    """An integer config value: an int, or a number or text with an integer value (2.0, "2", "1e5"); anything else
    (1.5, true, "abc") is a ValueError, which pyrallis reports as a parse error of the field."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, (float, str)):
        try:
            number = float(raw)
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise ValueError(f"expected an integer, got {raw!r}")


class _Inspect:
    """The inspect module as pyrallis's docstring reader sees it: getsource remembers each class's source."""

    def __init__(self):
        self._sources = {}

    def __getattr__(self, name):
        return getattr(inspect, name)

    def getsource(self, obj) -> str:
        if obj not in self._sources:
            self._sources[obj] = inspect.getsource(obj)
        return self._sources[obj]


def configure_pyrallis() -> None:
    """Called once where a command line starts (user_errors). Integer fields strict: pyrallis's own int() turns
    `--lapo.num_epochs=1.5` into 1 without a word, strict_int makes it a parse error naming the flag. Each config
    class's source read once for the fields' help, instead of once per field (about 1.2 s of a script's start)."""
    pyrallis.decode.register(int, strict_int)
    if not isinstance(pyrallis_docstring.inspect, _Inspect):
        pyrallis_docstring.inspect = _Inspect()


def show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _parsing_error_parts(message: str) -> tuple[str, str, str, str] | None:
    """(value, class name, field, type) of a pyrallis ParsingError message, or None."""
    pattern = r"Failed when parsing value='(.*)' into field \"<class '([\w.]+)'>\.(\w+)\" of type (.+?)\.\n"
    m = re.match(pattern, message)
    if not m:
        return None
    value, cls, field, type_ = m.groups()
    type_ = re.sub(r"<class '(\w+)'>", r"\1", type_).replace("typing.", "")
    return value, cls.rsplit(".", 1)[-1], field, type_


def _keys(mapping: str) -> list[str]:
    """The keys of a dict's repr (`{'learnig_rate': 0.1}`), or the text itself where it cannot be read."""
    try:
        return [str(k) for k in ast.literal_eval(mapping)]
    except (ValueError, SyntaxError):
        return [mapping]


def _flag_of(field: str, argv: list[str]) -> str | None:
    """The command-line flag (`--lapo.learning_rate`) that set a field of this name, or None (it came from a file)."""
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and (flag == f"--{field}" or flag.endswith(f".{field}")):
            return flag
    return None


def config_path_of(argv: list[str]) -> str | None:
    """The config file given on the command line (the last --config_path, as argparse takes it), or None."""
    path = None
    for i, arg in enumerate(argv):
        if arg.startswith("--config_path="):
            path = arg.split("=", 1)[1]
        elif arg == "--config_path" and i + 1 < len(argv):
            path = argv[i + 1]
    return path


def user_message(error: BaseException, argv: list[str] | None = None) -> str | None:
    """The one-line message of a user error, None for any other exception (a bug)."""
    argv = sys.argv[1:] if argv is None else argv
    if isinstance(error, UserError):
        return one_line(error)
    if isinstance(error, pyrallis.ParsingError):
        parsed = _parsing_error_parts(str(error))
        if parsed is None:
            return one_line(str(error).replace("\n\t Underlying error:", ":"))
        value, cls, field, type_ = parsed
        extra = re.search(r"The fields (\{.*\}) do not belong to the class", str(error), re.S)
        if extra:  # a section of the config file holds a field that the section does not have
            names = ", ".join(f"{field}.{name}" for name in _keys(extra.group(1)))
            return f"{config_path_of(argv)}: {names}: not a field of the {field} section (--help lists them)"
        reason = re.search(r'Underlying error is "(.*)"', str(error), re.S)
        why = f" ({one_line(reason.group(1))})" if reason else ""
        flag = _flag_of(field, argv)
        where = f"{flag}={value}" if flag else f"{config_path_of(argv)}: {field} ({cls}) = {value}"
        return f"{where}: expected a value of type {type_}{why}"
    extra = re.fullmatch(r"The fields (\{.*\}) do not belong to the class", str(error), re.S)
    if type(error) is Exception and extra:
        return f"{config_path_of(argv)}: {one_line(extra.group(1))}: not config fields (--help lists them)"
    return None


def check_config_path(argv: list[str]) -> None:
    """A --config_path that is missing, or is not a YAML mapping of fields, is a ConfigError naming it."""
    path = config_path_of(argv)
    if path is None:
        return
    if Path(path).is_dir():
        inside = sorted(Path(path).glob("*.yaml"))
        example = f", e.g. {inside[0]}" if inside else ""
        raise ConfigError(f"--config_path={path}: a directory; expected a YAML config file{example}")
    if not Path(path).is_file():
        raise MissingFileError(f"--config_path={path}: no such file; expected a YAML config, e.g. configs/example/")
    try:
        content = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config_path={path}: not a readable YAML file ({one_line(e)})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"--config_path={path}: expected YAML fields (`field: value` lines), got {content!r:.60}")


def check_hdf5_file(label: str, path: str | Path, expected: str = "an HDF5 dataset", hint: str = "") -> None:
    """An HDF5 file the command reads: a MissingFileError when it is missing, a DatasetError when it is a folder or
    not HDF5, each naming `label` (a flag, `--lapo.data_path=...`, or a description) and what was expected."""
    import h5py

    if not Path(path).exists():
        raise MissingFileError(f"{label}: no such file; expected {expected}{hint}")
    if not Path(path).is_file() or not h5py.is_hdf5(path):
        raise DatasetError(f"{label}: {'a folder' if Path(path).is_dir() else 'not an HDF5 file'}; expected {expected}")


def _argparse_error(parser: argparse.ArgumentParser, message: str):
    raise ConfigError(f"{message} (--help lists the arguments)")


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    print(f"warning: {one_line(message)}", file=sys.stderr)


@contextlib.contextmanager
def user_errors(show: Callable[[], bool] = lambda: True):
    """Ends the process with `error: <message>` (one line, exit status 1) on a user error raised in the block.
    show(): whether this process prints it (in a distributed run only rank 0 does)."""
    configure_pyrallis()
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error
    try:
        check_config_path(sys.argv[1:])
        yield
    except Exception as e:
        message = user_message(e)
        if message is None or show_tracebacks():
            raise
        if show():
            print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:
        argparse.ArgumentParser.error = original


def cli(fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) as a command-line program: a user error ends it with one line (see user_errors)."""
    with user_errors():
        return fn(*args, **kwargs)
