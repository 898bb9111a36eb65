"""The device a run trains on, checked against this machine, and the GPU its evaluation renders on."""

import ctypes
import os
from typing import Optional

import torch

from src.errors import ConfigError


def get_device(name: str = "auto") -> torch.device:
    """The device `name` asks for (checked by check_device), a CUDA device's index always explicit (set_device refuses
    a bare "cuda"): "auto" is the current CUDA device when torch sees one, else the CPU (see `no_gpu_note`)."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    device = check_device("cuda" if name == "auto" else name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def no_gpu_note(name: str) -> Optional[str]:
    """One line when "auto" falls back to the CPU on a CUDA build of torch (a driver too old, a container without
    GPUs): a paper-scale run would otherwise train on the CPU without a word."""
    if name != "auto" or torch.version.cuda is None or torch.cuda.is_available():
        return None
    return (
        f"note: --device=auto: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU, training on the "
        f"CPU; check the driver with nvidia-smi (it must support CUDA {torch.version.cuda}), run Docker with "
        "--gpus all, or use --device=cuda to make this an error"
    )


def check_device(name: str) -> torch.device:
    """The device `name` ("cpu", "cuda", "cuda:1", ...) if this machine has it, else a ConfigError saying why (a CPU
    build of torch, no visible GPU, an index beyond the visible GPUs) and what to do."""
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
    """Evaluation renders on the GPU this process trains on (MUJOCO_EGL_DEVICE_ID, read when dm_control is imported,
    unless the user set it); EGL ignores CUDA_VISIBLE_DEVICES. Without the NVIDIA EGL library nothing is set: Mesa's
    EGL has one device, and an index beyond it would stop dm_control."""
    if os.environ.get("MUJOCO_GL", "egl") != "egl" or not _nvidia_egl():
        return
    visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    if device_index < len(visible) and all(e.isdigit() for e in visible):
        device_index = int(visible[device_index])
    os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", str(device_index))


def _nvidia_egl() -> bool:
    """Whether the NVIDIA EGL library (mounted by the container toolkit, installed with the driver) can be loaded."""
    try:
        ctypes.CDLL("libEGL_nvidia.so.0")
    except OSError:
        return False
    return True
