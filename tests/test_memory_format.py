"""Convolutional networks are built channels_last (docs/SPEED.md): the same outputs and gradients as the contiguous
(NCHW) networks of earlier versions, the same state_dict names, and a stage checkpoint written by an NCHW network
resumes correctly (the optimizer state is brought to its parameter's layout)."""

import pytest
import torch
import torch.nn as nn

import train_bc
import train_idm
import train_laom
import train_laom_labels
import train_lapo
import train_lapo_mask
from src.checkpoint import restore_stage, save_stage
from src.data import Shapes
from src.optim import make_optimizer

SHAPES = Shapes(6, 17, 64)


def tiny(module):
    cfg = module.Config()
    for name in ("lapo", "idm", "bc"):
        section = getattr(cfg, name, None)
        if section is None:
            continue
        for field, value in dict(encoder_scale=1, latent_action_dim=64, act_head_dim=32, obs_head_dim=32).items():
            if hasattr(section, field):
                setattr(section, field, value)
    return cfg


def lam_outputs(lam, x, y):
    """The conv network's outputs on (o_t, o_{t+k}), whatever its method."""
    if hasattr(lam, "predict_next"):  # LAOM, LAOM + supervision
        z, e_t = lam.latent_action(x, y)
        outs = [lam.predict_next(e_t, z)]
        return outs + [lam.action_head(z)] if hasattr(lam, "action_head") else outs
    return [lam(x, y)[0]]  # LAPO's reconstruction; the IDM's actions


NETWORKS = [
    (train_lapo, "lam", lam_outputs),
    (train_lapo_mask, "lam", lam_outputs),
    (train_laom, "lam", lam_outputs),
    (train_laom_labels, "lam", lam_outputs),
    (train_idm, "idm", lam_outputs),
    (train_bc, "actor", lambda actor, x, y: list(actor(x))),
]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # numerics compared on one thread
    yield
    torch.set_num_threads(threads)


def build(module, name: str) -> nn.Module:
    args = (tiny(module), SHAPES) if module is train_bc else (tiny(module), SHAPES, name)
    return module.build_models(*args)[name]


@pytest.mark.parametrize("module, name, outputs", NETWORKS, ids=[f"{m.__name__}-{n}" for m, n, _ in NETWORKS])
def test_channels_last_network_equals_the_contiguous_one(module, name, outputs, one_thread):
    torch.manual_seed(0)
    net = build(module, name)
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # (a 1x1 kernel is both)
    old = build(module, name).to(memory_format=torch.contiguous_format)  # the layout of earlier versions
    old.load_state_dict(net.state_dict())  # the same names: checkpoints load both ways
    net.load_state_dict(old.state_dict())
    x, y = torch.rand(2, 4, 9, 64, 64) * 2 - 1
    losses = []
    for network in (net, old):
        outs = outputs(network, x, y)
        sum(o.float().square().mean() for o in outs).backward()
        losses.append(outs)
    for a, b in zip(*losses, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for (key, p), q in zip(net.named_parameters(), old.parameters(), strict=True):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=key)


def test_nchw_checkpoint_resumes_into_a_channels_last_network(tmp_path):
    """A stage checkpoint written by an NCHW network (before channels_last) resumes with the same Adam updates:
    the fused kernel would otherwise read its contiguous state in the channels_last parameter's order."""
    torch.manual_seed(0)
    old = nn.Conv2d(3, 8, 3).to(memory_format=torch.contiguous_format)
    old_opt = make_optimizer(old, "adam", 0.1)
    old(torch.rand(2, 3, 8, 8)).square().mean().backward()
    old_opt.step()
    save_stage(tmp_path / "s.pt", {"model": old, "optim": old_opt}, step=1, done=False)

    new = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    new_opt = make_optimizer(new, "adam", 0.1)
    restore_stage(tmp_path / "s.pt", {"model": new, "optim": new_opt})
    x = torch.rand(2, 3, 8, 8)
    for model, opt in ((old, old_opt), (new, new_opt)):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    torch.testing.assert_close(new.weight, old.weight, rtol=1e-5, atol=1e-6)
    assert new.weight.is_contiguous(memory_format=torch.channels_last)
