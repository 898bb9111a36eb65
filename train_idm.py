"""IDM baseline (paper Appendix E and F, Table 8; docs/FAITHFULNESS.md).

Two stages, one script:
1. An inverse dynamics model predicts the true action a_t from (o_t, o_{t+1}), trained on the few labeled
   trajectories only. One ResNet encoder (scale 12) embeds both observations (one batch of 2B); the head is the
   multi-layer MLP with re-fed inputs of LAOM's latent IDM, with A outputs. Its action MSE on an evaluation set
   with novel distractors (paper Fig. 9a) is reported when `idm.eval_data_path` is given.
2. An Actor (scale 32, A outputs) is cloned on the full dataset, relabeled on the fly by the frozen IDM, then
   evaluated in the DCS environment.

    python -m train_idm --config_path configs/idm.yaml \\
        --idm.data_path=<labeled-1000xN.hdf5> --bc.data_path=<full.hdf5>
"""

from dataclasses import dataclass, field
from typing import Optional

import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F

from src import dist
from src.data import Shapes, TrajectoryData, normalize_obs
from src.errors import ConfigError
from src.evaluation import evaluate_for_dataset
from src.nn import Actor, ReFedMLP, ResNetEncoder, compile_networks, weight_init
from src.optim import autocast, make_optimizer
from src.run import Run, RunConfig, main, start_run
from src.stage import Stage


@dataclass
class IDMConfig:
    data_path: str = "data/example-data.hdf5"  # labeled trajectories (labeled-1000xN subset)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    eval_data_path: Optional[str] = None  # evaluation set (novel distractors) for the action MSE (None: skip)
    eval_every: int = 1000  # updates between action-MSE evaluations on eval_data_path (and at the end)
    total_updates: int = 10000  # about this many updates: whole epochs, total_updates // batches per epoch (>= 1)
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak Adam learning rate
    weight_decay: Optional[float] = None  # weight decay (never on biases / norms)
    warmup_epochs: float = 3.0  # linear warm-up length, in epochs of the labeled data
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    grad_norm: Optional[float] = None  # gradient-norm clipping (None: off)
    frame_stack: int = 3  # stacked frames per observation
    future_obs_offset: int = 1  # the IDM sees o_{t+k}, k uniform in 1..offset (1: consecutive frames)
    encoder_scale: int = 12  # channel multiplier of the ResNet encoder
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder block
    encoder_dropout: float = 0.0  # dropout inside the encoder's residual units
    act_head_dim: int = 1024  # hidden size of the action head
    act_head_dropout: float = 0.0  # dropout inside the action head's MLP blocks
    use_aug: bool = False  # not supported (kept for the paper's config names); must be False
    checkpoint_path: Optional[str] = None  # a finished idm.pt of another run: skip this stage, reuse its IDM


@dataclass
class BCConfig:
    data_path: str = "data/example-data.hdf5"  # dataset to clone, relabeled by the IDM (the full set)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    num_epochs: int = 10  # passes over the data
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak AdamW learning rate
    weight_decay: Optional[float] = None  # AdamW weight decay (never on biases / norms)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    grad_norm: Optional[float] = None  # gradient-norm clipping (None: off)
    frame_stack: int = 3  # stacked frames per observation (must match the IDM's)
    encoder_scale: int = 32  # channel multiplier of the actor's encoder
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder block
    dropout: float = 0.0  # dropout inside the residual units
    use_aug: bool = False  # not supported (kept for the paper's config names); must be False
    eval_episodes: int = 25  # evaluation episodes (seeds eval_seed + i)
    eval_seed: int = 0  # seed of the first evaluation episode
    dcs_backgrounds_path: Optional[str] = None  # DAVIS folder or "builtin" (None: as recorded in the dataset)
    dcs_backgrounds_split: str = "train"  # background videos of the evaluation environment (train / val)
    eval_use_blur: bool = False  # blur evaluation frames as the (blurred) dataset's were (scripts/blur_hdf5_data.py)
    eval_blur_model_path: Optional[str] = None  # DepthAnything V2 folder, for a depth-blurred dataset (None: HF cache)
    checkpoint_path: Optional[str] = None  # a finished bc.pt of another run: skip training, evaluate it


@dataclass
class Config(RunConfig):
    name: str = "idm"  # run name (wandb and default run directory)
    idm_only: bool = False  # end the run after the IDM (its action MSE on eval_data_path is the result), e.g. tuning
    idm: IDMConfig = field(default_factory=IDMConfig)
    bc: BCConfig = field(default_factory=BCConfig)


class IDM(nn.Module):
    """(o_t, o_{t+1}) -> a_t. Shared encoder on both (one batch of 2B) -> flatten -> e_t, e_t1 [B, D];
    ReFedMLP head on [e_t, e_t1] with the same inputs re-fed at every layer -> [B, A]."""

    def __init__(self, frame_stack: int, act_dim: int, scale: int, deep: bool = False, num_res_blocks: int = 2,
                 encoder_dropout: float = 0.0, head_dim: int = 1024, head_dropout: float = 0.0,
                 img_hw: int = 64):  # fmt: skip
        super().__init__()
        self.encoder = ResNetEncoder(3 * frame_stack, scale, deep, num_res_blocks, encoder_dropout)
        d = self.encoder.out_dim(img_hw)
        self.head = ReFedMLP(2 * d, 2 * d, head_dim, act_dim, num_layers=3, dropout=head_dropout)
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        e = self.encoder(torch.cat([obs, next_obs], dim=0)).flatten(1)  # [2B, 3k, H, W] -> [2B, D]
        x = torch.cat(e.chunk(2, dim=0), dim=1)  # [B, 2D]
        return self.head(x, x)


def build_idm(c: IDMConfig, act_dim: int, img_hw: int = 64) -> IDM:
    """The IDM of the stage-1 config (192,258,965 parameters at the paper's config for A = 21, 64 px)."""
    return IDM(c.frame_stack, act_dim, c.encoder_scale, c.encoder_deep, c.encoder_num_res_blocks, c.encoder_dropout,
               c.act_head_dim, c.act_head_dropout, img_hw)  # fmt: skip


def build_models(cfg: Config, shapes: Shapes, *names: str) -> dict[str, nn.Module]:
    """The stages' networks (all, or those named), freshly initialised, as count_params.py counts them."""
    b = cfg.bc
    builders = {
        "idm": lambda: build_idm(cfg.idm, shapes.act_dim, shapes.img_hw),
        "actor": lambda: Actor(
            3 * b.frame_stack, shapes.act_dim, b.encoder_scale, b.encoder_deep, b.encoder_num_res_blocks, b.dropout
        ),
    }
    # convolution weights channels_last (docs/SPEED.md): the same parameters and state_dict, faster convolutions
    return {name: builders[name]().to(memory_format=torch.channels_last) for name in names or builders}


@torch.no_grad()
def eval_action_mse(idm: IDM, data: TrajectoryData, frame_stack: int, batch_size: int, device: torch.device) -> float:
    """Action MSE of the IDM over every transition (o_t, o_{t+1}) of `data`: squared errors SUMMED over the action
    dimensions, averaged over samples, as the released code reports it (paper, Fig. 9a compares it with LAOM +
    supervision's, computed the same way)."""
    was_training = idm.training
    idm.eval()
    valid = data.valid_indices(1)
    total = torch.zeros((), device=device)
    for idx in valid.split(batch_size):
        batch = data.batch(idx, frame_stack, next_obs=True)
        with autocast(device):
            pred = idm(normalize_obs(batch["obs"]), normalize_obs(batch["next_obs"]))
        total += F.mse_loss(pred.float(), batch["actions"], reduction="sum")
    idm.train(was_training)
    return dist.global_mean(total.double(), len(valid)).item()  # over every rank's share


# ---------------------------------------------------------------- stage 1: inverse dynamics model


def train_idm(run: Run) -> IDM:
    cfg, c, device = run.cfg, run.cfg.idm, run.device
    if c.use_aug:
        raise ConfigError("idm.use_aug=True is not supported (the paper's config uses False)")
    data = run.load(c.data_path, c.frame_stack, c.max_trajectories, min_offset=c.future_obs_offset)
    eval_data = None
    if c.eval_data_path:
        eval_data = run.load(c.eval_data_path, c.frame_stack, like=data, what="evaluation")
    valid = data.valid_indices(c.future_obs_offset)
    run.seed_stage("idm")  # its random streams from (seed, stage name) alone, before its networks
    idm = build_models(cfg, data.shapes, "idm")["idm"].to(device)
    compile_networks(cfg.compile, idm)
    optim = make_optimizer(idm, "adam", c.learning_rate, c.weight_decay)
    objects = {"idm": idm, "optim": optim}  # as released: ceil(N / B) batches per epoch, whole epochs only
    stage, batches = Stage.on_data("idm", "idm.pt", objects, run, c, data, valid, drop_last=False, whole_epochs=True)
    eval_mse = lambda: eval_action_mse(idm, eval_data, c.frame_stack, c.batch_size, device)  # Fig. 9a's number
    for step in stage.updates():
        batch = data.batch(next(batches), c.frame_stack, future_offset=c.future_obs_offset)
        obs = normalize_obs(batch["obs"])  # o_t [B, 3k, H, W] in [-1, 1]
        future_obs = normalize_obs(batch["future_obs"])  # o_{t+1} (offset 1)
        with autocast(device):
            pred = idm(obs, future_obs)
        loss = F.mse_loss(pred.float(), batch["actions"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(idm, samples=len(obs))  # over the global batch (all ranks), partial or not
        if c.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(idm.parameters(), c.grad_norm)
        optim.step()
        stage.sched.step()
        stage.log(step, loss, mse_loss=loss)
        if eval_data is not None and stage.every(c.eval_every, step) and step + 1 < stage.total:
            run.wandb.log({"idm/eval_action_mse": eval_mse(), "idm/step": step + 1})

    stage.final_metrics(lambda: {} if eval_data is None else {"idm/eval_action_mse": eval_mse()})
    idm.eval().requires_grad_(False)
    return idm


# ---------------------------------------------------------------- stage 2: behaviour cloning on IDM labels


def train_bc(run: Run, idm: IDM) -> Actor:
    cfg, c, device = run.cfg, run.cfg.bc, run.device
    if c.use_aug:
        raise ConfigError("bc.use_aug=True is not supported (the paper's config uses False)")
    data = run.load(c.data_path, c.frame_stack, c.max_trajectories)
    valid = data.valid_indices(1)
    run.seed_stage("bc")  # its random streams from (seed, stage name) alone, before its networks
    actor = build_models(cfg, data.shapes, "actor")["actor"].to(device)
    compile_networks(cfg.compile, actor)
    optim = make_optimizer(actor, "adamw", c.learning_rate, c.weight_decay)
    stage, batches = Stage.on_data("bc", "bc.pt", {"actor": actor, "optim": optim}, run, c, data, valid)
    for step in stage.updates():
        batch = data.batch(next(batches), c.frame_stack, next_obs=True)
        obs = normalize_obs(batch["obs"])  # [B, 3k, H, W] in [-1, 1]
        with torch.no_grad():  # IDM labels [B, A] in fp32 (outside autocast), like the LAM labels of latent BC
            target = idm(obs, normalize_obs(batch["next_obs"])).float()
        with autocast(device):
            pred, _ = actor(obs)
        loss = F.mse_loss(pred.float(), target)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(actor)  # the gradient over the global batch (all ranks)
        if c.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(actor.parameters(), c.grad_norm)
        optim.step()
        stage.sched.step()
        true_mse = F.mse_loss(pred.detach().float(), batch["actions"])
        stage.log(
            step, loss, mse_loss=loss, idm_label_mse=F.mse_loss(target, batch["actions"]), true_action_mse=true_mse
        )

    actor.eval()
    policy = lambda obs: actor(normalize_obs(obs))[0]  # fp32: evaluation runs without autocast
    stage.final_metrics(lambda: evaluate_for_dataset(policy, data.attrs, c, cfg, c.frame_stack, device, "bc"))
    return actor


@pyrallis.wrap()
def train(cfg: Config) -> dict:
    if cfg.bc.frame_stack != cfg.idm.frame_stack:
        raise ConfigError(f"bc.frame_stack={cfg.bc.frame_stack} must equal idm.frame_stack={cfg.idm.frame_stack}")
    run = start_run(cfg)
    idm = train_idm(run)
    if not cfg.idm_only:
        train_bc(run, idm)
    return run.finish()


if __name__ == "__main__":
    main(train)
