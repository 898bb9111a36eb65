import os
import signal

import pytest

# Headless rendering through EGL (Mesa on CPU machines, the driver on GPUs), before anything imports dm_control.
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def fp32():
    """Training autocast off for the test (then "auto" again): for a test that compares numbers with an fp32
    computation, whatever precision "auto" picks on this machine (bf16 on a CPU with native bf16)."""
    import torch

    from src.optim import setup_backends

    setup_backends(torch.device("cpu"), "fp32")
    yield
    setup_backends(torch.device("cpu"), "auto")


# A suite started in the background without job control (`pytest ... &` in a script, nohup) inherits SIGINT ignored,
# and the scripts then leave Ctrl-C alone as they should (src/stage.py): the tests that stop a run with SIGINT
# (tests/test_exactness.py) need it delivered, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
