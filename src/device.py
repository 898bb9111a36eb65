"""The device a run trains on, checked against this machine, and the GPU its evaluation renders on."""

import ctypes
import os
from typing import Optional

import torch

from src.errors import ConfigError


def get_device(name: str = "auto") -> torch.device:
    """The checked device `name`, CUDA with an explicit index; "auto": the current CUDA device if any, else the CPU."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    device = check_device("cuda" if name == "auto" else name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def no_gpu_note(name: str) -> Optional[str]:
    if name != "auto" or torch.version.cuda is None or torch.cuda.is_available():
        return None
    return (
        f"note: --device=auto: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU, training on the "
        f"CPU; check the driver with nvidia-smi (it must support CUDA {torch.version.cuda}), run Docker with "
        "--gpus all, or use --device=cuda to make this an error"
    )


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device={name}: not a device; expected auto, cpu, cuda or cuda:<index>") from None
    if device.type != "cuda":
        return device
    if torch.version.cuda is None:
        version = torch.__version__.split("+")[0]
        raise ConfigError(
            f"--device={name}: the installed torch {torch.__version__} is a CPU build; install its CUDA build "
            f"(pip install --force-reinstall torch=={version}, from PyPI; see README) or run with --device=cpu"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ConfigError(
            f"--device={name}: torch {torch.__version__} sees no CUDA device{hidden}; check the driver with "
            "nvidia-smi, or run with --device=cpu"
        )
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"--device={name}: {count} CUDA device{'s are' if count > 1 else ' is'} visible (cuda:0"
            f"{f' .. cuda:{count - 1}' if count > 1 else ''}); use one of them or --device=cpu"
        )
    return device


def render_on(device_index: int) -> None:
    """Sets MUJOCO_EGL_DEVICE_ID (unless set) to this GPU; not with Mesa's EGL (one device: another index fails)."""
    if os.environ.get("MUJOCO_GL", "egl") != "egl" or not _nvidia_egl():
        return
    visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    if device_index < len(visible) and all(e.isdigit() for e in visible):
        device_index = int(visible[device_index])
    os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", str(device_index))


def _nvidia_egl() -> bool:
    try:
        ctypes.CDLL("libEGL_nvidia.so.0")
    except OSError:
        return False
    return True
