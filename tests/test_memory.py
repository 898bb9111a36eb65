"""Where the frames go (src/data.py: watch_frames, place_frames): measured after a stage's first update. The decision
reads torch's own torch.cuda functions (empty_cache, mem_get_info, memory_allocated, max_memory_allocated,
reset_peak_memory_stats) over a faked CUDA runtime and allocator statistics (tests/fake_cuda.py).

The CPU build of torch cannot hold a CUDA tensor: the datasets here compute on the meta device, which stands for the
GPU's memory (frames moved there keep their shape, not their values), while the decision reads the faked cuda:0."""

import pytest
import torch

from src import data as D
from tests.fake_cuda import FakeCuda

GiB = 2**30
H100 = int(79.1 * GiB)  # what torch.cuda.mem_get_info reports as total on an H100 80GB HBM3
CUDA0, GPU = torch.device("cuda", 0), torch.device("meta")
EXAMPLE = "data/example-data.hdf5"


@pytest.fixture
def opened(monkeypatch):
    """load_dataset of the example file as a stage of a GPU run opens it, in a fresh cache."""
    monkeypatch.setattr(D, "_CACHE", {})
    return lambda frames_device="auto", n=2: D.load_dataset(
        EXAMPLE, GPU, max_trajectories=n, frames_device=frames_device
    )


def first_update(gpu: FakeCuda, kept: int, peak: int, *datasets: D.TrajectoryData) -> None:
    """A stage's updates begin, then its first update reads a batch of each dataset: `peak` bytes allocated at its
    top, `kept` after it (weights, gradients, Adam's state); what it freed stays in PyTorch's cache."""
    torch.cuda.init()  # done by the CUDA work before (this fake initialises at once only when memory is in use)
    D.watch_frames(CUDA0)
    for d in datasets:
        d.batch(d.valid_indices(1)[:4], 3, next_obs=True)
    gpu.used, gpu.peak, gpu.cached = kept, max(gpu.peak, peak), peak - kept  # the allocator's running maximum


def line(capsys) -> str:
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_frames_that_fit_go_to_the_gpu_after_the_first_update_and_the_line_says_so(opened, monkeypatch, capsys):
    """After the first update the frames go to the GPU, said in one line with the numbers it decided on; memory
    cached by an earlier stage and by the update is released first (after the IDM's stage 1 PyTorch kept ~10 GiB
    cached: it looked used and BC's frames stayed in host memory). The peak is this stage's, not an earlier one's."""
    gpu = FakeCuda(total=H100, used=3 * GiB, cached=10 * GiB, peak=40 * GiB, patch=monkeypatch)
    data = opened()
    assert data.frames_device == torch.device("cpu") and data.index_device == torch.device("cpu")
    first_update(gpu, 3 * GiB, 15 * GiB, data)
    D.place_frames(CUDA0, "lapo")
    assert data.frames_device == GPU and data.frames.device == GPU
    assert line(capsys) == (
        f"lapo: after the first update, frames 2.3 MiB of {EXAMPLE} moved to cuda:0 (free 76.1 GiB; an update's "
        "peak 12.0 GiB above the 3.0 GiB kept between updates; margin 4.0 GiB; --frames_device overrides)"
    )
    D.place_frames(CUDA0, "lapo")  # decided once: nothing left to move, nothing said
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("over", [0, 1])
def test_the_frames_go_when_they_fit_beside_the_measured_update_and_the_margin(opened, monkeypatch, capsys, over):
    """frames + (peak - allocated after the update) + 5% of the GPU <= free memory: on the byte."""
    gpu = FakeCuda(total=H100, patch=monkeypatch)
    data = opened()
    kept = 3 * GiB
    update = H100 - kept - int(D.MARGIN * H100) - data.frames.nbytes + over
    first_update(gpu, kept, kept + update, data)
    D.place_frames(CUDA0, "bc")
    assert data.frames_device == (torch.device("cpu") if over else GPU)
    said = line(capsys)
    assert ("stay in host memory, they do not fit on the GPU" in said) == bool(over), said
    assert ("moved to cuda:0" in said) != bool(over)


@pytest.mark.parametrize("fits", [True, False])
def test_lapo_masks_are_counted_with_its_frames_and_moved_with_them(opened, monkeypatch, capsys, fits):
    """LAPO with a masked loss keeps a mask per frame where the frames are (19 GiB at the paper's size): frames that
    fit alone stay in host memory when frames + masks do not (they used to go to the GPU and run out)."""
    gpu = FakeCuda(total=H100, patch=monkeypatch)
    data = opened()
    data.masks = torch.zeros((data.num_frames, 1, data.img_hw, data.img_hw), dtype=torch.uint8)
    kept, frames_and_masks = 3 * GiB, data.frames.nbytes * 4 // 3
    update = H100 - kept - int(D.MARGIN * H100) - frames_and_masks + (0 if fits else data.masks.nbytes)
    first_update(gpu, kept, kept + update, data)
    D.place_frames(CUDA0, "lapo")
    where = GPU if fits else torch.device("cpu")
    assert data.frames.device == where and data.masks.device == where
    assert f"frames 3.1 MiB of {EXAMPLE} + masks " in line(capsys)


def test_the_datasets_a_stage_reads_are_decided_together_and_the_others_stay(opened, monkeypatch, capsys):
    """LAOM + supervision reads its full and labeled sets at every update: they go together or not at all (each
    used to see the same free memory). Its evaluation set, read later, and a set it never reads stay in host
    memory and are not counted."""
    gpu = FakeCuda(total=H100, patch=monkeypatch)
    full, labeled, evaluation = opened(n=4), opened(n=2), opened(n=3)
    _ = evaluation.frames  # read by an earlier stage, not by this one
    kept = 3 * GiB
    room = H100 - kept - int(D.MARGIN * H100) - full.frames.nbytes - labeled.frames.nbytes
    first_update(gpu, kept, kept + room + 1, full, labeled)  # one byte too many for both
    D.place_frames(CUDA0, "lapo")
    assert [d.frames_device for d in (full, labeled, evaluation)] == [torch.device("cpu")] * 3
    assert f"frames 7.0 MiB of {EXAMPLE}, {EXAMPLE} stay in host memory" in line(capsys)
    first_update(gpu, kept, kept + room, full, labeled)
    D.place_frames(CUDA0, "lapo")
    assert [d.frames_device for d in (full, labeled, evaluation)] == [GPU, GPU, torch.device("cpu")]
    assert f"frames 7.0 MiB of {EXAMPLE}, {EXAMPLE} moved to cuda:0" in line(capsys)


@pytest.mark.parametrize("frames_device", ["cpu", "pinned"])
def test_frames_device_cpu_or_pinned_keeps_them_in_host_memory(opened, monkeypatch, capsys, frames_device):
    gpu = FakeCuda(total=H100, patch=monkeypatch)
    data = opened(frames_device)
    first_update(gpu, GiB, 2 * GiB, data)  # room for everything
    D.place_frames(CUDA0, "bc")
    assert data.frames_device == data.frames.device == torch.device("cpu") and capsys.readouterr().out == ""


def test_on_the_cpu_nothing_moves_and_nothing_is_said(monkeypatch, capsys):
    """A CPU run: the frames are where the compute is; no torch.cuda call (this CPU build of torch would raise)."""
    monkeypatch.setattr(D, "_CACHE", {})
    data = D.load_dataset(EXAMPLE, "cpu", max_trajectories=2)
    D.watch_frames(torch.device("cpu"))
    data.batch(data.valid_indices(1)[:4], 3)
    D.place_frames(torch.device("cpu"), "bc")
    assert data.frames_device == torch.device("cpu") and capsys.readouterr().out == ""


def test_moved_frames_are_gathered_with_the_same_indices(opened, monkeypatch):
    """The index stream does not move with the frames: the same valid indices, the same epoch permutations and
    future offsets drawn on the host, the same batch shapes after the move as before."""
    gpu = FakeCuda(total=H100, patch=monkeypatch)
    data = opened()
    valid = data.valid_indices(3)

    def draws():
        gen = torch.Generator(valid.device).manual_seed(7)
        idx = next(data.epoch(valid, 8, generator=gen))
        torch.manual_seed(3)
        b = data.batch(idx, 3, future_offset=3, next_obs=True)  # the future offsets: host draws of torch's RNG
        return idx, torch.get_rng_state(), {k: (v.shape, v.dtype, v.device) for k, v in b.items()}

    before = draws()
    first_update(gpu, GiB, 2 * GiB, data)
    D.place_frames(CUDA0, "lapo")
    assert data.frames.device == GPU and data.index_device == torch.device("cpu")
    assert torch.equal(data.valid_indices(3), valid)
    after = draws()
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1]) and after[2] == before[2]


def test_a_stage_places_the_frames_once_after_its_first_full_update_here(tmp_path, monkeypatch):
    """src/stage.py: the peak is measured from the start of the stage's updates, the frames placed after the first
    update this process runs (backward and optimizer step done), a resumed stage's included, and never again."""
    import torch.nn as nn

    from src import stage as S
    from src.run import RunConfig, start_run

    events = []
    monkeypatch.setattr(S, "watch_frames", lambda device: events.append(("watch", device.type)))
    monkeypatch.setattr(S, "place_frames", lambda device, name: events.append(("place", name)))
    run = start_run(RunConfig(device="cpu", run_dir=str(tmp_path / "run"), wandb_mode="disabled", checkpoint_every=2))
    for resumed_at in (0, 2):
        events.clear()
        net = nn.Linear(2, 1)
        stage = S.Stage("bc", "bc.pt", {"net": net}, 4, run)
        assert stage.start == resumed_at
        for step in stage.updates():
            events.append(("update", step))
            net(torch.ones(1, 2)).sum().backward()
            stage.log(step, torch.zeros(()))
            if resumed_at == 0 and step == 2:
                break  # interrupted after the checkpoint of update 2
        first = resumed_at
        assert events[:4] == [("watch", "cpu"), ("update", first), ("place", "bc"), ("update", first + 1)], events
        assert [e for e in events if e[0] == "place"] == [("place", "bc")]
