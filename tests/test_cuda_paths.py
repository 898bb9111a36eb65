"""The CUDA-only branches run on the CPU, as a user's GPU would run them: tests/fake_cuda.py adds what the CPU build of
torch lacks at its lowest layer (the torch._C._cuda_* entry points, the CUDA runtime module, the event and stream
base classes), so torch.cuda's public functions run with their own checks; the meta device stands for a non-CPU
device in torch.load, and pinned host memory (the CUDA host allocator, which has no Python layer) is plain memory."""

import os
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from src.checkpoint import restore_stage, save_stage
from tests.fake_cuda import FakeCuda


def _machine() -> tuple:
    return (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
        torch.cuda.is_available(),
        torch.cuda.is_initialized(),
        len(torch.cuda.default_generators),
    )


MACHINE = _machine()  # this process before any test faked a GPU

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
    start, done = restore_stage(tmp_path / "lam.pt", {}, stage="lapo")
    assert (start, done) == (7, False)
    assert _draws() == expected


def test_a_resume_with_fewer_gpus_than_saved_restores_those_it_has(tmp_path, monkeypatch):
    """A checkpoint saved on 2 GPUs resumed on 1: torch.cuda.set_rng_state_all raised IndexError for device 1."""
    FakeCuda(count=2, patch=monkeypatch)
    save_stage(tmp_path / "lam.pt", {"lam": nn.Linear(3, 2)}, step=3, done=False)
    saved = torch.load(tmp_path / "lam.pt", weights_only=False)["rng"]["cuda"]
    assert len(saved) == 2
    gpu = FakeCuda(count=1, patch=monkeypatch)
    assert restore_stage(tmp_path / "lam.pt", {"lam": nn.Linear(3, 2)}, stage="lapo") == (3, False)
    torch.cuda.init()  # torch sets GPU generator states lazily: at the resumed run's first CUDA call
    assert gpu.restored == [(0, "cpu", torch.uint8)]
    assert torch.equal(gpu.generators[0].get_state(), saved[0])


# ---------------------------------------------------------------- the run's GPU: current device and rendering


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_a_run_on_one_gpu_starts_with_its_device_index_explicit(tmp_path, monkeypatch, device):
    """--device=auto / cuda (every paper config): start_run called torch.cuda.set_device(torch.device("cuda")) and
    torch refused it (ValueError: a torch.device with a specified index) before the first update."""
    from src.run import RunConfig, start_run

    gpu = FakeCuda(count=2, patch=monkeypatch)
    run = start_run(RunConfig(device=device, run_dir=str(tmp_path / "run"), wandb_mode="disabled"))
    assert run.device == torch.device("cuda", 0) and gpu.current == 0
    assert torch.cuda.current_device() == 0 and torch.get_float32_matmul_precision() == "high"  # TF32, as on an H100


def test_a_fake_gpu_leaves_the_process_as_it_found_it():
    """The test before this one ran CUDA runs on the fake: TF32, cudnn benchmark and torch.cuda are as they were."""
    assert _machine() == MACHINE


def test_auto_on_a_cuda_build_without_a_gpu_says_so_and_runs_on_the_cpu(tmp_path, monkeypatch, capsys):
    """A driver too old for the wheel, a container started without --gpus: a paper-scale run went to the CPU
    without a word. --device=cuda on the same machine stays an error."""
    from src.errors import ConfigError
    from src.run import RunConfig, start_run

    FakeCuda(count=0, patch=monkeypatch)
    run = start_run(RunConfig(device="auto", run_dir=str(tmp_path / "run"), wandb_mode="disabled"))
    assert run.device == torch.device("cpu")
    lines = capsys.readouterr().out.strip().splitlines()
    start = f"note: --device=auto: torch {torch.__version__} (CUDA 12.8) sees no GPU"
    assert len(lines) == 1 and lines[0].startswith(start), lines
    assert "nvidia-smi" in lines[0] and "--gpus all" in lines[0] and "training on the CPU" in lines[0]
    with pytest.raises(ConfigError, match=r"--device=cuda: torch .* sees no CUDA device"):
        start_run(RunConfig(device="cuda", run_dir=str(tmp_path / "run2"), wandb_mode="disabled"))
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU build: auto on the CPU is what was asked, no note
    start_run(RunConfig(device="auto", run_dir=str(tmp_path / "run3"), wandb_mode="disabled"))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("visible, expected", [(None, "1"), ("2,3", "3")])
def test_a_run_on_cuda_n_makes_it_current_and_renders_on_it(tmp_path, monkeypatch, visible, expected):
    """--device=cuda:1 outside torchrun: nothing called set_device (CUDA events were recorded on cuda:0 while the
    copies ran on cuda:1) and MUJOCO_EGL_DEVICE_ID was never set (evaluation rendered on GPU 0)."""
    from src import device
    from src.run import RunConfig, start_run

    gpu = FakeCuda(count=4, patch=monkeypatch)
    monkeypatch.setattr(device, "_nvidia_egl", lambda: True)  # the driver's EGL library, as on a GPU box
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "")  # restored (unset) after the test
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    run = start_run(RunConfig(device="cuda:1", run_dir=str(tmp_path / "run"), wandb_mode="disabled"))
    assert run.device == torch.device("cuda", 1) and gpu.current == 1
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == expected


def test_a_users_egl_device_is_kept_and_none_is_set_without_the_nvidia_egl_library(tmp_path, monkeypatch):
    from src import device
    from src.run import RunConfig, start_run

    FakeCuda(count=2, patch=monkeypatch)
    monkeypatch.setattr(device, "_nvidia_egl", lambda: True)
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "0")
    start_run(RunConfig(device="cuda:1", run_dir=str(tmp_path / "run"), wandb_mode="disabled"))
    assert os.environ["MUJOCO_EGL_DEVICE_ID"] == "0"
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    monkeypatch.setattr(device, "_nvidia_egl", lambda: False)  # Mesa's one EGL device: index 1 would fail
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


# ---------------------------------------------------------------- host frames, GPU compute: the pinned path


def test_the_pinned_path_gives_the_plain_paths_batches_without_blocking_copies(monkeypatch):
    """Host frames, CUDA compute (staging on), run on the CPU (torch.cuda.Event over tests/fake_cuda.py; pinned
    buffers are plain memory): the same batches as the plain path through a buffer that must grow and a short last
    batch (the decoder keeps its last partial batch), masks included; and nothing goes to the device by a .to() of
    pageable memory (a blocking copy), only through the staging buffers."""
    import dataclasses

    from src import data as D

    pinned = set()

    def pinned_empty(numel, dtype):
        t = torch.empty(numel, dtype=dtype)
        pinned.add(t.untyped_storage().data_ptr())
        return t

    monkeypatch.setattr(D, "_pinned_empty", pinned_empty)
    gpu = FakeCuda(patch=monkeypatch)  # torch.cuda.Event records and waits at once here (counted)
    plain = D.load_dataset("data/example-data.hdf5", "cpu", frames_device="cpu", max_trajectories=2)
    staged = dataclasses.replace(plain, staging=D.PinnedStaging(torch.device("cpu")))
    masks = torch.randint(0, 2, (plain.num_frames, 1, *plain.frames_shape[2:]), dtype=torch.uint8) * 255
    copies = []
    to = torch.Tensor.to

    def watched_to(t, *args, **kwargs):  # a copy to the device from memory that is not a staging buffer
        if t.untyped_storage().data_ptr() not in pinned:
            copies.append(tuple(t.shape))
        return to(t, *args, **kwargs)

    valid = plain.valid_indices(3)
    earlier = []
    for size in (8, 32, 5):  # the buffers grow at 32; 5: a short last batch
        idx = valid[torch.randperm(len(valid))[:size]]
        torch.manual_seed(size)
        want = plain.batch(idx, 3, future_offset=3, next_obs=True)
        want["masks"] = D.stacked_masks(masks, plain, idx, 3)
        torch.manual_seed(size)
        monkeypatch.setattr(torch.Tensor, "to", watched_to)
        got = staged.batch(idx, 3, future_offset=3, next_obs=True)
        got["masks"] = D.stacked_masks(masks, staged, idx, 3)
        monkeypatch.setattr(torch.Tensor, "to", to)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), k
        earlier.append((got, want))
    for got, want in earlier:  # a batch handed out is never overwritten by a later gather
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert copies == []
    assert gpu.recorded >= 3 * 5 and gpu.waited >= 5  # frames, future frames, index, offsets, masks


# ---------------------------------------------------------------- bf16 autocast: what stays fp32


# Tiny networks for the bf16 test: every section's field of these names takes the value (16 px synthetic frames).
TINY_BF16 = {"encoder_scale": 1, "encoder_num_res_blocks": 1, "latent_action_dim": 16, "act_head_dim": 16}
TINY_BF16 |= {"obs_head_dim": 16, "hidden_dim": 16}


def test_every_stage_of_every_method_in_bf16_keeps_losses_probes_targets_and_labels_fp32(tmp_path, monkeypatch):
    """Each stage function of each method script (scripts/device_bench's stages and LAPO's masked stage 1; tiny
    networks on 16 px synthetic frames), 2-3 updates with --precision=bf16 on the CPU, the autocast branch a GPU
    run takes: every logged loss and probe loss, the LAM labels a latent BC trains on, and every network and EMA
    target a stage checkpoints are fp32."""
    import dataclasses

    import h5py

    from scripts.bench import timing as db
    from scripts.bench.benchmark import BenchConfig
    from scripts.bench.timing import write_synthetic
    from src.data import Shapes
    from src.run import start_run
    from src.stage import Stage

    seen = {"logged": [], "objects": []}
    log, init = Stage.log, Stage.__init__

    def watched_log(self, step, loss, /, **metrics):
        seen["logged"] += [(self.name, k, v.dtype) for k, v in {"loss": loss, **metrics}.items() if torch.is_tensor(v)]
        return log(self, step, loss, **metrics)

    def watched_init(self, name, ckpt_name, objects, *args, **kwargs):
        seen["objects"].append((name, objects))
        return init(self, name, ckpt_name, objects, *args, **kwargs)

    monkeypatch.setattr(Stage, "log", watched_log)
    monkeypatch.setattr(Stage, "__init__", watched_init)
    path, masks = str(tmp_path / "frames.hdf5"), str(tmp_path / "masks.hdf5")
    write_synthetic(path, BenchConfig(num_trajectories=1, trajectory_length=2 * 8 + 10 + 1, img_hw=16))
    with h5py.File(path, "r") as f, h5py.File(masks, "w") as m:  # true masks: everything foreground
        m.attrs.update(source_file=path, method="true")
        for k in f:
            m[f"{k}/masks"] = np.full(f[k]["obs"].shape[:3], 255, np.uint8)
    stages = db.STAGES | {
        "lapo_mask/lam": db.StageSpec("train_lapo_mask", "train_lam", "lapo", "configs/lapo-mask.yaml")
    }
    cpu = torch.device("cpu")
    labels, ran = [], []
    for key, spec in stages.items():
        args = db.stage_args(key, spec, True, path, 8, 2)
        args += ["--lapo.labeled_batch_size=2"] if key == "laom_labels/lam" else []
        args += [f"--lapo.masks_path={masks}"] if key == "lapo_mask/lam" else []
        module, cfg = db.parse_stage_config(spec, args, cpu, str(tmp_path / key), precision="bf16", log_every=1)
        for section in [getattr(cfg, f.name) for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(f.type)]:
            for name, value in TINY_BF16.items():
                if hasattr(section, name):
                    setattr(section, name, value)
        run = dataclasses.replace(start_run(cfg), wandb=db.WindowLog(f"{spec.section}/step"))
        inputs = []
        if spec.frozen:
            frozen = module.build_models(cfg, Shapes(6, 17, 16), spec.frozen)[spec.frozen].eval().requires_grad_(False)
            if hasattr(frozen, "label"):
                label = frozen.label
                frozen.label = lambda *x, label=label, key=key: labels.append((key, label(*x).dtype)) or label(*x)
            inputs = [frozen]
        getattr(module, spec.function)(run, *inputs)
        ran.append(key)
    assert ran == list(stages) and {name for name, _ in seen["objects"]} >= {"lapo", "bc", "decoder", "idm"}
    assert seen["logged"] and all(dtype == torch.float32 for *_, dtype in seen["logged"]), seen["logged"]
    assert {k for k, _ in labels} == {"lapo/latent_bc", "laom/latent_bc", "laom_labels/latent_bc"}
    assert all(dtype == torch.float32 for _, dtype in labels), labels
    for name, objects in seen["objects"]:
        for obj_name, obj in objects.items():
            if isinstance(obj, nn.Module):
                floats = [t for t in obj.state_dict().values() if t.is_floating_point()]
                assert all(t.dtype == torch.float32 for t in floats), (name, obj_name)
