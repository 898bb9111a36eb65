"""LAOM: latent action learning with observation-space prediction (paper, Appendix D-F, Table 6).

Three stages, one file:
1. `lapo` — the latent action model. One ResNet encoder embeds o_t and o_{t+k} (k uniform in 1..K); a latent IDM
   (re-fed multi-layer MLP) maps the two embeddings to a latent action z; a latent FDM predicts, from the
   stop-gradient embedding of o_t and z, the embedding of o_{t+1} given by an EMA target encoder. Loss: MSE in
   embedding space. Augmentations on every image. Linear probes (latent -> true action, the paper's quality
   metric; embedding -> state; embedding -> true action) are trained alongside on detached inputs.
2. `bc` — latent behaviour cloning: an Actor regresses the frozen LAM's latent action of (o_t, o_{t+1}) on the
   full dataset; a small debug head maps the actor's output to true actions so the actor can be evaluated.
3. `decoder` — the actor is frozen; an MLP decodes its latent actions into true actions, trained on the
   labeled trajectories only, then the actor + decoder are evaluated in the DCS environment.

    python -m train_laom --config_path configs/laom.yaml \
        --lapo.data_path=<full.hdf5> --bc.data_path=<full.hdf5> --decoder.data_path=<labeled-1000xN.hdf5> \
        --bc.dcs_backgrounds_path=DAVIS/JPEGImages/480p --decoder.dcs_backgrounds_path=DAVIS/JPEGImages/480p

One LAM and latent BC serve every label budget: reuse them with `--lapo.checkpoint_path=<run>/lam.pt
--bc.checkpoint_path=<run>/latent_bc.pt` and only the decoder is trained.
"""

import copy
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
from src.nn import ActionMLP, Actor, ReFedMLP, ResNetEncoder, compile_networks, encoder_out_dim, weight_init
from src.optim import autocast, make_optimizer, soft_update
from src.probes import ProbeCurve, ridge_probe
from src.run import Run, RunConfig, main, start_run
from src.stage import Stage


@dataclass
class LAOMConfig:
    data_path: str = "data/example-data.hdf5"  # HDF5 dataset of the latent action model (the full, "unlabeled" set)
    eval_data_path: Optional[str] = None  # optional set with novel distractors: final action-probe MSE on it
    max_trajectories: Optional[int] = None  # use only the first N trajectories of data_path (None: all)
    num_epochs: int = 10  # passes over the data
    batch_size: int = 512  # samples per update
    learning_rate: float = 1e-4  # peak Adam learning rate (the probes use it too, constant)
    weight_decay: Optional[float] = None  # weight decay (never on biases / norms; None: none)
    warmup_epochs: float = 3  # linear warm-up length, in epochs
    lr_schedule: str = "linear"  # decay after warm-up: linear (released code), cosine (paper text), constant
    grad_norm: Optional[float] = None  # gradient-norm clipping of the LAM (None: off)
    frame_stack: int = 3  # stacked frames per observation
    future_obs_offset: int = 10  # K: o_{t+k} with k uniform in 1..K is the IDM's second input
    encoder_scale: int = 6  # channel multiplier of the ResNet encoder
    encoder_deep: bool = False  # 5 encoder blocks instead of 3
    encoder_num_res_blocks: int = 2  # residual units per encoder block
    encoder_dropout: float = 0.0  # dropout inside the encoder's residual units
    encoder_norm_out: bool = False  # LayerNorm without affine parameters on the flattened embedding
    act_head_dim: int = 1024  # hidden size H of the latent IDM
    act_head_dropout: float = 0.0  # dropout in the latent IDM's MLP blocks
    obs_head_dim: int = 1024  # hidden size H of the latent FDM
    obs_head_dropout: float = 0.0  # dropout in the latent FDM's MLP blocks
    latent_action_dim: int = 8192  # Z: size of the latent action
    target_tau: float = 0.001  # EMA rate of the target encoder
    target_update_every: int = 1  # optimizer steps between EMA updates of the target encoder
    use_aug: bool = True  # random per-image augmentation of o_t, o_{t+k} and o_{t+1}, each independently
    cosine_loss: bool = False  # temporal consistency by cosine similarity instead of MSE (the paper uses MSE)
    final_probe_batches: int = 10  # batches averaged for the final probe MSEs written to results.json
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
    name: str = "laom"  # run name (wandb and default run directory)
    lam_only: bool = False  # end the run after the latent action model (its probes are the result)
    lapo: LAOMConfig = field(default_factory=LAOMConfig)
    bc: LatentBCConfig = field(default_factory=LatentBCConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


# ---------------------------------------------------------------- networks


class LAOM(nn.Module):
    """Shared encoder + latent IDM + latent FDM (docs/FAITHFULNESS.md). The EMA target encoder lives outside."""

    def __init__(self, c: LAOMConfig, img_hw: int = 64):
        super().__init__()
        self.encoder = ResNetEncoder(
            3 * c.frame_stack, c.encoder_scale, c.encoder_deep, c.encoder_num_res_blocks, c.encoder_dropout
        )
        emb_dim = self.encoder.out_dim(img_hw)  # D = last channels * 8 * 8 at 64 px
        self.emb_dim, self.latent_dim = emb_dim, c.latent_action_dim
        self.norm_out = nn.LayerNorm(emb_dim, elementwise_affine=False) if c.encoder_norm_out else nn.Identity()
        # Latent IDM: [e_t, e_tk] re-fed at every layer -> z.
        self.idm = ReFedMLP(2 * emb_dim, 2 * emb_dim, c.act_head_dim, c.latent_action_dim, 3, c.act_head_dropout)
        # Latent FDM: [sg(e_t), z] -> h, then z re-fed at every layer -> predicted embedding of o_{t+1}.
        z_dim = c.latent_action_dim
        self.fdm = ReFedMLP(emb_dim + z_dim, z_dim, c.obs_head_dim, emb_dim, 3, c.obs_head_dropout)
        self.apply(weight_init)

    def encode(self, obs: torch.Tensor, encoder: Optional[nn.Module] = None) -> torch.Tensor:
        """[N, 3k, H, W] -> [N, D] (flattened, optionally normalised); `encoder` replaces the online one."""
        return self.norm_out((self.encoder if encoder is None else encoder)(obs).flatten(1))

    def latent_action(self, obs: torch.Tensor, future_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(o_t, o_{t+k}) [B, 3k, H, W] each -> (z [B, Z], e_t [B, D]); the encoder sees both as one batch of 2B."""
        e_t, e_tk = self.encode(torch.cat([obs, future_obs])).chunk(2)
        x = torch.cat([e_t, e_tk], dim=-1)  # [B, 2D]
        return self.idm(x, x), e_t

    def predict_next(self, e_t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(e_t [B, D], z [B, Z]) -> predicted embedding of o_{t+1} [B, D]; no gradient flows into e_t."""
        return self.fdm(torch.cat([e_t.detach(), z], dim=-1), z)

    @torch.no_grad()
    def label(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Latent action of consecutive frames (o_t, o_{t+1}): the targets of latent BC. [B, Z]."""
        return self.latent_action(obs, next_obs)[0]


class Probes(nn.Module):
    """Linear probes on detached inputs: latent -> true action, embedding -> state, embedding -> true action."""

    def __init__(self, latent_dim: int, emb_dim: int, act_dim: int, state_dim: int):
        super().__init__()
        self.action = nn.Linear(latent_dim, act_dim)
        self.state = nn.Linear(emb_dim, state_dim)
        self.obs_action = nn.Linear(emb_dim, act_dim)  # PyTorch's default init (not orthogonal), as released

    def forward(self, z, e_t, actions, states) -> dict[str, torch.Tensor]:
        z, e_t = z.detach().float(), e_t.detach().float()
        return {
            "action_probe_mse_loss": F.mse_loss(self.action(z), actions),
            "state_probe_mse_loss": F.mse_loss(self.state(e_t), states),
            "obs_action_probe_mse_loss": F.mse_loss(self.obs_action(e_t), actions),
        }


def build_models(cfg: Config, shapes: Shapes, *names: str) -> dict[str, nn.Module]:
    """The stages' networks (all, or those named), freshly initialised, as count_params.py counts them (Table 4)."""
    c, b, a = cfg.lapo, cfg.bc, shapes.act_dim
    z, emb_dim = c.latent_action_dim, encoder_out_dim(c.encoder_scale, c.encoder_deep, shapes.img_hw)
    builders = {
        "lam": lambda: LAOM(cfg.lapo, shapes.img_hw),
        "probes": lambda: Probes(z, emb_dim, a, shapes.state_dim),
        "actor": lambda: Actor(
            3 * b.frame_stack, z, b.encoder_scale, b.encoder_deep, b.encoder_num_res_blocks, b.dropout
        ),
        "debug_head": lambda: ActionMLP(z, a, 256, activation=nn.ReLU),  # 256 hidden units, as released
        "decoder": lambda: ActionMLP(z, a, cfg.decoder.hidden_dim),
    }
    # convolution weights channels_last (docs/SPEED.md): the same parameters and state_dict, faster convolutions
    return {name: builders[name]().to(memory_format=torch.channels_last) for name in names or builders}


# ---------------------------------------------------------------- stage 1: latent action model


def temporal_consistency_loss(pred: torch.Tensor, target: torch.Tensor, cosine: bool) -> torch.Tensor:
    """The latent FDM's loss against the target embedding of o_{t+1}, [B, D] each: MSE (the paper), or
    1 - cosine similarity averaged over the batch (`cosine_loss`, an option of the released configs)."""
    pred, target = pred.float(), target.float()
    if cosine:
        return 1.0 - F.cosine_similarity(pred, target, dim=-1).mean()
    return F.mse_loss(pred, target)


def stage1_batch(data: TrajectoryData, idx: torch.Tensor, c: LAOMConfig, aug: Optional[Augmenter]):
    """(o_t, o_{t+k}, o_{t+1}) as float [B, 3k, H, W] in [-1, 1] + the batch. With augmentation, each of the three
    is augmented as by its own call of the augmenter, as released: a call draws one rotation and one perspective for
    all of its images (and a shift per image), so the three observations of a sample are transformed differently.
    On a GPU the three go through the augmenter in one pass (Augmenter.apply_each): the same random numbers and
    images as three calls (tests/test_train_laom.py)."""
    b = data.batch(idx, c.frame_stack, future_offset=c.future_obs_offset, next_obs=True)
    obs = [normalize_obs(b[k]) for k in ("obs", "future_obs", "next_obs")]
    if aug is not None:
        obs = aug.apply_each(obs, [aug.draw(x) for x in obs])
    return *obs, b


@torch.no_grad()
def final_probe_mse(lam: LAOM, probes: Probes, data, valid, c: LAOMConfig, aug, device) -> dict:
    """Probe MSEs averaged over c.final_probe_batches fresh batches, drawn and augmented as in training (no update)."""
    lam.eval()
    sums = None
    for _ in range(c.final_probe_batches):
        obs, future_obs, _, b = stage1_batch(data, data.sample(valid, c.batch_size), c, aug)
        with autocast(device):
            z, e_t = lam.latent_action(obs, future_obs)
        losses = probes(z, e_t, b["actions"], b["states"])
        sums = losses if sums is None else {k: sums[k] + v for k, v in losses.items()}
    return {f"lapo/final_{k.removesuffix('_loss')}": (v / c.final_probe_batches).item() for k, v in sums.items()}


@torch.no_grad()
def eval_action_probe_mse(lam: LAOM, probes: Probes, data: TrajectoryData, c: LAOMConfig, device) -> float:
    """Action-probe MSE over every consecutive pair (o_t, o_{t+1}) of a dataset, no augmentation."""
    lam.eval()
    valid = data.valid_indices(1)
    total = torch.zeros((), device=device)
    for idx in valid.split(c.batch_size):
        b = data.batch(idx, c.frame_stack, next_obs=True)
        with autocast(device):
            z, _ = lam.latent_action(normalize_obs(b["obs"]), normalize_obs(b["next_obs"]))
        total += F.mse_loss(probes.action(z.float()), b["actions"], reduction="sum") / b["actions"].shape[1]
    return dist.global_mean(total, len(valid)).item()  # over every rank's share


def train_lam(run: Run) -> LAOM:
    cfg, c, device = run.cfg, run.cfg.lapo, run.device
    data = run.load(c.data_path, c.frame_stack, c.max_trajectories, min_offset=c.future_obs_offset, load_states=True)
    valid = data.valid_indices(c.future_obs_offset)  # t with t + K <= T - 1
    run.seed_stage("lapo")  # its random streams from (seed, stage name) alone, before its networks
    lam, probes = [m.to(device) for m in build_models(cfg, data.shapes, "lam", "probes").values()]
    target_encoder = copy.deepcopy(lam.encoder).requires_grad_(False).eval()  # EMA copy made at initialisation
    compile_networks(cfg.compile, lam)
    optim = make_optimizer(lam, "adam", c.learning_rate, c.weight_decay)
    # One Adam over the three probes is three Adams: Adam's update is per parameter. Constant learning rate.
    probe_optim = make_optimizer(probes, "adam", c.learning_rate)
    objects = {"lam": lam, "target_encoder": target_encoder, "probes": probes}
    objects |= {"optim": optim, "probe_optim": probe_optim}
    # ceil(N / B) batches per epoch: the last partial batch of each epoch is kept, as released (LAPO drops it)
    stage, batches = Stage.on_data("lapo", "lam.pt", objects, run, c, data, valid, drop_last=False, reuse_metrics=True)
    aug = Augmenter() if c.use_aug else None
    # the closed-form ridge probe of the current latents (src/probes.py)
    probe_now = lambda eval_data=None: ridge_probe(lam.label, data, c.frame_stack, c.batch_size, device,
                                                   c.ridge_probe_samples, eval_data=eval_data)  # fmt: skip
    curve = ProbeCurve(run.dir / "lam-ridge-curve.json", c.ridge_probe_every if c.ridge_probe_samples else 0)
    curve.before_training(stage, lam, probe_now)
    for step in stage.updates():
        obs, future_obs, next_obs, b = stage1_batch(data, next(batches), c, aug)
        with autocast(device):
            z, e_t = lam.latent_action(obs, future_obs)  # [B, Z], [B, D]
            pred = lam.predict_next(e_t, z)  # [B, D]
            with torch.no_grad():
                target = lam.encode(next_obs, target_encoder)  # [B, D], EMA encoder of o_{t+1}
        loss = temporal_consistency_loss(pred, target, c.cosine_loss)
        probe_losses = probes(z, e_t, b["actions"], b["states"])

        optim.zero_grad(set_to_none=True)
        probe_optim.zero_grad(set_to_none=True)
        (loss + sum(probe_losses.values())).backward()  # the probes' inputs are detached
        dist.average_gradients(lam, probes, samples=len(obs))  # over the global batch (all ranks), partial or not
        if c.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(lam.parameters(), c.grad_norm)
        optim.step()
        probe_optim.step()
        stage.sched.step()
        if stage.every(c.target_update_every, step):
            soft_update(target_encoder, lam.encoder, c.target_tau)
        stage.log(step, loss, mse_loss=loss, **probe_losses)
        curve.maybe_add(step, stage.total, lam, probe_now)

    def probe_metrics() -> dict:
        # The paper's quality metric: linear-probe MSE of the latent actions to the true actions.
        out = final_probe_mse(lam, probes, data, valid, c, aug, device)
        eval_data = None
        if c.eval_data_path:
            eval_data = run.load(c.eval_data_path, c.frame_stack, like=data, what="evaluation")
            out["lapo/eval_action_probe_mse"] = eval_action_probe_mse(lam, probes, eval_data, c, device)
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


def train_latent_bc(run: Run, lam: LAOM) -> Actor:
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
