"""The GPU memory of a stage's networks (src/memory.py): a hand count on a small network, and the paper's stages."""

import pyrallis
import pytest
import torch
import torch.nn as nn

from src import optim
from src.data import Shapes
from src.memory import meta_batch, stage_memory

GiB = 2**30


def _small():
    """Linear(10 -> 20) -> ReLU -> Linear(20 -> 5) -> LayerNorm(5), and a frozen Linear(10 -> 100): meta device."""
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5), nn.LayerNorm(5)), nn.Linear(10, 100)


@pytest.mark.parametrize("bf16", [False, True])
def test_a_small_network_by_hand(bf16):
    net, frozen = _small()
    x = meta_batch(4, 10)

    def step() -> None:
        with torch.no_grad():
            frozen(x)  # [4, 100]: the largest tensor of the update, alive beside its input
        net(x)

    memory = stage_memory(step, [net], [x], bf16, held=[frozen])
    params = 10 * 20 + 20 + 20 * 5 + 5 + 2 * 5  # 335
    assert memory.weights == 16 * params + 4 * (10 * 100 + 100)  # weight, gradient, 2 Adam moments; a held copy
    v = 2 if bf16 else 4
    # saved for backward: x [4, 10] (first linear), ReLU's output [4, 20] (ReLU and the second linear, once);
    # inside the LayerNorm, fp32: its input [4, 5], mean and rstd [4, 1] each
    saved = (4 * 10 + 4 * 20) * v + (4 * 5 + 4 + 4) * 4
    inputs = 4 * 10 * 4
    largest = 2 * 4 * 100 * 4  # the frozen layer's output, twice
    casts = 2 * (10 * 20 + 20 * 5) if bf16 else 0  # bf16 copies of the linear weights
    assert memory.activations == saved + inputs + largest + casts


@pytest.fixture
def paper_bf16():
    before = optim._precision["bf16"]
    optim._precision["bf16"] = True  # --precision=auto on CUDA, as the paper's runs
    yield
    optim._precision["bf16"] = before


def _estimate(module: str, config: str, stage: str | None):
    import importlib

    m = importlib.import_module(module)
    cfg = pyrallis.parse(m.Config, config_path=config, args=[])
    shapes = Shapes(6, 17, 64)  # cheetah-run: 6 actions, 17 states, 64 px
    return m.gpu_memory(cfg, shapes, stage) if stage else m.gpu_memory(cfg, shapes)


def test_lapo_stage_1_at_the_papers_size(paper_bf16):
    """Issue 20's count for LAPO's stage 1 at batch 512 in bf16: weights + gradients + Adam ~3 GiB (211,847,849 LAM
    parameters and the probe), activations ~9 GiB."""
    memory = _estimate("train_lapo", "configs/lapo.yaml", "lapo")
    assert memory.weights == 16 * (211_847_849 + 8192 * 6 + 6)
    assert 9 * GiB < memory.activations < 12 * GiB and 10 * GiB < memory.total < 15 * GiB


@pytest.mark.parametrize(
    "module, config, stage, low, high",
    [
        ("train_laom", "configs/laom.yaml", "lapo", 4, 10),
        ("train_laom_labels", "configs/laom-labels.yaml", "lapo", 4, 11),
        ("train_bc", "configs/bc.yaml", None, 6, 13),
        ("train_lapo", "configs/lapo.yaml", "decoder", 0.5, 4),
    ],
)
def test_the_papers_other_stages(paper_bf16, module, config, stage, low, high):
    memory = _estimate(module, config, stage)
    assert low * GiB < memory.total < high * GiB, memory


def test_a_smaller_batch_and_fp32_change_the_estimate(paper_bf16):
    import train_lapo

    cfg = pyrallis.parse(train_lapo.Config, config_path="configs/lapo.yaml", args=["--lapo.batch_size=256"])
    half = train_lapo.gpu_memory(cfg, Shapes(6, 17, 64), "lapo")
    full = _estimate("train_lapo", "configs/lapo.yaml", "lapo")
    assert half.weights == full.weights and 0.45 < half.activations / full.activations < 0.55
    optim._precision["bf16"] = False
    fp32 = _estimate("train_lapo", "configs/lapo.yaml", "lapo")
    assert 1.8 < fp32.activations / full.activations < 2.1


@pytest.mark.parametrize(
    "module, config",
    [
        ("train_lapo", "configs/lapo.yaml"),
        ("train_lapo_mask", "configs/lapo-mask.yaml"),
        ("train_laom", "configs/laom.yaml"),
        ("train_laom_labels", "configs/laom-labels.yaml"),
    ],
)
def test_latent_bc_and_decoder_stages_of_every_lam_script(paper_bf16, module, config):
    """The four LAM scripts' stages 2 and 3 share src/memory.py's latent_policy_memory: latent BC counts the actor
    and its debug head trained beside the frozen LAM's labels, the decoder stage the decoder beside the frozen
    actor, each at its own batch size."""
    import importlib

    from src.memory import actor_memory, decoder_memory

    m = importlib.import_module(module)
    cfg = pyrallis.parse(m.Config, config_path=config, args=[])
    shapes = Shapes(6, 17, 64)
    with torch.device("meta"):
        nets = m.build_models(cfg, shapes, "lam", "actor", "debug_head", "decoder")
    b, hw = cfg.bc, shapes.img_hw
    bc = actor_memory(nets["actor"], b.batch_size, b.frame_stack, hw, True, nets["lam"].label, nets["debug_head"])
    decoder = decoder_memory(nets["actor"], nets["decoder"], cfg.decoder.batch_size, b.frame_stack, hw, True)
    assert m.gpu_memory(cfg, shapes, "bc") == bc and bc.weights > 0 and bc.activations > 0
    assert m.gpu_memory(cfg, shapes, "decoder") == decoder and decoder.weights > 0
    with pytest.raises(ValueError, match="'idm'"):
        m.gpu_memory(cfg, shapes, "idm")
