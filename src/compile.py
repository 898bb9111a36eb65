"""torch.compile of a stage's networks: the top-level `compile` field of every method script (off by default).

    compile_networks(cfg.compile, lam)   # once, after the stage has built its networks and before its loop

Each child module of the given networks that holds parameters (the encoders and heads) gets a compiled forward,
in place (nn.Module.compile): the module's own forward, its other methods (LAOM's encode / latent_action) and the
loop stay as they are, and parameter names are unchanged, so checkpoints are the same with and without compile.
The first updates of a compiled stage are slow (compilation); the losses match the eager ones to float tolerance
(tests/test_compile.py).
"""

import torch.nn as nn


def compile_networks(enabled: bool, *networks: nn.Module) -> None:
    """With `enabled`, compiles the forward of each parameter-holding child of each network, in place."""
    if not enabled:
        return
    for network in networks:
        for child in network.children():
            if next(child.parameters(), None) is not None:
                child.compile()
