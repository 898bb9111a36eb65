"""The CUDA-only branches run on the CPU, as a user's GPU would run them: the device is faked where the code asks
torch about it (torch.cuda.is_available / mem_get_info / device_count), the meta device stands for a non-CPU device
in torch.load, and the CUDA event and pinning are stubbed. Nothing else is replaced."""

import os
import random

import numpy as np
import pytest
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


# ---------------------------------------------------------------- the run's GPU: current device and rendering


class _FakeCudaDevice:
    """torch.cuda's device calls of a box with `count` GPUs: set_device / current_device remember the index."""

    def __init__(self, monkeypatch, count: int):
        self.current = 0
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)

    def set_device(self, device) -> None:
        self.current = torch.device(device).index if torch.device(device).index is not None else self.current


@pytest.mark.parametrize("visible, expected", [(None, "1"), ("2,3", "3")])
def test_a_run_on_cuda_n_makes_it_current_and_renders_on_it(tmp_path, monkeypatch, visible, expected):
    """--device=cuda:1 outside torchrun: nothing called set_device (CUDA events were recorded on cuda:0 while the
    copies ran on cuda:1) and MUJOCO_EGL_DEVICE_ID was never set (evaluation rendered on GPU 0)."""
    from src import evaluation
    from src.run import RunConfig, start_run

    fake = _FakeCudaDevice(monkeypatch, 4)
    monkeypatch.setattr(evaluation, "_nvidia_egl", lambda: True)  # the driver's EGL library, as on a GPU box
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "")  # restored (unset) after the test
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    run = start_run(RunConfig(device="cuda:1", run_dir=str(tmp_path / "run"), wandb_mode="disabled"))
    assert run.device == torch.device("cuda", 1) and fake.current == 1
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == expected


def test_a_users_egl_device_is_kept_and_none_is_set_without_the_nvidia_egl_library(tmp_path, monkeypatch):
    from src import evaluation
    from src.run import RunConfig, start_run

    _FakeCudaDevice(monkeypatch, 2)
    monkeypatch.setattr(evaluation, "_nvidia_egl", lambda: True)
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "0")
    start_run(RunConfig(device="cuda:1", run_dir=str(tmp_path / "run"), wandb_mode="disabled"))
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == "0"
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    monkeypatch.setattr(evaluation, "_nvidia_egl", lambda: False)  # Mesa's one EGL device: index 1 would fail
    start_run(RunConfig(device="cuda:1", run_dir=str(tmp_path / "run2"), wandb_mode="disabled"))
    assert "MUJOCO_EGL_DEVICE_ID" not in os.environ


def test_software_rendering_on_a_cuda_run_is_said_once(capsys, monkeypatch):
    """This machine renders with Mesa: a run training on CUDA here would render on the CPU without a word."""
    from src import evaluation

    monkeypatch.setattr(evaluation, "_noted", [])
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID", raising=False)
    evaluation._note_software_rendering(torch.device("cpu"))
    assert capsys.readouterr().out == ""
    evaluation._note_software_rendering(torch.device("cuda", 0))
    evaluation._note_software_rendering(torch.device("cuda", 0))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: rendering on the CPU (Mesa Project EGL")
