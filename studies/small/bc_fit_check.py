"""Can the small study's BC actor fit its own training data? (studies/small/README.md, "Why no policy learns"): its MSE
on `--samples` fixed transitions after `--updates` updates beside the actions' variance, for the paper's pooled head
and, as a diagnostic, a flat head on the whole 8 x 8 map.

    python -m studies.small.bc_fit_check --data_path runs/small/data/cheetah-run.hdf5
"""

from dataclasses import dataclass

import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F

from src.data import load_dataset, normalize_obs
from src.nn import Actor, ResNetEncoder, weight_init


@dataclass
class Config:
    data_path: str = "runs/small/data/cheetah-run.hdf5"
    samples: int = 256  # the fixed training set, drawn from the first trajectories
    updates: int = 400
    batch_size: int = 32
    learning_rate: float = 1e-3
    encoder_scale: int = 1
    encoder_num_res_blocks: int = 1
    frame_stack: int = 3
    seed: int = 0
    threads: int = 1


class FlatActor(nn.Module):
    """The diagnostic head: the encoder's whole map, flattened, instead of its spatial mean."""

    def __init__(self, in_channels: int, out_dim: int, scale: int, num_res_blocks: int, img_hw: int):
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, scale, False, num_res_blocks)
        self.head = nn.Linear(self.encoder.out_dim(img_hw), out_dim)
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder(obs).flatten(1)
        return self.head(F.relu6(emb)), emb


def fit(actor: nn.Module, obs: torch.Tensor, actions: torch.Tensor, c: Config) -> list[tuple[int, float]]:
    gen = torch.Generator().manual_seed(c.seed)
    optim = torch.optim.Adam(actor.parameters(), c.learning_rate)
    curve = []
    for step in range(c.updates + 1):
        if step % max(1, c.updates // 4) == 0 or step == c.updates:
            with torch.no_grad():
                curve.append((step, F.mse_loss(actor(obs)[0], actions).item()))
        if step == c.updates:
            break
        idx = torch.randint(0, len(obs), (c.batch_size,), generator=gen)
        loss = F.mse_loss(actor(obs[idx])[0], actions[idx])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return curve


@pyrallis.wrap()
def main(c: Config):
    torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)
    data = load_dataset(c.data_path, "cpu", c.frame_stack, min_offset=0, load_states=False, max_trajectories=4)
    valid = data.valid_indices(0)
    idx = valid[torch.randperm(len(valid), generator=torch.Generator().manual_seed(c.seed))[: c.samples]]
    batch = data.batch(idx, c.frame_stack)
    obs, actions = normalize_obs(batch["obs"]), batch["actions"]
    in_ch, act_dim = 3 * c.frame_stack, actions.shape[1]
    variance = actions.var(0, unbiased=False).mean().item()
    print(f"{c.data_path}: {len(obs)} fixed samples, actions' variance (mean-action MSE) {variance:.2f}")
    heads = {
        "pooled (the paper's actor)": Actor(in_ch, act_dim, c.encoder_scale, False, c.encoder_num_res_blocks),
        "flat (diagnostic)": FlatActor(in_ch, act_dim, c.encoder_scale, c.encoder_num_res_blocks, data.img_hw),
    }
    for name, actor in heads.items():
        torch.manual_seed(c.seed)
        curve = fit(actor, obs, actions, c)
        print(f"{name:28s} MSE on the fixed set at updates " + ", ".join(f"{s}: {m:.2f}" for s, m in curve))


if __name__ == "__main__":
    main()
