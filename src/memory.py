"""GPU memory a training stage needs beside its datasets, estimated from its networks: the frames go to the GPU only
when they fit next to it (src/data.py: _choose_frames_device).

The stage's networks are built on the meta device (no memory, no compute) and its forward runs there once at the
stage's batch size: the tensors autograd saves for the backward pass are counted as they are saved.

    weights      trained parameters x 16 bytes (fp32 weight, gradient, Adam's two moments), + 4 bytes per parameter
                 of the copies a stage keeps without training them (EMA targets); networks trained by an earlier
                 stage are on the GPU already and counted in its free memory
    activations  the tensors saved for backward (2 bytes a value in bf16 autocast, except inside normalisation
                 layers, which autocast runs in fp32; + the bf16 copies of conv / linear weights), + the batch's
                 inputs in fp32, + twice the largest saved tensor or no-grad layer output (the gradient buffers alive
                 during backward; a frozen network's forward)
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

ADAM_BYTES_PER_PARAM = 16  # fp32 weight + gradient + exp_avg + exp_avg_sq
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)  # layers autocast runs in fp32


@dataclass
class StageMemory:
    weights: int  # bytes: weights, gradients and optimizer states of the trained networks, EMA copies
    activations: int  # bytes: saved activations, inputs and backward buffers of one update

    @property
    def total(self) -> int:
        return self.weights + self.activations


def meta_batch(*shape: int) -> torch.Tensor:
    """An fp32 input of this shape on the meta device, e.g. meta_batch(512, 9, 64, 64): observations [B, 3k, H, W]."""
    return torch.empty(shape, device="meta")


def stage_memory(
    step: Callable[[], object],
    trained: Sequence[nn.Module],
    inputs: Sequence[torch.Tensor],
    bf16: bool,
    held: Sequence[nn.Module] = (),
) -> StageMemory:
    """What one update of a stage holds on the GPU. step: the stage's forward on `inputs` (meta tensors at its batch
    size) through its networks built on the meta device: the `trained` ones with gradients, frozen ones (trained by
    an earlier stage) under torch.no_grad(). held: networks kept without training (EMA targets)."""
    params = {id(p): p.numel() for m in trained for p in m.parameters()}  # a shared parameter counts once
    value = 2 if bf16 else 4  # bytes of a saved floating-point value
    saved: dict[int, int] = {}  # id of a saved tensor -> its bytes (a tensor saved by several ops counts once)
    keep: list[torch.Tensor] = []  # saved tensors stay alive until counted: their ids stay unique
    outputs = [0]  # the largest layer output of a no-grad forward
    in_norm = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in params and id(t._base) not in params:  # a weight (or its transpose) counts with the weights
            fp32 = in_norm[0] > 0 or not t.is_floating_point()
            saved[id(t)] = t.numel() * (t.element_size() if fp32 else value)
            keep.append(t)
        return t

    def enter(module, args) -> None:
        in_norm[0] += isinstance(module, NORMS)

    def leave(module, args, out) -> None:
        in_norm[0] -= isinstance(module, NORMS)
        if not torch.is_grad_enabled() and isinstance(out, torch.Tensor):
            outputs[0] = max(outputs[0], out.numel() * out.element_size())

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(enter)]
    hooks.append(torch.nn.modules.module.register_module_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
    finally:
        for h in hooks:
            h.remove()
    layers = nn.Linear | nn.Conv2d | nn.ConvTranspose2d  # their weights are cast to bf16 by autocast
    casts = sum(m.weight.numel() for net in trained for m in net.modules() if isinstance(m, layers))
    activations = sum(saved.values()) + sum(t.numel() * 4 for t in inputs)
    activations += 2 * max([outputs[0], *saved.values()]) + (2 * casts if bf16 else 0)
    weights = ADAM_BYTES_PER_PARAM * sum(params.values())
    weights += 4 * sum(p.numel() for m in held for p in m.parameters())
    return StageMemory(weights=weights, activations=activations)


def actor_memory(
    actor: nn.Module,
    batch_size: int,
    frame_stack: int,
    img_hw: int,
    bf16: bool,
    label: Callable | None = None,
    head: nn.Module | None = None,
) -> StageMemory:
    """An Actor trained on batches of o_t [B, 3k, H, W]: latent BC (label: the frozen LAM's latent action of
    (o_t, o_{t+1}), run without gradients; head: the debug head on the detached output), BC on IDM labels, BC."""
    obs = meta_batch(batch_size, 3 * frame_stack, img_hw, img_hw)

    def step() -> None:
        if label is not None:
            with torch.no_grad():
                label(obs, obs)
        pred = actor(obs)[0]
        if head is not None:
            head(pred.detach())

    trained = [actor] + ([head] if head is not None else [])
    return stage_memory(step, trained, [obs, obs] if label is not None else [obs], bf16)


def decoder_memory(actor: nn.Module, decoder: nn.Module, batch_size: int, frame_stack: int, img_hw: int, bf16: bool):
    """The action decoder's stage: the frozen actor's latent action of o_t without gradients, then the decoder."""
    obs = meta_batch(batch_size, 3 * frame_stack, img_hw, img_hw)

    def step() -> None:
        with torch.no_grad():
            z = actor(obs)[0]  # [B, Z]
        decoder(z)

    return stage_memory(step, [decoder], [obs], bf16)


def latent_policy_memory(
    build: Callable[..., dict[str, nn.Module]],
    stage: str,
    bc_batch_size: int,
    decoder_batch_size: int,
    frame_stack: int,
    img_hw: int,
    bf16: bool,
) -> StageMemory:
    """Stages 2 and 3 of the latent-action scripts (train_lapo, train_lapo_mask, train_laom, train_laom_labels):
    "bc", latent BC on the frozen LAM's labels with its debug head; "decoder", the action decoder on the frozen
    actor's latent actions. build(*names): the script's networks of those names (its build_models)."""
    if stage not in ("bc", "decoder"):
        raise ValueError(f"stage={stage!r}: latent_policy_memory covers the 'bc' and 'decoder' stages")
    with torch.device("meta"):
        m = build("lam", "actor", "debug_head") if stage == "bc" else build("actor", "decoder")
    if stage == "bc":
        return actor_memory(m["actor"], bc_batch_size, frame_stack, img_hw, bf16, m["lam"].label, m["debug_head"])
    return decoder_memory(m["actor"], m["decoder"], decoder_batch_size, frame_stack, img_hw, bf16)
