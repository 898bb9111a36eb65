"""LAPO, as run in the paper (Schmidt & Jiang 2024; paper Appendix F, Table 5; REFERENCE-FACTS 5-7).

Three stages, one script:
1. Latent action model on the unlabeled dataset. The latent IDM sees o_t and o_{t+k} stacked on channels and
   outputs a continuous latent action z (8192); the FDM sees o_t and z and reconstructs the pixels of o_{t+1}
   (MSE in [-1, 1]). No augmentation, no quantization (FSQ is an option: the ablation of paper Fig. 5 / 12c).
   A linear probe z -> true action (trained on detached z) measures latent action quality.
2. Latent behaviour cloning: an Actor (scale 32) regresses the frozen LAM's labels z(o_t, o_{t+1}) on the full
   dataset; a small debug MLP maps its output to true actions for a diagnostic evaluation.
3. Action decoder: the Actor frozen, an MLP maps its latent actions to true actions, trained on the labeled
   trajectories only, then evaluated in the DCS environment.

    python -m train_lapo --config_path configs/lapo.yaml \\
        --lapo.data_path=<full.hdf5> --bc.data_path=<full.hdf5> --decoder.data_path=<labeled-1000xN.hdf5>
"""

from dataclasses import dataclass, field
from typing import Optional

import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import trange

from src.data import load_dataset, normalize_obs
from src.evaluation import eval_env_kwargs, evaluate, normalized_score
from src.nn import ActionMLP, Actor, DecoderBlock, ResNetEncoder, weight_init
from src.utils import (
    NanGuard,
    Results,
    RunConfig,
    Stopwatch,
    autocast,
    get_device,
    infinite_epochs,
    init_wandb,
    make_optimizer,
    make_scheduler,
    prepare_run_dir,
    restore_stage,
    save_stage,
    set_seed,
    setup_backends,
)


@dataclass
class LAPOConfig:
    data_path: str = "data/example-data.hdf5"  # unlabeled HDF5 dataset (true actions used by the probe only)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    num_epochs: int = 10  # passes over the data
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak Adam learning rate (the probe uses it too, constant)
    weight_decay: Optional[float] = None  # weight decay (never on biases / norms)
    warmup_epochs: float = 3.0  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    grad_norm: Optional[float] = None  # gradient-norm clipping (None: off)
    frame_stack: int = 3  # stacked frames per observation
    future_obs_offset: int = 10  # K: the latent IDM sees o_{t+k}, k uniform in 1..K
    latent_action_dim: int = 8192  # Z: size of the latent action
    encoder_scale: int = 6  # channel multiplier of the IDM and FDM encoders (and of the FDM decoder)
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder / decoder block
    quantize: bool = False  # FSQ on the latent action (ablation; off in the paper's final experiments)
    fsq_levels: int = 8  # FSQ levels per latent dimension (used when quantize)
    probe_eval_batches: int = 8  # batches averaged for the final action-probe MSE in results.json
    checkpoint_path: Optional[str] = None  # a finished lam.pt of another run: skip this stage, reuse its LAM


@dataclass
class BCConfig:
    data_path: str = "data/example-data.hdf5"  # dataset to clone (the full unlabeled set; actions: debug head)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    num_epochs: int = 10  # passes over the data
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak AdamW learning rate (the debug head uses it too)
    weight_decay: Optional[float] = None  # AdamW weight decay (never on biases / norms)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    grad_norm: Optional[float] = None  # gradient-norm clipping (None: off)
    frame_stack: int = 3  # stacked frames per observation (must match the LAM's)
    encoder_scale: int = 32  # channel multiplier of the actor's encoder
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder block
    dropout: float = 0.0  # dropout inside the residual units
    use_aug: bool = False  # not supported for latent BC (kept for the paper's config names); must be False
    eval_episodes: int = 5  # diagnostic evaluation episodes of actor + debug head (seeds eval_seed + i)
    eval_seed: int = 0  # seed of the first evaluation episode
    dcs_backgrounds_path: Optional[str] = None  # DAVIS folder or "builtin" (None: as recorded in the dataset)
    dcs_backgrounds_split: str = "train"  # background videos of the evaluation environment (train / val)
    checkpoint_path: Optional[str] = None  # a finished latent_bc.pt of another run: skip this stage


@dataclass
class DecoderConfig:
    data_path: str = "data/example-data.hdf5"  # labeled trajectories (labeled-1000xN subset)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    total_updates: int = 2500  # about this many updates: epochs = total_updates // batches per epoch
    batch_size: int = 512  # samples per update
    hidden_dim: int = 256  # hidden size of the decoder MLP
    learning_rate: float = 3e-4  # peak AdamW learning rate
    weight_decay: Optional[float] = None  # AdamW weight decay (never on biases / norms)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    use_aug: bool = False  # not supported for the decoder (kept for the paper's config names); must be False
    eval_episodes: int = 25  # evaluation episodes (seeds eval_seed + i)
    eval_seed: int = 0  # seed of the first evaluation episode
    dcs_backgrounds_path: Optional[str] = None  # DAVIS folder or "builtin" (None: as recorded in the dataset)
    dcs_backgrounds_split: str = "train"  # background videos of the evaluation environment (train / val)
    checkpoint_path: Optional[str] = None  # a finished decoder.pt of another run: skip training, evaluate it


@dataclass
class Config(RunConfig):
    name: str = "lapo"
    lapo: LAPOConfig = field(default_factory=LAPOConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


# ---------------------------------------------------------------- stage 1 networks


class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023): each dimension is bounded with tanh to `levels` values
    and rounded with a straight-through estimator; the output is rescaled to [-1, 1]."""

    def __init__(self, levels: int):
        super().__init__()
        if levels < 2:
            raise ValueError(f"fsq_levels must be >= 2, got {levels}")
        self.half = (levels - 1) * (1 + 1e-3) / 2  # bound slightly above (L - 1) / 2: the end levels are reached
        self.offset = 0.5 if levels % 2 == 0 else 0.0  # even levels: integers -L/2 .. L/2 - 1
        self.shift = float(torch.atanh(torch.tensor(self.offset / self.half)))
        self.scale = levels // 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        bounded = torch.tanh(z + self.shift) * self.half - self.offset
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight-through gradient
        return rounded / self.scale


class LatentIDM(nn.Module):
    """(o_t, o_{t+k}) stacked on channels [B, 2 * 3k, H, W] -> encoder -> flatten -> GELU -> Linear -> z [B, Z]."""

    def __init__(self, frame_stack: int, latent_dim: int, scale: int, deep: bool, num_res_blocks: int, img_hw: int):
        super().__init__()
        self.encoder = ResNetEncoder(2 * 3 * frame_stack, scale, deep, num_res_blocks)
        self.fc = nn.Linear(self.encoder.out_dim(img_hw), latent_dim)

    def forward(self, obs: torch.Tensor, future_obs: torch.Tensor) -> torch.Tensor:
        h = self.encoder(torch.cat([obs, future_obs], dim=1)).flatten(1)  # [B, 6k, H, W] -> [B, D]
        return self.fc(F.gelu(h))


class LatentFDM(nn.Module):
    """(o_t, z) -> reconstruction of o_{t+1} [B, 3k, H, W] in [-1, 1].

    o_t -> encoder -> [B, C, h, w]; z -> Linear(Z -> C*h*w) -> [B, C, h, w]; concatenated [B, 2C, h, w] ->
    decoder blocks (encoder channels reversed, each doubling h and w) -> GELU -> Conv1x1 -> Tanh.
    """

    def __init__(self, frame_stack: int, latent_dim: int, scale: int, deep: bool, num_res_blocks: int, img_hw: int):
        super().__init__()
        self.encoder = ResNetEncoder(3 * frame_stack, scale, deep, num_res_blocks)
        c, self.hw = self.encoder.out_channels, self.encoder.out_hw(img_hw)
        self.latent_fc = nn.Linear(latent_dim, c * self.hw * self.hw)
        blocks, in_ch = [], 2 * c
        for out_ch in reversed(self.encoder.channels):
            blocks.append(DecoderBlock(in_ch, out_ch, num_res_blocks))
            in_ch = out_ch
        self.decoder = nn.Sequential(*blocks)
        self.out = nn.Conv2d(in_ch, 3 * frame_stack, kernel_size=1)

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.encoder(obs)  # [B, 3k, H, W] -> [B, C, h, w]
        hz = self.latent_fc(z).view(h.shape)  # [B, Z] -> [B, C, h, w]
        x = self.decoder(torch.cat([h, hz], dim=1))  # [B, 2C, h, w] -> [B, C0, H, W]
        return torch.tanh(self.out(F.gelu(x)))  # [B, 3k, H, W]


class LAPO(nn.Module):
    """Latent IDM + FDM. forward: (o_t, o_{t+k}) -> (reconstruction of o_{t+1}, z); label: the latent action."""

    def __init__(
        self,
        frame_stack: int,
        latent_dim: int,
        scale: int,
        deep: bool = False,
        num_res_blocks: int = 2,
        img_hw: int = 64,
        fsq_levels: Optional[int] = None,
    ):
        super().__init__()
        self.idm = LatentIDM(frame_stack, latent_dim, scale, deep, num_res_blocks, img_hw)
        self.fdm = LatentFDM(frame_stack, latent_dim, scale, deep, num_res_blocks, img_hw)
        self.quantizer = FSQ(fsq_levels) if fsq_levels is not None else nn.Identity()
        self.apply(weight_init)

    def label(self, obs: torch.Tensor, future_obs: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.idm(obs, future_obs))

    def forward(self, obs: torch.Tensor, future_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.label(obs, future_obs)
        return self.fdm(obs, z), z


def build_lam(c: LAPOConfig, img_hw: int = 64) -> LAPO:
    """The latent action model of the stage-1 config (211,847,849 parameters at the paper's config, 64 px)."""
    fsq = c.fsq_levels if c.quantize else None
    return LAPO(
        c.frame_stack, c.latent_action_dim, c.encoder_scale, c.encoder_deep, c.encoder_num_res_blocks, img_hw, fsq
    )


def build_models(cfg: Config, act_dim: int, state_dim: Optional[int] = None, img_hw: int = 64) -> dict[str, nn.Module]:
    """Every network the method trains, from the config alone (no data): lam (IDM + FDM), actor, decoder."""
    latent_dim = cfg.lapo.latent_action_dim
    b = cfg.bc
    return {
        "lam": build_lam(cfg.lapo, img_hw),
        "actor": Actor(3 * b.frame_stack, latent_dim, b.encoder_scale, b.encoder_deep, b.encoder_num_res_blocks),
        "decoder": ActionMLP(latent_dim, act_dim, cfg.decoder.hidden_dim),
    }


# ---------------------------------------------------------------- stage 1: latent action model


def train_lam(cfg: Config, run_dir, device: torch.device, wandb_run) -> tuple[LAPO, dict]:
    c = cfg.lapo
    data = load_dataset(
        c.data_path,
        device,
        c.frame_stack,
        min_offset=c.future_obs_offset,
        load_states=False,
        max_trajectories=c.max_trajectories,
        frames_device=cfg.frames_device,
    )
    valid = data.valid_indices(c.future_obs_offset)
    lam = build_lam(c, data.img_hw).to(device)
    probe = nn.Linear(c.latent_action_dim, data.act_dim).to(device)  # latent action -> true action
    probe.apply(weight_init)
    optim = make_optimizer(lam, "adam", c.learning_rate, c.weight_decay)
    probe_optim = make_optimizer(probe, "adam", c.learning_rate)
    batches_per_epoch = max(1, len(valid) // c.batch_size)
    total = c.num_epochs * batches_per_epoch
    sched = make_scheduler(optim, total, int(c.warmup_epochs * batches_per_epoch), c.lr_schedule)
    objects = {"lam": lam, "probe": probe, "optim": optim, "probe_optim": probe_optim, "sched": sched}
    ckpt = run_dir / "lam.pt"
    start, done = restore_stage(ckpt, objects, c.checkpoint_path, device)
    guard = NanGuard("lapo", device)
    if not done:
        batches = infinite_epochs(data, valid, c.batch_size)
        clock = Stopwatch()
        for step in trange(start, total, desc="lapo", initial=start, total=total):
            batch = data.batch(next(batches), c.frame_stack, future_offset=c.future_obs_offset, next_obs=True)
            obs = normalize_obs(batch["obs"])  # o_t [B, 3k, H, W] in [-1, 1]
            future_obs = normalize_obs(batch["future_obs"])  # o_{t+k}
            next_obs = normalize_obs(batch["next_obs"])  # o_{t+1}, the reconstruction target
            with autocast(device):
                pred_next_obs, latent_action = lam(obs, future_obs)
            loss = F.mse_loss(pred_next_obs.float(), next_obs)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(lam.parameters(), c.grad_norm)
            optim.step()
            sched.step()
            guard.update(loss, step)

            with autocast(device):
                pred_action = probe(latent_action.detach())
            probe_loss = F.mse_loss(pred_action.float(), batch["actions"])
            probe_optim.zero_grad(set_to_none=True)
            probe_loss.backward()
            probe_optim.step()

            if (step + 1) % cfg.log_every == 0:
                guard.check(ckpt)
                wandb_run.log(
                    {
                        "lapo/mse_loss": loss.item(),
                        "lapo/action_probe_mse_loss": probe_loss.item(),
                        "lapo/latent_action_std": latent_action.float().std(0).mean().item(),
                        "lapo/learning_rate": sched.get_last_lr()[0],
                        "lapo/samples_per_s": cfg.log_every * c.batch_size / clock(),
                        "lapo/step": step + 1,
                    }
                )
                clock = Stopwatch()
            if (step + 1) % cfg.checkpoint_every == 0:
                guard.check(ckpt)
                save_stage(ckpt, objects, step + 1, done=False)
        guard.check(ckpt)
        save_stage(ckpt, objects, total, done=True)

    lam.eval()
    probe.eval()
    probe_mse = torch.zeros((), device=device)
    with torch.no_grad():
        for _ in range(c.probe_eval_batches):
            batch = data.batch(data.sample(valid, c.batch_size), c.frame_stack, future_offset=c.future_obs_offset)
            with autocast(device):
                pred_action = probe(lam.label(normalize_obs(batch["obs"]), normalize_obs(batch["future_obs"])))
            probe_mse += F.mse_loss(pred_action.float(), batch["actions"])
    metrics = {"lapo/action_probe_mse": probe_mse.item() / max(1, c.probe_eval_batches), "lapo/updates": total}
    wandb_run.log(metrics)
    return lam, metrics


# ---------------------------------------------------------------- stage 2: latent behaviour cloning


def train_latent_bc(cfg: Config, lam: nn.Module, run_dir, device: torch.device, wandb_run) -> tuple[Actor, dict]:
    c = cfg.bc
    if c.use_aug:
        raise ValueError("bc.use_aug=True is not supported by latent BC (the paper's configs use False)")
    if c.frame_stack != cfg.lapo.frame_stack:
        raise ValueError(f"bc.frame_stack={c.frame_stack} must equal lapo.frame_stack={cfg.lapo.frame_stack}")
    data = load_dataset(
        c.data_path,
        device,
        c.frame_stack,
        min_offset=1,
        load_states=False,
        max_trajectories=c.max_trajectories,
        frames_device=cfg.frames_device,
    )
    valid = data.valid_indices(1)
    latent_dim = cfg.lapo.latent_action_dim
    actor = Actor(3 * c.frame_stack, latent_dim, c.encoder_scale, c.encoder_deep, c.encoder_num_res_blocks, c.dropout)
    actor = actor.to(device)
    debug_head = ActionMLP(latent_dim, data.act_dim, activation=nn.ReLU).to(device)  # diagnostic: z -> action
    optim = make_optimizer(actor, "adamw", c.learning_rate, c.weight_decay)
    debug_optim = make_optimizer(debug_head, "adamw", c.learning_rate)
    batches_per_epoch = max(1, len(valid) // c.batch_size)
    total = c.num_epochs * batches_per_epoch
    sched = make_scheduler(optim, total, int(c.warmup_epochs * batches_per_epoch), c.lr_schedule)
    objects = {"actor": actor, "debug_head": debug_head, "optim": optim, "debug_optim": debug_optim, "sched": sched}
    ckpt = run_dir / "latent_bc.pt"
    start, done = restore_stage(ckpt, objects, c.checkpoint_path, device)
    guard = NanGuard("bc", device)
    lam.eval()
    if not done:
        batches = infinite_epochs(data, valid, c.batch_size)
        clock = Stopwatch()
        for step in trange(start, total, desc="latent bc", initial=start, total=total):
            batch = data.batch(next(batches), c.frame_stack, next_obs=True)
            obs = normalize_obs(batch["obs"])  # [B, 3k, H, W] in [-1, 1]
            with torch.no_grad(), autocast(device):
                target = lam.label(obs, normalize_obs(batch["next_obs"])).float()  # [B, Z]
            with autocast(device):
                pred, _ = actor(obs)
            loss = F.mse_loss(pred.float(), target)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(actor.parameters(), c.grad_norm)
            optim.step()
            sched.step()
            guard.update(loss, step)

            with autocast(device):
                pred_action = debug_head(pred.detach())
            debug_loss = F.mse_loss(pred_action.float(), batch["actions"])
            debug_optim.zero_grad(set_to_none=True)
            debug_loss.backward()
            debug_optim.step()

            if (step + 1) % cfg.log_every == 0:
                guard.check(ckpt)
                wandb_run.log(
                    {
                        "bc/mse_loss": loss.item(),
                        "bc/debug_action_mse_loss": debug_loss.item(),
                        "bc/learning_rate": sched.get_last_lr()[0],
                        "bc/samples_per_s": cfg.log_every * c.batch_size / clock(),
                        "bc/step": step + 1,
                    }
                )
                clock = Stopwatch()
            if (step + 1) % cfg.checkpoint_every == 0:
                guard.check(ckpt)
                save_stage(ckpt, objects, step + 1, done=False)
        guard.check(ckpt)
        save_stage(ckpt, objects, total, done=True)

    actor.eval()
    debug_head.eval()

    def policy(obs: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            return debug_head(actor(normalize_obs(obs))[0])

    env_kwargs = (
        eval_env_kwargs(
            data.attrs, c.dcs_backgrounds_path, c.dcs_backgrounds_split, cfg.eval_max_episode_steps, c.frame_stack
        )
        if c.eval_episodes > 0
        else {}
    )
    ev = evaluate(policy, env_kwargs, c.eval_episodes, c.eval_seed, cfg.eval_num_envs, device, desc="latent bc eval")
    metrics = {
        "bc/eval_returns_mean": ev["mean"],
        "bc/eval_returns_std": ev["std"],
        "bc/normalized_score": normalized_score(data.attrs, ev["mean"]),
        "bc/updates": total,
    }
    wandb_run.log(metrics)
    return actor, {**metrics, "bc/eval_returns": ev["returns"]}


# ---------------------------------------------------------------- stage 3: action decoder


def train_decoder(cfg: Config, actor: Actor, run_dir, device: torch.device, wandb_run) -> tuple[ActionMLP, dict]:
    c = cfg.decoder
    if c.use_aug:
        raise ValueError("decoder.use_aug=True is not supported (the paper's configs use False)")
    fs = cfg.bc.frame_stack
    data = load_dataset(
        c.data_path,
        device,
        fs,
        min_offset=0,
        load_states=False,
        max_trajectories=c.max_trajectories,
        frames_device=cfg.frames_device,
    )
    valid = data.valid_indices(0)
    decoder = ActionMLP(cfg.lapo.latent_action_dim, data.act_dim, c.hidden_dim).to(device)
    optim = make_optimizer(decoder, "adamw", c.learning_rate, c.weight_decay)
    batches_per_epoch = max(1, len(valid) // c.batch_size)
    total = max(1, c.total_updates // batches_per_epoch) * batches_per_epoch  # whole epochs
    sched = make_scheduler(optim, total, int(c.warmup_epochs * batches_per_epoch), c.lr_schedule)
    objects = {"decoder": decoder, "optim": optim, "sched": sched}
    ckpt = run_dir / "decoder.pt"
    start, done = restore_stage(ckpt, objects, c.checkpoint_path, device)
    guard = NanGuard("decoder", device)
    actor.eval()
    if not done:
        batches = infinite_epochs(data, valid, c.batch_size)
        clock = Stopwatch()
        for step in trange(start, total, desc="decoder", initial=start, total=total):
            batch = data.batch(next(batches), fs)
            with torch.no_grad(), autocast(device):
                latent_action = actor(normalize_obs(batch["obs"]))[0].float()  # [B, Z], the actor frozen
            with autocast(device):
                pred = decoder(latent_action)
            loss = F.mse_loss(pred.float(), batch["actions"])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            guard.update(loss, step)
            if (step + 1) % cfg.log_every == 0:
                guard.check(ckpt)
                wandb_run.log(
                    {
                        "decoder/mse_loss": loss.item(),
                        "decoder/learning_rate": sched.get_last_lr()[0],
                        "decoder/samples_per_s": cfg.log_every * c.batch_size / clock(),
                        "decoder/step": step + 1,
                    }
                )
                clock = Stopwatch()
            if (step + 1) % cfg.checkpoint_every == 0:
                guard.check(ckpt)
                save_stage(ckpt, objects, step + 1, done=False)
        guard.check(ckpt)
        save_stage(ckpt, objects, total, done=True)

    decoder.eval()

    def policy(obs: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            return decoder(actor(normalize_obs(obs))[0])

    env_kwargs = (
        eval_env_kwargs(data.attrs, c.dcs_backgrounds_path, c.dcs_backgrounds_split, cfg.eval_max_episode_steps, fs)
        if c.eval_episodes > 0
        else {}
    )
    ev = evaluate(policy, env_kwargs, c.eval_episodes, c.eval_seed, cfg.eval_num_envs, device, desc="decoder eval")
    metrics = {
        "decoder/eval_returns_mean": ev["mean"],
        "decoder/eval_returns_std": ev["std"],
        "decoder/normalized_score": normalized_score(data.attrs, ev["mean"]),
        "decoder/updates": total,
    }
    wandb_run.log(metrics)
    return decoder, {**metrics, "decoder/eval_returns": ev["returns"]}


@pyrallis.wrap()
def train(cfg: Config) -> dict:
    device = get_device(cfg.device)
    setup_backends(device)
    set_seed(cfg.seed)
    run_dir = prepare_run_dir(cfg.resolved_run_dir(), cfg)
    wandb_run = init_wandb(cfg, cfg.project, cfg.group, cfg.name, cfg.wandb_mode, run_dir)
    results = Results(run_dir, cfg)

    clock = Stopwatch()
    lam, lam_metrics = train_lam(cfg, run_dir, device, wandb_run)
    results.stage("lapo", clock(), lam_metrics)

    clock = Stopwatch()
    actor, bc_metrics = train_latent_bc(cfg, lam, run_dir, device, wandb_run)
    results.stage("bc", clock(), bc_metrics)
    del lam

    clock = Stopwatch()
    _, decoder_metrics = train_decoder(cfg, actor, run_dir, device, wandb_run)
    results.stage("decoder", clock(), decoder_metrics)

    metrics = {**lam_metrics, **bc_metrics, **decoder_metrics}
    out = results.finish({k: v for k, v in metrics.items() if not isinstance(v, list)})
    wandb_run.finish()
    return out


if __name__ == "__main__":
    train()
