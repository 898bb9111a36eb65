"""Schedules, EMA, NaN guard and atomic files (the augmentations: tests/test_augs.py)."""

import json

import pytest
import torch
import torch.nn as nn

from src.checkpoint import restore_stage, save_stage
from src.files import write_json
from src.nn import ActionMLP
from src.optim import make_optimizer, make_scheduler, soft_update
from src.stage import NanGuard


def test_linear_warmup_then_decay_to_zero():
    opt = make_optimizer(nn.Linear(2, 2), "adam", 1.0)
    sched = make_scheduler(opt, total_updates=10, warmup_updates=4, kind="linear")
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])  # from lr 0, as released
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1 / 6)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    cos = make_scheduler(make_optimizer(nn.Linear(2, 2), "adamw", 1.0), 10, 0, kind="cosine")
    assert cos.get_last_lr()[0] == pytest.approx(1.0)


def test_weight_decay_skips_vectors():
    opt = make_optimizer(ActionMLP(4, 2), "adamw", 1e-3, 0.1)
    decayed, plain = opt.param_groups
    assert all(p.ndim == 2 for p in decayed["params"]) and decayed["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_optimizer_takes_the_default_implementation_steps(kind):
    """make_optimizer uses the fused kernel (faster on CPU and GPU); its updates are the default implementation's
    to float rounding, weight decay included."""
    torch.manual_seed(0)
    a = ActionMLP(16, 4)
    b = ActionMLP(16, 4)
    b.load_state_dict(a.state_dict())
    start = a.net[0].weight.detach().clone()
    fused = make_optimizer(a, kind, 1e-2, 0.1)
    assert all(g["fused"] for g in fused.param_groups)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    groups = [{"params": [p for p in b.parameters() if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in b.parameters() if p.ndim < 2], "weight_decay": 0.0}]  # fmt: skip
    plain = cls(groups, lr=1e-2, foreach=False)
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    for _ in range(20):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5), (pa - pb).abs().max()
    assert (a.net[0].weight - start).abs().max() > 1e-2  # the steps moved the weights


def test_soft_update_moves_target_by_tau():
    src, tgt = nn.Linear(3, 3), nn.Linear(3, 3)
    before = tgt.weight.detach().clone()
    soft_update(tgt, src, 0.25)
    assert torch.allclose(tgt.weight, 0.75 * before + 0.25 * src.weight)


def test_nan_guard_names_first_bad_update(tmp_path):
    guard = NanGuard("lam", torch.device("cpu"))
    for step, v in enumerate([1.0, 2.0, float("nan"), float("inf")]):
        guard.update(torch.tensor(v), step)
    ckpt = tmp_path / "lam.pt"
    ckpt.write_bytes(b"x")
    with pytest.raises(FloatingPointError, match=r"lam: the loss became NaN or infinite at update 2; .*lam.pt"):
        guard.check(ckpt)


def test_stage_checkpoint_resume_and_skip(tmp_path):
    model = nn.Linear(2, 2)
    opt = make_optimizer(model, "adam", 1e-3)
    save_stage(tmp_path / "s.pt", {"model": model, "optim": opt}, step=7, done=False)
    other = nn.Linear(2, 2)
    step, done = restore_stage(tmp_path / "s.pt", {"model": other, "optim": make_optimizer(other, "adam", 1e-3)})
    assert (step, done) == (7, False) and torch.equal(other.weight, model.weight)
    assert restore_stage(tmp_path / "none.pt", {"model": other}) == (0, False)
    with pytest.raises(ValueError, match="unfinished stage"):
        restore_stage(tmp_path / "x.pt", {"model": other}, load_from=str(tmp_path / "s.pt"))
    save_stage(tmp_path / "done.pt", {"model": model}, step=9, done=True)
    assert restore_stage(tmp_path / "x.pt", {"model": other}, load_from=str(tmp_path / "done.pt")) == (9, True)


def test_write_json_is_atomic(tmp_path):
    write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
