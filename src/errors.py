"""User errors end a script with one `error: <message>` line, status 1 (LAOM_TRACEBACK=1: traceback): `user_errors`."""

import argparse
import ast
import contextlib
import functools
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pyrallis
import yaml
from pyrallis.wrappers import docstring as pyrallis_docstring


class UserError(Exception):
    """An error of the user's input: one line naming the file, field or value, what was expected and the fix."""


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
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    with contextlib.suppress(ValueError):
        if isinstance(raw, float | str) and float(raw).is_integer():
            return int(float(raw))
    raise ValueError(f"expected an integer, got {raw!r}")


class _Inspect:
    def __init__(self):
        self.getsource = functools.cache(lambda obj: inspect.getsource(obj))

    def __getattr__(self, name):
        return getattr(inspect, name)


def configure_pyrallis() -> None:
    """Strict int fields (pyrallis's int() truncates 1.5); each config class's source read once for --help (~1.2 s)."""
    pyrallis.decode.register(int, strict_int)
    if not isinstance(pyrallis_docstring.inspect, _Inspect):
        pyrallis_docstring.inspect = _Inspect()


def one_line(text) -> str:
    return " ".join(str(text).split())


def config_path_of(argv: list[str]) -> str | None:
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
    text = str(error)
    if isinstance(error, UserError):
        return one_line(error)
    if isinstance(error, pyrallis.ParsingError):
        pattern = r"Failed when parsing value='(.*)' into field \"<class '([\w.]+)'>\.(\w+)\" of type (.+?)\.\n"
        parsed = re.match(pattern, text)
        if parsed is None:
            return one_line(text.replace("\n\t Underlying error:", ":"))
        value, cls, field, type_ = parsed.groups()
        type_ = re.sub(r"<class '(\w+)'>", r"\1", type_).replace("typing.", "")
        extra = re.search(r"The fields (\{.*\}) do not belong to the class", text, re.S)
        if extra:  # a section of the config file holds a field that the section does not have
            try:
                keys = [str(k) for k in ast.literal_eval(extra.group(1))]
            except (ValueError, SyntaxError):
                keys = [extra.group(1)]
            names = ", ".join(f"{field}.{name}" for name in keys)
            return f"{config_path_of(argv)}: {names}: not a field of the {field} section (--help lists them)"
        reason = re.search(r'Underlying error is "(.*)"', text, re.S)
        why = f" ({one_line(reason.group(1))})" if reason else ""
        flags = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]  # the flag that set it, if any
        flag = next((f for f in flags if f == f"--{field}" or f.endswith(f".{field}")), None)
        where = f"{flag}={value}" if flag else f"{config_path_of(argv)}: {field} ({cls.rsplit('.', 1)[-1]}) = {value}"
        return f"{where}: expected a value of type {type_}{why}"
    extra = re.fullmatch(r"The fields (\{.*\}) do not belong to the class", text, re.S)
    if type(error) is Exception and extra:
        return f"{config_path_of(argv)}: {one_line(extra.group(1))}: not config fields (--help lists them)"
    return None


def check_config_path(argv: list[str]) -> None:
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
    import h5py

    if not Path(path).exists():
        raise MissingFileError(f"{label}: no such file; expected {expected}{hint}")
    if not Path(path).is_file() or not h5py.is_hdf5(path):
        raise DatasetError(f"{label}: {'a folder' if Path(path).is_dir() else 'not an HDF5 file'}; expected {expected}")


def _argparse_error(parser: argparse.ArgumentParser, message: str):
    raise ConfigError(f"{message} (--help lists the arguments)")


def warn(message: str) -> None:
    print(f"warning: {one_line(message)}", file=sys.stderr)


@contextlib.contextmanager
def user_errors(show: Callable[[], bool] = lambda: True):
    """Exits with `error: <message>` (status 1) on a user error in the block; show(): whether to print."""
    configure_pyrallis()
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error
    try:
        check_config_path(sys.argv[1:])
        yield
    except Exception as e:
        message = user_message(e)
        if message is None or os.environ.get("LAOM_TRACEBACK", "") not in ("", "0"):
            raise
        if show():
            print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    finally:
        argparse.ArgumentParser.error = original


def cli(fn: Callable, *args, **kwargs):
    with user_errors():
        return fn(*args, **kwargs)
