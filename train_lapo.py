"""LAPO, as run in the paper (Schmidt & Jiang 2024; paper Appendix D-F, Table 5; docs/FAITHFULNESS.md).

Three stages, one file:
1. `lapo` — the latent action model. The latent IDM sees o_t and o_{t+k} (k uniform in 1..K) stacked on channels
   and outputs a continuous latent action z; the FDM sees o_t and z and reconstructs all pixels of o_{t+1}.
   Loss: MSE in [-1, 1] pixel space. No augmentation, no quantization (`--lapo.quantize=fsq` / `vq` is the
   ablation of paper Fig. 5 / 12c). A linear probe z -> true action (the paper's quality metric) is trained on
   detached z.
2. `bc` — latent behaviour cloning: an Actor regresses the frozen LAM's latent action of (o_t, o_{t+1}) on the
   full dataset; a small debug head maps the actor's output to true actions so the actor can be evaluated.
3. `decoder` — the actor is frozen; an MLP decodes its latent actions into true actions, trained on the
   labeled trajectories only, then the actor + decoder are evaluated in the DCS environment.
Stages 2 and 3 are the same as in train_laom.py.

    python -m train_lapo --config_path configs/lapo.yaml \
        --lapo.data_path=<full.hdf5> --bc.data_path=<full.hdf5> --decoder.data_path=<labeled-1000xN.hdf5> \
        --bc.dcs_backgrounds_path=DAVIS/JPEGImages/480p --decoder.dcs_backgrounds_path=DAVIS/JPEGImages/480p

One LAM and latent BC serve every label budget: reuse them with `--lapo.checkpoint_path=<run>/lam.pt
--bc.checkpoint_path=<run>/latent_bc.pt` and only the decoder is trained.
"""

from dataclasses import dataclass, field
from typing import Optional

import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F

from src import dist
from src.augs import Augmenter
from src.data import Shapes, TrajectoryData, normalize_obs
from src.errors import ConfigError
from src.evaluation import evaluate_for_dataset
from src.nn import ActionMLP, Actor, DecoderBlock, ResNetEncoder, compile_networks, weight_init
from src.optim import autocast, make_optimizer
from src.probes import ProbeCurve, ridge_probe
from src.run import Run, RunConfig, main, start_run
from src.stage import Stage


@dataclass
class LAPOConfig:
    data_path: str = "data/example-data.hdf5"  # unlabeled HDF5 dataset (true actions used by the probe only)
    eval_data_path: Optional[str] = None  # optional set with novel distractors: final action-probe MSE on it
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
    quantize: str = "none"  # latent quantization (Fig. 5 ablation): none (the paper's runs), fsq, vq
    fsq_levels: list[int] = field(default_factory=lambda: [2, 2, 4])  # FSQ levels of each group of len(levels)
    vq_codebook_size: int = 64  # VQ: codes per codebook
    vq_num_codebooks: int = 2  # VQ: codebooks (heads), each quantizing its own share of every token
    vq_code_dim: int = 16  # VQ: the latent is split into tokens of this size (Z / vq_code_dim tokens)
    vq_commitment_weight: float = 1.0  # VQ: weight of the commitment loss added to the reconstruction loss
    vq_decay: float = 0.8  # VQ: EMA decay of the codebooks
    final_probe_batches: int = 10  # batches averaged for the final action-probe MSE written to results.json
    ridge_probe_samples: int = 20000  # transitions fitting (and testing) the closed-form ridge probe; 0: off
    ridge_probe_every: int = 0  # also a ridge probe every N updates (a curve in results.json); 0: at the end only
    checkpoint_path: Optional[str] = None  # a finished lam.pt of another run: skip this stage, reuse its LAM


@dataclass
class LatentBCConfig:
    data_path: str = "data/example-data.hdf5"  # HDF5 dataset of latent BC (the full set; its actions: debug head only)
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    num_epochs: int = 10  # passes over the data
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak AdamW learning rate (the debug head uses it too)
    weight_decay: Optional[float] = None  # AdamW weight decay (never on biases / norms; None: none)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    frame_stack: int = 3  # stacked frames per observation (must equal lapo.frame_stack)
    encoder_scale: int = 32  # channel multiplier of the actor's ResNet encoder
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder block
    dropout: float = 0.0  # dropout inside the actor's residual units
    use_aug: bool = False  # random per-image augmentation of the actor's input (the LAM labels never are)
    eval_episodes: int = 25  # evaluation episodes of actor + debug head (a diagnostic, not a paper number)
    eval_seed: int = 0  # seed of the first evaluation episode
    dcs_backgrounds_path: Optional[str] = None  # DAVIS folder or "builtin" (None: as recorded in the dataset)
    dcs_backgrounds_split: str = "train"  # background videos of the evaluation environment (train / val)
    eval_use_blur: bool = False  # blur evaluation frames as the (blurred) dataset's were (scripts/blur_hdf5_data.py)
    eval_blur_model_path: Optional[str] = None  # DepthAnything V2 folder, for a depth-blurred dataset (None: HF cache)
    checkpoint_path: Optional[str] = None  # a finished latent_bc.pt of another run: skip this stage, reuse it


@dataclass
class DecoderConfig:
    data_path: str = "data/example-data.hdf5"  # HDF5 labeled trajectories (e.g. labeled-1000xN), the only labels
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    total_updates: int = 2500  # about this many updates: epochs = total_updates // batches per epoch (>= 1)
    batch_size: int = 512  # samples per update
    hidden_dim: int = 256  # hidden size of the decoder MLP
    learning_rate: float = 3e-4  # peak AdamW learning rate
    weight_decay: Optional[float] = None  # AdamW weight decay (never on biases / norms; None: none)
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    use_aug: bool = False  # random per-image augmentation of the actor's input
    eval_episodes: int = 25  # evaluation episodes (seeds eval_seed + i)
    eval_seed: int = 0  # seed of the first evaluation episode
    dcs_backgrounds_path: Optional[str] = None  # DAVIS folder or "builtin" (None: as recorded in the dataset)
    dcs_backgrounds_split: str = "train"  # background videos of the evaluation environment (train / val)
    eval_use_blur: bool = False  # blur evaluation frames as the (blurred) dataset's were (scripts/blur_hdf5_data.py)
    eval_blur_model_path: Optional[str] = None  # DepthAnything V2 folder, for a depth-blurred dataset (None: HF cache)
    checkpoint_path: Optional[str] = None  # a finished decoder.pt of another run: skip training, evaluate it


@dataclass
class Config(RunConfig):
    name: str = "lapo"  # run name (wandb and default run directory)
    lam_only: bool = False  # end the run after the latent action model (its probes are the result)
    lapo: LAPOConfig = field(default_factory=LAPOConfig)
    bc: LatentBCConfig = field(default_factory=LatentBCConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


# ---------------------------------------------------------------- stage 1 networks


QUANTIZERS = ("none", "fsq", "vq")


class Quantizer(nn.Module):
    """Optional quantization of the latent action (the ablation of paper Fig. 5 / 12c), from the
    vector-quantize-pytorch library. forward: z [B, Z] -> (quantized z [B, Z], auxiliary loss (0 for FSQ)).

    fsq: the latent is cut into groups of len(levels) values, [B, Z] -> [B, Z / n, n], each group quantized by
      finite scalar quantization with those levels (the paper's FSQ ablation: levels (2, 2, 4), groups of 3).
    vq: vector quantization as in the original LAPO: the latent is cut into tokens of code_dim values, each
      quantized by num_codebooks codebooks of codebook_size codes (EMA codebooks, commitment loss).
    """

    def __init__(self, c: "LAPOConfig"):
        super().__init__()
        from vector_quantize_pytorch import FSQ, VectorQuantize

        self.kind, z = c.quantize, c.latent_action_dim
        if self.kind == "fsq":
            self.group = len(c.fsq_levels)
            if z % self.group != 0:
                raise ConfigError(
                    f"lapo.latent_action_dim={z} is not a multiple of len(lapo.fsq_levels)={self.group} "
                    f"(fsq_levels={list(c.fsq_levels)}): FSQ quantizes the latent in groups of that size"
                )
            self.fsq = FSQ(levels=list(c.fsq_levels))
        elif self.kind == "vq":
            self.group = c.vq_code_dim
            if z % self.group != 0 or self.group % c.vq_num_codebooks != 0:
                raise ConfigError(
                    f"lapo.latent_action_dim={z} must be a multiple of lapo.vq_code_dim={self.group}, itself a "
                    f"multiple of lapo.vq_num_codebooks={c.vq_num_codebooks}"
                )
            self.vq = VectorQuantize(dim=self.group, codebook_size=c.vq_codebook_size, heads=c.vq_num_codebooks,
                                     separate_codebook_per_head=True, decay=c.vq_decay,
                                     commitment_weight=c.vq_commitment_weight)  # fmt: skip

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = z.shape[0]
        tokens = z.float().reshape(b, -1, self.group)  # [B, Z] -> [B, Z / n, n]
        if self.kind == "fsq":
            quantized, _ = self.fsq(tokens)
            return quantized.reshape(b, -1), z.new_zeros((), dtype=torch.float32)
        quantized, _, aux_loss = self.vq(tokens)
        return quantized.reshape(b, -1), aux_loss.sum()


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

    def __init__(self, frame_stack: int, latent_dim: int, scale: int, deep: bool = False, num_res_blocks: int = 2,
                 img_hw: int = 64):  # fmt: skip
        super().__init__()
        self.idm = LatentIDM(frame_stack, latent_dim, scale, deep, num_res_blocks, img_hw)
        self.fdm = LatentFDM(frame_stack, latent_dim, scale, deep, num_res_blocks, img_hw)
        self.apply(weight_init)
        self.quantizer: Optional[Quantizer] = None  # set by build_lam for the quantization ablation

    def latent_action(self, obs: torch.Tensor, future_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.idm(obs, future_obs)
        if self.quantizer is None:
            return z, z.new_zeros((), dtype=torch.float32)
        return self.quantizer(z)

    def label(self, obs: torch.Tensor, future_obs: torch.Tensor) -> torch.Tensor:
        return self.latent_action(obs, future_obs)[0]

    def forward(self, obs: torch.Tensor, future_obs: torch.Tensor):
        """(o_t, o_{t+k}) -> (reconstruction of o_{t+1}, z, quantizer loss)."""
        z, quant_loss = self.latent_action(obs, future_obs)
        return self.fdm(obs, z), z, quant_loss


def build_lam(c: LAPOConfig, img_hw: int) -> LAPO:
    """The latent action model (latent IDM + FDM, and the quantizer of the ablation), the module of the paper's
    Table 4 count: 211,847,849 parameters at the paper's config, 64 px."""
    if c.quantize not in QUANTIZERS:
        raise ConfigError(f"lapo.quantize={c.quantize!r} is not a quantizer; valid: {list(QUANTIZERS)}")
    lam = LAPO(c.frame_stack, c.latent_action_dim, c.encoder_scale, c.encoder_deep, c.encoder_num_res_blocks, img_hw)
    if c.quantize != "none":
        lam.quantizer = Quantizer(c)  # the library's own initialisation (codebooks), not the orthogonal one
    return lam


def build_models(cfg: Config, shapes: Shapes, *names: str) -> dict[str, nn.Module]:
    """The stages' networks (all, or those named), freshly initialised, as count_params.py counts them (Table 4)."""
    z, b, a = cfg.lapo.latent_action_dim, cfg.bc, shapes.act_dim
    builders = {
        "lam": lambda: build_lam(cfg.lapo, shapes.img_hw),
        "probe": lambda: nn.Linear(z, a),  # latent action -> true action
        "actor": lambda: Actor(
            3 * b.frame_stack, z, b.encoder_scale, b.encoder_deep, b.encoder_num_res_blocks, b.dropout
        ),
        "debug_head": lambda: ActionMLP(z, a, 128, activation=nn.ReLU),  # 128 hidden units, as released
        "decoder": lambda: ActionMLP(z, a, cfg.decoder.hidden_dim),
    }
    # convolution weights channels_last (docs/SPEED.md): the same parameters and state_dict, faster convolutions
    return {name: builders[name]().to(memory_format=torch.channels_last) for name in names or builders}


# ---------------------------------------------------------------- stage 1: latent action model


@torch.no_grad()
def final_probe_mse(lam: LAPO, probe: nn.Linear, data: TrajectoryData, valid, c: LAPOConfig, device) -> float:
    """Action-probe MSE averaged over c.final_probe_batches fresh batches, drawn as in training (no update)."""
    lam.eval()
    total = torch.zeros((), device=device)
    for _ in range(c.final_probe_batches):
        b = data.batch(data.sample(valid, c.batch_size), c.frame_stack, future_offset=c.future_obs_offset)
        with autocast(device):
            z = lam.label(normalize_obs(b["obs"]), normalize_obs(b["future_obs"]))  # [B, Z]
            pred = probe(z)  # [B, A]
        total += F.mse_loss(pred.float(), b["actions"])
    return total.item() / max(1, c.final_probe_batches)


@torch.no_grad()
def eval_action_probe_mse(lam: LAPO, probe: nn.Linear, data: TrajectoryData, c: LAPOConfig, device) -> float:
    """Action-probe MSE over every consecutive pair (o_t, o_{t+1}) of a dataset."""
    lam.eval()
    valid = data.valid_indices(1)
    total = torch.zeros((), device=device)
    for idx in valid.split(c.batch_size):
        b = data.batch(idx, c.frame_stack, next_obs=True)
        with autocast(device):
            z = lam.label(normalize_obs(b["obs"]), normalize_obs(b["next_obs"]))  # [B, Z]
        total += F.mse_loss(probe(z.float()), b["actions"], reduction="sum") / b["actions"].shape[1]
    return dist.global_mean(total, len(valid)).item()  # over every rank's share


def train_lam(run: Run) -> LAPO:
    cfg, c, device = run.cfg, run.cfg.lapo, run.device
    data = run.load(c.data_path, c.frame_stack, c.max_trajectories, min_offset=c.future_obs_offset)
    valid = data.valid_indices(c.future_obs_offset)
    run.seed_stage("lapo")  # its random streams from (seed, stage name) alone, before its networks
    lam, probe = [m.to(device) for m in build_models(cfg, data.shapes, "lam", "probe").values()]
    compile_networks(cfg.compile, lam)
    optim = make_optimizer(lam, "adam", c.learning_rate, c.weight_decay)
    probe_optim = make_optimizer(probe, "adam", c.learning_rate)
    objects = {"lam": lam, "probe": probe, "optim": optim, "probe_optim": probe_optim}
    # floor(N / B) batches per epoch: the released LAPO drops the last partial batch
    stage, batches = Stage.on_data("lapo", "lam.pt", objects, run, c, data, valid, reuse_metrics=True)
    # the closed-form ridge probe of the current latents (src/probes.py)
    probe_now = lambda eval_data=None: ridge_probe(lam.label, data, c.frame_stack, c.batch_size, device,
                                                   c.ridge_probe_samples, eval_data=eval_data)  # fmt: skip
    curve = ProbeCurve(run.dir / "lam-ridge-curve.json", c.ridge_probe_every if c.ridge_probe_samples else 0)
    curve.before_training(stage, lam, probe_now)
    for step in stage.updates():
        batch = data.batch(next(batches), c.frame_stack, future_offset=c.future_obs_offset, next_obs=True)
        obs = normalize_obs(batch["obs"])  # o_t [B, 3k, H, W] in [-1, 1]
        future_obs = normalize_obs(batch["future_obs"])  # o_{t+k}
        next_obs = normalize_obs(batch["next_obs"])  # o_{t+1}, the reconstruction target
        with autocast(device):
            pred_next_obs, latent_action, quant_loss = lam(obs, future_obs)
        mse_loss = F.mse_loss(pred_next_obs.float(), next_obs)
        loss = mse_loss + quant_loss  # quant_loss: VQ's commitment loss, 0 without VQ
        optim.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(lam)  # the gradient over the global batch (all ranks)
        if c.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(lam.parameters(), c.grad_norm)
        optim.step()
        stage.sched.step()

        with autocast(device):
            pred_action = probe(latent_action.detach())
        probe_loss = F.mse_loss(pred_action.float(), batch["actions"])
        probe_optim.zero_grad(set_to_none=True)
        probe_loss.backward()
        dist.average_gradients(probe)
        probe_optim.step()
        latent_std = latent_action.detach().float().std(0).mean()
        stage.log(step, loss, mse_loss=mse_loss, quantizer_loss=quant_loss, action_probe_mse_loss=probe_loss,
                  latent_action_std=latent_std)  # fmt: skip
        curve.maybe_add(step, stage.total, lam, probe_now)

    def probe_metrics() -> dict:
        # The paper's quality metric: linear-probe MSE of the latent actions to the true actions.
        out = {"lapo/final_action_probe_mse": final_probe_mse(lam, probe, data, valid, c, device)}
        eval_data = None
        if c.eval_data_path:
            eval_data = run.load(c.eval_data_path, c.frame_stack, like=data, what="evaluation")
            out["lapo/eval_action_probe_mse"] = eval_action_probe_mse(lam, probe, eval_data, c, device)
        # The same quality measure with no probe training: a closed-form ridge fit (nothing when samples is 0).
        out |= probe_now(eval_data)
        if curve.every:  # [update, validation MSE, test MSE(, leakage R²)] at each point, the last the final probe
            out["lapo/ridge_probe_curve"] = curve.points(out, stage.total)
        out |= curve.init_metrics()  # the same probe of the initialised network (update 0): lapo/init/...
        return out

    stage.final_metrics(probe_metrics)  # a reused LAM: its run's metrics, no data read
    lam.eval().requires_grad_(False)
    return lam


# ---------------------------------------------------------------- stage 2: latent behaviour cloning


def train_latent_bc(run: Run, lam: LAPO) -> Actor:
    cfg, c, device = run.cfg, run.cfg.bc, run.device
    data = run.load(c.data_path, c.frame_stack, c.max_trajectories)
    valid = data.valid_indices(1)  # consecutive pairs (o_t, o_{t+1})
    run.seed_stage("bc")  # its random streams from (seed, stage name) alone, before its networks
    actor, debug_head = [m.to(device) for m in build_models(cfg, data.shapes, "actor", "debug_head").values()]
    compile_networks(cfg.compile, actor)
    optim = make_optimizer(actor, "adamw", c.learning_rate, c.weight_decay)
    # The debug head: a group of the actor's AdamW (Adam's update is per parameter), so under the stage's schedule,
    # with AdamW's default weight decay 0.01 on all its parameters, biases included, as released.
    optim.add_param_group({"params": list(debug_head.parameters()), "weight_decay": 0.01})
    objects = {"actor": actor, "debug_head": debug_head, "optim": optim}
    stage, batches = Stage.on_data("bc", "latent_bc.pt", objects, run, c, data, valid)  # floor(N / B) batches an epoch
    aug = Augmenter() if c.use_aug else None
    for step in stage.updates():
        b = data.batch(next(batches), c.frame_stack, next_obs=True)
        obs, next_obs = normalize_obs(torch.cat([b["obs"], b["next_obs"]])).chunk(2)  # [B, 3k, H, W] each
        target = lam.label(obs, next_obs)  # [B, Z]: frozen LAM, no augmentation, fp32 (outside autocast)
        with autocast(device):
            pred, _ = actor(aug(obs) if aug is not None else obs)  # [B, Z]
            act_pred = debug_head(pred.detach())  # [B, A]
        loss = F.mse_loss(pred.float(), target.float())
        debug_loss = F.mse_loss(act_pred.float(), b["actions"])
        optim.zero_grad(set_to_none=True)
        (loss + debug_loss).backward()
        dist.average_gradients(actor, debug_head)  # the gradient over the global batch (all ranks)
        optim.step()
        stage.sched.step()
        stage.log(step, loss, mse_loss=loss, debug_action_mse_loss=debug_loss)

    actor.eval().requires_grad_(False)
    debug_head.eval()
    policy = lambda obs: debug_head(actor(normalize_obs(obs))[0])  # fp32: evaluation runs without autocast
    # actor + debug head: a diagnostic, not a paper number (no normalised score)
    stage.final_metrics(lambda: evaluate_for_dataset(policy, data.attrs, c, cfg, c.frame_stack, device, "bc", False))
    return actor


# ---------------------------------------------------------------- stage 3: action decoder


def train_decoder(run: Run, actor: Actor) -> ActionMLP:
    cfg, c, device, frame_stack = run.cfg, run.cfg.decoder, run.device, run.cfg.bc.frame_stack
    reference = run.load(cfg.bc.data_path, frame_stack, cfg.bc.max_trajectories)
    data = run.load(c.data_path, frame_stack, c.max_trajectories, like=reference, what="decoder (labeled)")
    valid = data.valid_indices(1)  # transitions t = 0 .. T-2: a trajectory's last frame is never an input
    run.seed_stage("decoder")  # its random streams from (seed, stage name) alone, before its networks
    decoder = build_models(cfg, data.shapes, "decoder")["decoder"].to(device)
    compile_networks(cfg.compile, decoder)
    optim = make_optimizer(decoder, "adamw", c.learning_rate, c.weight_decay)
    objects = {"decoder": decoder, "optim": optim}
    stage, batches = Stage.on_data(
        "decoder", "decoder.pt", objects, run, c, data, valid, drop_last=False, whole_epochs=True
    )
    aug = Augmenter() if c.use_aug else None
    for step in stage.updates():
        b = data.batch(next(batches), frame_stack)
        obs = normalize_obs(b["obs"])  # [B, 3k, H, W] in [-1, 1]
        if aug is not None:
            obs = aug(obs)
        with autocast(device):
            with torch.no_grad():
                z, _ = actor(obs)  # [B, Z], frozen actor
            pred = decoder(z)  # [B, A]
        loss = F.mse_loss(pred.float(), b["actions"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        dist.average_gradients(decoder, samples=len(obs))  # over the global batch (all ranks), partial or not
        optim.step()
        stage.sched.step()
        stage.log(step, loss, mse_loss=loss)

    decoder.eval()
    policy = lambda obs: decoder(actor(normalize_obs(obs))[0])  # fp32: evaluation runs without autocast
    stage.final_metrics(lambda: evaluate_for_dataset(policy, data.attrs, c, cfg, frame_stack, device, "decoder"))
    return decoder


@pyrallis.wrap()
def train(cfg: Config) -> dict:
    if cfg.lapo.frame_stack != cfg.bc.frame_stack:  # the LAM labels the actor's observations
        raise ConfigError(f"bc.frame_stack={cfg.bc.frame_stack} must equal lapo.frame_stack={cfg.lapo.frame_stack}")
    run = start_run(cfg)
    lam = train_lam(run)
    if not cfg.lam_only:
        actor = train_latent_bc(run, lam)
        train_decoder(run, actor)
    return run.finish()


if __name__ == "__main__":
    main(train)
