"""Atomic file writes (a temporary file, then a rename); an error names the file and says when the disk is full."""

import dataclasses
import errno
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch


def replace_or_explain(tmp: Path, path: Path, write) -> None:
    """write(tmp), then tmp renamed onto path with the mode a plain open() gives; on any failure tmp is removed."""
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, KeyboardInterrupt):
            raise
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC
        free = shutil.disk_usage(path.parent).free
        if full or free < 16 * 2**20:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} ({free} bytes free)") from e
        raise OSError(f"could not write {path}: {e}") from e


def write_json(path: str | Path, obj) -> None:
    """JSON written atomically; a NaN or infinite number is an error naming its key (the output is valid JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        obj = nan_to_none(obj, strict=True)
    except FloatingPointError as e:
        raise FloatingPointError(f"{path}: {e} is not a finite number; refusing to write it") from None
    text = json.dumps(obj, indent=2, default=json_default, allow_nan=False)
    replace_or_explain(path.with_name(path.name + ".tmp"), path, lambda tmp: tmp.write_text(text))


def nan_to_none(obj, strict: bool = False, key: str = ""):
    """obj as JSON holds it, NaN or infinite floats None; strict: a FloatingPointError naming the first's key path."""
    if isinstance(obj, float | np.floating) and not math.isfinite(obj):
        if strict:
            raise FloatingPointError(f"{key or 'value'} = {obj}")
        return None
    if isinstance(obj, dict):
        return {str(k): nan_to_none(v, strict, f"{key}.{k}" if key else str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(v, strict, f"{key}[{i}]") for i, v in enumerate(obj)]
    return obj


def json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic | torch.Tensor):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
