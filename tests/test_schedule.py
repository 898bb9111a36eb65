"""The released schedule of every stage of every method, built from the example configs without training: the
learning rate of each update, the batch sizes of an epoch (the last partial batch kept or dropped), the number of
updates, and the latent-BC debug head (docs/FAITHFULNESS.md, "Optimisation, schedules, precision")."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import train_bc
import train_idm
import train_laom
import train_laom_labels
import train_lapo
import train_lapo_mask
from src import stage as stage_module
from src.optim import bf16_on, cpu_has_native_bf16, setup_backends
from tests.test_faithfulness import lrs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"
N_OFFSET_10 = 1260  # transitions of the example data with t + 10 <= T - 1 (14 trajectories)
N_OFFSET_1 = 1386  # ... with t + 1 <= T - 1 (consecutive pairs)
pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="needs data/example-data.hdf5")


def lr_sequence(total: int, warmup: int, peak: float = 1e-3) -> list[float]:
    """The learning rate of each update of the "linear" schedule at this peak (tests/test_faithfulness.py: lrs)."""
    return [peak * lr for lr in lrs("linear", total, warmup, 0.0)]


def test_warmup_starts_from_lr_zero_as_released():
    """lr * i / warmup for update i < warmup, then lr * (total - i) / (total - warmup)."""
    assert lr_sequence(4, 2) == pytest.approx([0.0, 5e-4, 1e-3, 5e-4], abs=1e-15)
    assert lr_sequence(4, 2)[0] == 0.0  # the first update runs at lr 0
    assert lr_sequence(5, 0) == pytest.approx([1e-3, 8e-4, 6e-4, 4e-4, 2e-4])
    # a warm-up longer than the stage never reaches the peak
    assert lr_sequence(3, 6) == pytest.approx([0.0, 1e-3 / 6, 2e-3 / 6])


class Planned(Exception):
    """Raised where the stage under test would run its first update."""


def plan(module, config: str, target: str, monkeypatch, tmp_path, *args: str) -> dict:
    """Runs `module`'s train() on the example config until stage `target` would start its updates; the stages before
    it run no update and compute no final metric. Returns, for each stage built, what it was built with: its total,
    its objects, the Stage keyword arguments, and the batch sizes of its first epoch and one more, drawn from the
    very stream its loop reads."""
    stages: dict = {}
    streams: list = []
    real_epochs = stage_module.infinite_epochs

    class Recorded(stage_module.Stage):
        def __init__(self, name, ckpt_name, objects, total, run, *a, **kw):
            super().__init__(name, ckpt_name, objects, total, run, *a, **kw)
            stages[name] = dict(total=total, objects=objects, **kw)

        def updates(self):
            stages[self.name]["stream"] = streams[-1]  # made between the Stage and its updates
            if self.name == target:
                raise Planned
            return iter(())

        def final_metrics(self, compute):
            return {}

    def epochs(data, valid, batch_size, drop_last=True, **kw):
        stream = real_epochs(data, valid, batch_size, drop_last, **kw)
        streams.append((len(valid), stream))
        return stream

    monkeypatch.setattr(module, "Stage", Recorded)
    monkeypatch.setattr(stage_module, "infinite_epochs", epochs)
    argv = [f"--config_path={ROOT / 'configs' / 'example' / config}", f"--run_dir={tmp_path}", "--device=cpu"]
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv, "--wandb_mode=disabled", *args])
    monkeypatch.chdir(ROOT)
    with pytest.raises(Planned):
        module.train()
    for s in stages.values():
        s["num_samples"], stream = s.pop("stream")
        per_epoch = s.get("updates_per_epoch") or s["total"]
        s["first_epochs"] = [len(next(stream)) for _ in range(per_epoch + 1)]
    return stages


def check_debug_head(bc: dict, hidden: int) -> None:
    """128 hidden units for LAPO, 256 for LAOM; AdamW's default weight decay 0.01 on all its parameters (biases
    included); the stage's schedule (a group of the actor's optimizer, under its scheduler)."""
    head, optim, sched = bc["objects"]["debug_head"], bc["objects"]["optim"], bc["objects"]["sched"]
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)][:2] == [hidden, hidden]
    groups = [g for g in optim.param_groups if any(q is head.net[0].weight for q in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    assert {id(q) for q in groups[0]["params"]} == {id(q) for q in head.parameters()}  # biases included
    assert sched.optimizer is optim and len(sched.base_lrs) == len(optim.param_groups)
    assert all(g["weight_decay"] == 0.0 for g in optim.param_groups if g is not groups[0])  # the actor: None


@pytest.mark.parametrize(
    "module, config, keep_last, hidden",
    [
        (train_lapo, "lapo.yaml", False, 128),  # the released LAPO stage 1 drops the last partial batch
        (train_lapo_mask, "lapo-mask.yaml", False, 128),  # a LAPO
        (train_laom, "laom.yaml", True, 256),
        (train_laom_labels, "laom-labels.yaml", True, 256),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_latent_methods_stage1_and_latent_bc(module, config, keep_last, hidden, monkeypatch, tmp_path):
    stages = plan(module, config, "bc", monkeypatch, tmp_path)
    lam, bc = stages["lapo"], stages["bc"]
    assert lam["num_samples"] == N_OFFSET_10
    full, rest = divmod(N_OFFSET_10, 32)  # 39 full batches and 12 samples
    if keep_last:  # ceil(N / B) batches per epoch, the last one partial
        assert lam["updates_per_epoch"] == full + 1 and lam["first_epochs"] == [32] * full + [rest, 32]
        labeled = lam["batch_size"] - 32  # LAOM + supervision: its labeled batch, whole at every update
        assert lam["epoch_samples"] == N_OFFSET_10 + labeled * (full + 1)  # samples/s counts the partial batch
    else:  # floor(N / B)
        assert lam["updates_per_epoch"] == full and lam["first_epochs"] == [32] * (full + 1)
    assert lam["total"] == lam["updates_per_epoch"]  # num_epochs: 1
    assert lam["objects"]["sched"].get_last_lr()[0] == 0.0  # the warm-up starts from lr 0
    # latent BC: floor(N / B) batches of consecutive pairs, as released
    assert bc["num_samples"] == N_OFFSET_1 and bc["total"] == N_OFFSET_1 // 32 and set(bc["first_epochs"]) == {32}
    check_debug_head(bc, hidden)


def test_idm_runs_whole_epochs_with_the_last_partial_batch(monkeypatch, tmp_path):
    """The released IDM stage: ceil(N / B) batches per epoch and batches_per_epoch * floor(total_updates /
    batches_per_epoch) updates; BC on its labels drops the last partial batch."""
    stages = plan(train_idm, "idm.yaml", "bc", monkeypatch, tmp_path, "--idm.total_updates=200")
    idm, bc = stages["idm"], stages["bc"]
    assert idm["num_samples"] == N_OFFSET_1 and idm["updates_per_epoch"] == 44  # 43 batches of 32 and one of 10
    assert idm["first_epochs"] == [32] * 43 + [10, 32] and idm["total"] == 4 * 44  # floor(200 / 44) = 4 epochs
    factor = idm["objects"]["sched"].lr_lambdas[0]
    assert factor(0) == 0.0 and factor(22) == pytest.approx(1.0)  # warm-up: 0.5 epoch = 22 updates
    assert bc["total"] == N_OFFSET_1 // 32 and set(bc["first_epochs"]) == {32}


def test_bc_runs_exactly_total_updates(monkeypatch, tmp_path):
    bc = plan(train_bc, "bc.yaml", "bc", monkeypatch, tmp_path)["bc"]
    assert bc["total"] == 50 and set(bc["first_epochs"]) == {32}


def test_precision_auto_is_bf16_where_the_cpu_has_native_bf16(tmp_path):
    """precision "auto": bf16 autocast on CUDA and on a CPU with AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo),
    fp32 on any other CPU; "bf16" and "fp32" force one."""
    native = tmp_path / "native"
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx512f amx_tile amx_bf16\n")
    older = tmp_path / "older"
    older.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_has_native_bf16(str(native)) and cpu_has_native_bf16(str(amx))
    assert not cpu_has_native_bf16(str(older)) and not cpu_has_native_bf16(str(tmp_path / "missing"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    try:
        setup_backends(cpu, "auto")
        assert bf16_on(cuda) and bf16_on(cpu) == cpu_has_native_bf16()
        setup_backends(cpu, "fp32")
        assert not bf16_on(cpu) and not bf16_on(cuda)
        setup_backends(cpu, "bf16")
        assert bf16_on(cpu)
    finally:
        setup_backends(cpu, "auto")
