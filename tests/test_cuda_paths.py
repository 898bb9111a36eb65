"""The CUDA-only branches run on the CPU, as a user's GPU would run them: the device is faked where the code asks
torch about it (torch.cuda.is_available / mem_get_info / device_count), the meta device stands for a non-CPU device
in torch.load, and the CUDA event and pinning are stubbed. Nothing else is replaced."""

import random

import numpy as np
import torch
import torch.nn as nn

from src.checkpoint import restore_stage, save_stage

# ---------------------------------------------------------------- resuming a stage checkpoint on a GPU


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_an_unfinished_stage_resumes_when_its_checkpoint_is_read_for_a_non_cpu_device(tmp_path):
    """torch.load with map_location=<GPU> moved the saved RNG state off the CPU and torch.set_rng_state raised
    TypeError on every resume of a GPU run; the meta device behaves as CUDA does here."""
    torch.manual_seed(5)
    save_stage(tmp_path / "lam.pt", {}, step=7, done=False)  # no modules: a meta module could not take values
    expected = _draws()
    _draws()  # the stream moves on; the restore must bring it back
    start, done = restore_stage(tmp_path / "lam.pt", {}, device="meta", stage="lapo")
    assert (start, done) == (7, False)
    assert _draws() == expected


def test_a_resume_with_fewer_gpus_than_saved_restores_those_it_has(tmp_path, monkeypatch):
    """A checkpoint saved on 2 GPUs resumed on 1: torch.cuda.set_rng_state_all raised IndexError for device 1."""
    restored = []

    def set_state(state, device=0):  # torch's own check for a device index beyond those visible
        if device >= torch.cuda.device_count():
            raise IndexError(f"device {device} of {torch.cuda.device_count()}")
        restored.append((device, state.device.type, state.dtype))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)] * 2)
    save_stage(tmp_path / "lam.pt", {"lam": nn.Linear(3, 2)}, step=3, done=False)
    assert restore_stage(tmp_path / "lam.pt", {"lam": nn.Linear(3, 2)}, stage="lapo") == (3, False)
    assert restored == [(0, "cpu", torch.uint8)]
