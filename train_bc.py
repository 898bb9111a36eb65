"""Behaviour cloning from pixels (paper, Appendix E and F, Tables 9 and 10).

One stage: an Actor (ResNet encoder, scale 32 -> mean pool -> ReLU6 -> Linear) regresses the true actions of
the given dataset with MSE, then is evaluated in the DCS environment rebuilt from the dataset's attributes.
Two uses, one script:
- the BC baseline of each label budget: `--bc.data_path=<labeled-1000xN.hdf5> --bc.total_updates=10000`
  (configs/bc.yaml);
- BC on the full dataset with all actions revealed, whose returns normalise every score:
  `--bc.data_path=<full.hdf5> --bc.num_epochs=10` (configs/bc-full.yaml).

    python -m train_bc --config_path configs/bc.yaml --bc.data_path data/example-data.hdf5
"""

from dataclasses import dataclass, field
from typing import Optional

import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F

from src import dist
from src.augs import Augmenter
from src.data import Shapes, normalize_obs
from src.evaluation import evaluate_for_dataset
from src.nn import Actor, compile_networks
from src.optim import autocast, make_optimizer
from src.run import Run, RunConfig, main, start_run
from src.stage import Stage


@dataclass
class BCConfig:
    data_path: str = "data/example-data.hdf5"  # HDF5 dataset with true actions (labeled subset or full set)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    num_epochs: int = 10  # passes over the data (ignored when total_updates is set)
    total_updates: Optional[int] = None  # number of updates; overrides num_epochs (the baseline uses 10000)
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak AdamW learning rate
    weight_decay: Optional[float] = 0.0  # AdamW weight decay (never on biases / norms)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    lr_schedule: str = "cooldown"  # cooldown (released BC: constant, then 1-sqrt decay), linear, cosine, constant
    cooldown_ratio: float = 0.0  # fraction of the updates in the final decay (0, the paper's: constant lr)
    grad_norm: Optional[float] = None  # gradient-norm clipping (None: off)
    frame_stack: int = 3  # stacked frames per observation
    encoder_scale: int = 32  # channel multiplier of the ResNet encoder
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder block
    dropout: float = 0.0  # dropout inside the residual units
    use_aug: bool = False  # random per-image augmentations of the observations
    eval_episodes: int = 25  # evaluation episodes (seeds eval_seed + i)
    eval_seed: int = 0  # seed of the first evaluation episode
    dcs_backgrounds_path: Optional[str] = None  # DAVIS folder or "builtin" (None: as recorded in the dataset)
    dcs_backgrounds_split: str = "train"  # background videos of the evaluation environment (train / val)
    eval_use_blur: bool = False  # blur evaluation frames as the (blurred) dataset's were (scripts/blur_hdf5_data.py)
    eval_blur_model_path: Optional[str] = None  # DepthAnything V2 folder, for a depth-blurred dataset (None: HF cache)
    checkpoint_path: Optional[str] = None  # a finished bc.pt of another run: skip training, evaluate it


@dataclass
class Config(RunConfig):
    name: str = "bc"  # run name (wandb and default run directory)
    bc: BCConfig = field(default_factory=BCConfig)


def build_models(cfg: Config, shapes: Shapes) -> dict[str, nn.Module]:
    """The actor, freshly initialised: what the stage trains and scripts/fidelity/count_params.py counts."""
    c = cfg.bc
    actor = Actor(
        3 * c.frame_stack, shapes.act_dim, c.encoder_scale, c.encoder_deep, c.encoder_num_res_blocks, c.dropout
    )
    # convolution weights channels_last (docs/SPEED.md): the same parameters and state_dict, faster convolutions
    return {"actor": actor.to(memory_format=torch.channels_last)}


def train_bc(run: Run) -> Actor:
    cfg, c = run.cfg, run.cfg.bc
    data = run.load(c.data_path, c.frame_stack, c.max_trajectories, min_offset=0)
    valid = data.valid_indices(0)
    run.seed_stage("bc")  # its random streams from (seed, stage name) alone, before its networks
    actor = build_models(cfg, data.shapes)["actor"].to(run.device)
    compile_networks(cfg.compile, actor)
    optim = make_optimizer(actor, "adamw", c.learning_rate, c.weight_decay)
    stage, batches = Stage.on_data("bc", "bc.pt", {"actor": actor, "optim": optim}, run, c, data, valid)
    aug = Augmenter() if c.use_aug else None
    for step in stage.updates():
        batch = data.batch(next(batches), c.frame_stack)
        obs = normalize_obs(batch["obs"])  # [B, 3k, H, W] in [-1, 1]
        if aug is not None:
            obs = aug(obs)
        with autocast(run.device):
            pred, _ = actor(obs)
        loss = F.mse_loss(pred.float(), batch["actions"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(actor)  # the gradient over the global batch (all ranks)
        if c.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(actor.parameters(), c.grad_norm)
        optim.step()
        stage.sched.step()
        stage.log(step, loss, mse_loss=loss)

    actor.eval()
    policy = lambda obs: actor(normalize_obs(obs))[0]  # fp32: evaluation runs without autocast
    stage.final_metrics(lambda: evaluate_for_dataset(policy, data.attrs, c, cfg, c.frame_stack, run.device, "bc"))
    return actor


@pyrallis.wrap()
def train(cfg: Config) -> dict:
    run = start_run(cfg)
    train_bc(run)
    return run.finish()


if __name__ == "__main__":
    main(train)
