"""How every method script's update steps: autocast precision, optimizers, learning-rate schedules, EMA targets."""

import contextlib
import functools
import math
from pathlib import Path

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from src.errors import ConfigError

_precision = {"bf16": None}  # set by setup_backends: whether autocast() turns bf16 on (None: decide per device)


def setup_backends(device: torch.device, precision: str = "auto") -> None:
    """TF32, cudnn benchmark; autocast "auto" (bf16 on CUDA / native-bf16 CPUs as released, else fp32), bf16, fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision={precision!r}; valid: ['auto', 'bf16', 'fp32']")
    _precision["bf16"] = None if precision == "auto" else precision == "bf16"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def bf16_on(device: torch.device) -> bool:
    if _precision["bf16"] is not None:
        return _precision["bf16"]
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast(device: torch.device):
    """bf16 autocast for training steps (see setup_backends); stage-2 labels and evaluation run in fp32, as released."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16_on(device) else contextlib.nullcontext()


def make_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float | None = None) -> Optimizer:
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay or 0.0},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                for p in params)  # fmt: skip
    if kind not in ("adam", "adamw"):
        raise ConfigError(f"unknown optimizer {kind!r}; expected 'adam' or 'adamw'")
    return (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(groups, lr=lr, fused=fused)


DECAYS = {  # the lr's factor after warm-up, by the progress through the decay (0 to 1)
    "linear": lambda progress: max(0.0, 1.0 - progress),
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "constant": lambda progress: 1.0,
    "cooldown": lambda progress: 1.0 - math.sqrt(progress),
}


def make_scheduler(
    optimizer: Optimizer, total_updates: int, warmup_updates: int, kind: str = "linear", cooldown_ratio: float = 0.0
) -> LambdaLR:
    """Warm-up (update i < W at lr * i / W), then DECAYS[kind], over the last cooldown_ratio if > 0; as released."""
    if kind not in DECAYS:
        raise ConfigError(f"unknown lr schedule {kind!r}; valid: {list(DECAYS)}")
    if not 0.0 <= cooldown_ratio <= 1.0:
        raise ConfigError(f"cooldown_ratio must be in [0, 1], got {cooldown_ratio}")
    total = max(1, total_updates)
    warmup = max(0, warmup_updates)  # a warm-up longer than the stage never reaches the peak
    if cooldown_ratio > 0:
        decay_start = max(warmup, int(round(total * (1.0 - cooldown_ratio))))
    else:
        decay_start = total if kind == "cooldown" else warmup

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        if step < decay_start:
            return 1.0
        return DECAYS[kind](min(1.0, (step - decay_start) / max(1, total - decay_start)))

    return LambdaLR(optimizer, factor)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
    for tb, sb in zip(target.buffers(), source.buffers(), strict=True):
        if tb.dtype.is_floating_point:
            tb.lerp_(sb, tau)
