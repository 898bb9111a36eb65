"""--compile=true (src/nn.py: compile_networks): a compiled stage gives the eager losses to float tolerance and the same
checkpoint keys."""

import torch

from scripts.bench.timing import run_stage, write_stage_data
from src.nn import compile_networks
from train_lapo import LAPO


def test_compiled_stage_losses_match_eager(tmp_path):
    path = str(tmp_path / "frames.hdf5")
    write_stage_data(path, batch=4, updates=3, steps=20)
    logs = {c: run_stage("lapo/lam", path, torch.device("cpu"), True, 3, 1, batch=4, compile=c) for c in (False, True)}
    eager, compiled = ([v["lapo/mse_loss"] for v in logs[c].values] for c in (False, True))
    assert len(eager) >= 3 and len(set(eager)) == len(eager)  # every update logged, each a new loss
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-6)


def test_compile_keeps_parameter_names_and_is_off_by_default():
    lam = LAPO(frame_stack=1, latent_dim=4, scale=1)
    names = list(lam.state_dict())
    compile_networks(False, lam)
    assert lam.idm._compiled_call_impl is None
    compile_networks(True, lam)
    assert lam.idm._compiled_call_impl is not None and lam.fdm._compiled_call_impl is not None
    assert list(lam.state_dict()) == names  # checkpoints are the same with and without compile
