"""Behaviours of the released code that shape the paper's numbers (docs/FAITHFULNESS.md): initialisation of the
probes and decoders, fp32 stage-2 labels and evaluation rollouts, the decoder's data, the summed evaluation MSE,
the BC learning-rate schedule, the release's YAML fields and the cosine temporal-consistency option."""

import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pyrallis
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import src.augs
import src.nn
import src.stage
import train_bc
import train_idm
import train_laom
import train_laom_labels
import train_lapo
from src.data import Shapes, load_dataset
from src.optim import make_scheduler, setup_backends

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"


def write_dataset(path: Path, lengths=(30, 27), act_dim: int = 6, state_dim: int = 17) -> Path:
    """Random frames in the released layout (cheetah-run attributes), actions on the raw expert scale."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs.update(domain_name="cheetah", task_name="run", difficulty="scale_easy_video_hard", dynamic=True)
        f.attrs.update(img_hw=64, split="train", dataset_return=0.0)
        for i, n in enumerate(lengths):
            g = f.create_group(str(i))
            g["obs"] = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
            g["actions"] = rng.normal(scale=5.0, size=(n, act_dim)).astype(np.float32)
            g["states"] = rng.normal(size=(n, state_dim)).astype(np.float32)
            g.attrs["traj_return"] = 0.0
    return path


# ---------------------------------------------------------------- initialisation


def is_orthogonal_init(layer: nn.Linear) -> bool:
    """Orthogonal weights (rows or columns orthonormal) and zero bias: the init of section 3 of the facts."""
    w = layer.weight.detach().double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5) and not layer.bias.any()


def is_default_init(layer: nn.Linear) -> bool:
    """PyTorch's default Linear init: weights and bias uniform in +-1/sqrt(fan_in), the bias not zero."""
    bound = 1 / math.sqrt(layer.in_features)
    return layer.bias.any() and layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


@pytest.mark.parametrize("module", [train_lapo, train_laom, train_laom_labels])
def test_probes_debug_head_and_decoder_keep_pytorch_default_init(module):
    cfg = module.Config()
    cfg.lapo.latent_action_dim, cfg.lapo.encoder_scale, cfg.bc.encoder_scale = 64, 1, 1
    for name in ("act_head_dim", "obs_head_dim"):
        if hasattr(cfg.lapo, name):
            setattr(cfg.lapo, name, 32)
    models = module.build_models(cfg, Shapes(6, 17, 64))
    probes = models["probe"] if "probe" in models else models["probes"]
    defaults = [m for m in probes.modules() if isinstance(m, nn.Linear)]
    defaults += [m for key in ("debug_head", "decoder") for m in models[key].modules() if isinstance(m, nn.Linear)]
    assert defaults and all(is_default_init(m) for m in defaults)
    orthogonal = [m for key in ("lam", "actor") for m in models[key].modules() if isinstance(m, nn.Linear)]
    assert orthogonal and all(is_orthogonal_init(m) for m in orthogonal)
    if module is train_laom_labels:
        assert is_orthogonal_init(models["lam"].action_head)  # the supervised head is part of the LAM


# ---------------------------------------------------------------- one instrumented LAOM + supervision run


@pytest.fixture(scope="module")
def instrumented_run(tmp_path_factory):
    """A tiny LAOM + supervision run with bf16 autocast on the CPU (--precision=bf16, as the GPU runs), recording
    the autocast state of every stage-2 LAM label and every evaluation-time forward of the heads, and the batches
    the decoder is given."""
    tmp = tmp_path_factory.mktemp("faithful")
    data = write_dataset(tmp / "tiny.hdf5")
    record = {"labels": [], "heads": [], "epochs": [], "aug_draws": [], "aug_passes": []}
    original_label, original_head = train_laom_labels.LAOMLabels.label, src.nn.ActionMLP.forward
    original_epochs = src.stage.infinite_epochs
    original_draw, original_apply_each = src.augs.Augmenter.sample_params, src.augs.Augmenter.apply_each

    def draw(self, n, size, device):  # the random parameters of one release call
        record["aug_draws"].append(n)
        return original_draw(self, n, size, device)

    def apply_each(self, images, params):  # one resampling pass on a GPU
        record["aug_passes"].append([len(x) for x in images])
        return original_apply_each(self, images, params)

    def label(self, obs, next_obs):
        z = original_label(self, obs, next_obs)
        record["labels"].append((torch.is_autocast_enabled("cpu"), z.dtype))
        return z

    def head(self, z):
        out = original_head(self, z)
        record["heads"].append((self.training, torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    def epochs(data, valid, batch_size, drop_last=True, **kwargs):
        batches = original_epochs(data, valid, batch_size, drop_last, **kwargs)
        entry = {"valid": valid.clone(), "drop_last": drop_last, "sizes": [], "path": data.path}
        record["epochs"].append(entry)
        for b in batches:
            entry["sizes"].append(len(b))
            yield b

    args = [
        f"--run_dir={tmp / 'run'}",
        "--wandb_mode=disabled",
        "--device=cpu",
        "--precision=bf16",
        "--log_every=2",
        f"--lapo.data_path={data}",
        f"--lapo.labeled_data_path={data}",
        f"--lapo.eval_data_path={data}",
        "--lapo.encoder_scale=1",
        "--lapo.latent_action_dim=32",
        "--lapo.act_head_dim=32",
        "--lapo.obs_head_dim=32",
        "--lapo.batch_size=16",
        "--lapo.labeled_batch_size=8",
        "--lapo.num_epochs=1",
        "--lapo.final_probe_batches=1",
        f"--bc.data_path={data}",
        "--bc.encoder_scale=1",
        "--bc.batch_size=16",
        "--bc.num_epochs=1",
        "--decoder.batch_size=16",
        "--decoder.hidden_dim=32",
        "--decoder.total_updates=10",
        "--bc.eval_episodes=0",
        "--decoder.eval_episodes=0",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_laom_labels.LAOMLabels, "label", label)
        mp.setattr(src.nn.ActionMLP, "forward", head)
        mp.setattr(src.stage, "infinite_epochs", epochs)
        mp.setattr(src.augs.Augmenter, "sample_params", draw)
        mp.setattr(src.augs.Augmenter, "apply_each", apply_each)
        mp.setattr(sys, "argv", ["train_laom_labels", *args])
        results = train_laom_labels.train()
    setup_backends(torch.device("cpu"), "auto")  # the precision is process-wide: back to the default
    return {"record": record, "results": results, "data": data}


def test_stage2_lam_labels_are_fp32_outside_autocast(instrumented_run):
    labels = instrumented_run["record"]["labels"]
    assert labels and all(enabled is False and dtype == torch.float32 for enabled, dtype in labels)
    # the training forwards of the heads did run under bf16 autocast: the instrument sees it
    assert any(training and enabled for training, enabled, _ in instrumented_run["record"]["heads"])


def test_stage1_draws_each_observation_as_its_own_call_in_one_pass(instrumented_run):
    """o_t, o_{t+k}, o_{t+1} (batch 16) and the labeled o_t, o_{t+k} (8) each get the random parameters of their
    own augmenter call per update, as released (a call shares its rotation / perspective parameters, so one draw for
    all of them would not do), and all of them are handed to the augmenter at once (one pass on a GPU)."""
    draws, passes = instrumented_run["record"]["aug_draws"], instrumented_run["record"]["aug_passes"]
    updates = instrumented_run["results"]["stages"]["lapo"]["lapo/updates"]
    final = instrumented_run["results"]["config"]["lapo"]["final_probe_batches"]
    stage1 = instrumented_run["record"]["epochs"][0]  # the epoch's last partial batch kept, as released
    assert not stage1["drop_last"] and len(stage1["sizes"]) == updates
    assert draws == [n for b in stage1["sizes"] for n in (b, b, b, 8, 8)] + [16, 16, 16] * final
    assert passes == [[b, b, b, 8, 8] for b in stage1["sizes"]] + [[16, 16, 16]] * final


def test_evaluation_policy_runs_in_fp32():
    """evaluate() runs the policy with autocast disabled, even inside a bf16 autocast region."""
    from src.evaluation import evaluate

    seen = []

    def policy(obs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return torch.zeros(obs.shape[0], 6)

    kwargs = dict(domain_name="cheetah", task_name="run", difficulty="vanilla", max_episode_steps=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = evaluate(policy, kwargs, num_episodes=1, seed=0, num_envs=1)
    assert len(out["returns"]) == 1 and seen == [False, False, False]


def test_decoder_trains_on_transitions_with_the_last_partial_batch(instrumented_run):
    entry = instrumented_run["record"]["epochs"][-1]  # stage 1, latent BC, decoder
    assert not entry["drop_last"]
    data = load_dataset(str(instrumented_run["data"]), frame_stack=3, min_offset=1)
    # t = 0 .. T-2 of each trajectory: 29 + 26 transitions; the last frame of a trajectory is never an input
    assert sorted(entry["valid"].tolist()) == sorted(data.valid_indices(1).tolist()) and len(entry["valid"]) == 55
    # 55 transitions in batches of 16: 16, 16, 16, 7 per epoch (the last partial batch kept), whole epochs for
    # about total_updates = 10 updates: 10 // 4 = 2 epochs = 8 updates
    assert entry["sizes"] == [16, 16, 16, 7] * 2
    assert instrumented_run["results"]["stages"]["decoder"]["decoder/updates"] == 8


# ---------------------------------------------------------------- metrics


def test_eval_action_mse_sums_over_action_dimensions(instrumented_run, tmp_path, fp32):
    """The evaluation MSE of LAOM + supervision and of the IDM: sum over the A action dimensions, mean over samples
    (A times the per-element mean; Fig. 9a)."""
    data = load_dataset(str(instrumented_run["data"]), frame_stack=3, min_offset=1, load_states=False)
    c = train_laom_labels.LAOMLabelsConfig(encoder_scale=1, latent_action_dim=32, act_head_dim=32, obs_head_dim=32)
    lam = train_laom_labels.LAOMLabels(c, 6, 64)
    torch.nn.init.normal_(lam.action_head.bias, std=3.0)  # errors of several units, as on the raw action scale
    b = data.batch(data.valid_indices(1), 3, next_obs=True)
    with torch.no_grad():
        z, _ = lam.latent_action((b["obs"].float() / 255 - 0.5) * 2, (b["next_obs"].float() / 255 - 0.5) * 2)
        per_sample = (lam.action_head(z) - b["actions"]).pow(2).sum(1)  # [N]
    got = float(train_laom_labels.eval_action_mse(lam, data, c, torch.device("cpu")))
    assert got == pytest.approx(float(per_sample.mean()), rel=1e-4)
    assert got == pytest.approx(6 * F.mse_loss(lam.action_head(z), b["actions"]).item(), rel=1e-4)

    ci = train_idm.IDMConfig(encoder_scale=1, act_head_dim=32)
    idm = train_idm.build_idm(ci, act_dim=6, img_hw=64)
    with torch.no_grad():
        pred = idm((b["obs"].float() / 255 - 0.5) * 2, (b["next_obs"].float() / 255 - 0.5) * 2)
    got = train_idm.eval_action_mse(idm, data, 3, 16, torch.device("cpu"))
    assert got == pytest.approx(float((pred - b["actions"]).pow(2).sum(1).mean()), rel=1e-4)


# ---------------------------------------------------------------- BC schedule


def lrs(kind: str, total: int, warmup: int, cooldown: float) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, total, warmup, kind, cooldown)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_bc_schedule_is_constant_with_sqrt_cooldown():
    assert train_bc.BCConfig().lr_schedule == "cooldown"
    for name in ("bc", "bc-full"):
        cfg = pyrallis.parse(train_bc.Config, config_path=str(ROOT / "configs" / f"{name}.yaml"), args=[])
        assert (cfg.bc.lr_schedule, cfg.bc.cooldown_ratio) == ("cooldown", 0.0), name
    # the paper's cooldown_ratio 0: constant after warm-up, to the last update
    assert lrs("cooldown", 100, 10, 0.0)[10:] == [1.0] * 90
    assert lrs("cooldown", 100, 10, 0.0)[:10] == pytest.approx([i / 10 for i in range(10)])  # from lr 0
    # cooldown_ratio 0.2: constant to update 80, then 1 - sqrt(progress through the last 20 updates)
    got = lrs("cooldown", 100, 0, 0.2)
    assert got[:80] == [1.0] * 80
    assert got[80:] == pytest.approx([1 - math.sqrt(i / 20) for i in range(20)])
    with pytest.raises(ValueError, match="valid: \\['linear', 'cosine', 'constant', 'cooldown'\\]"):
        make_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, 0, "step")


# ---------------------------------------------------------------- the release's YAML files and cosine_loss


LATENT_BC = dict(dropout=0.0, use_aug=False, batch_size=512, num_epochs=10, frame_stack=3, encoder_deep=False)
LATENT_BC |= dict(weight_decay=None, encoder_scale=32, learning_rate=0.0001, warmup_epochs=0.0)
LATENT_BC |= dict(encoder_num_res_blocks=2, data_path="data/x.hdf5", dcs_backgrounds_path="DAVIS/JPEGImages/480p")
DECODER = dict(use_aug=False, batch_size=512, hidden_dim=256, weight_decay=None, eval_episodes=25)
DECODER |= dict(learning_rate=0.0003, total_updates=2500, warmup_epochs=0.0, dcs_backgrounds_path="DAVIS")
LAOM_LAM = dict(use_aug=True, grad_norm=None, batch_size=512, num_epochs=10, target_tau=0.001, frame_stack=3)
LAOM_LAM |= dict(act_head_dim=1024, encoder_deep=False, obs_head_dim=1024, weight_decay=None, encoder_scale=6)
LAOM_LAM |= dict(learning_rate=0.0001, warmup_epochs=3, encoder_dropout=0.0, act_head_dropout=0.0)
LAOM_LAM |= dict(encoder_norm_out=False, obs_head_dropout=0.0, future_obs_offset=10, latent_action_dim=8192)
LAOM_LAM |= dict(target_update_every=1, encoder_num_res_blocks=2, cosine_loss=False, data_path="data/x.hdf5")
RELEASE_YAMLS = {  # the field names of Appendix F, Tables 5-9 ("names exactly follow the configuration files")
    train_lapo: {
        "lapo": dict(grad_norm=None, batch_size=512, num_epochs=10, frame_stack=3, encoder_deep=False)
        | dict(weight_decay=None, encoder_scale=6, learning_rate=0.0001, warmup_epochs=3, future_obs_offset=10)
        | dict(latent_action_dim=8192, encoder_num_res_blocks=2, data_path="data/x.hdf5"),
        "bc": LATENT_BC,
        "decoder": DECODER | {"data_path": "data/x.hdf5"},
    },
    train_laom: {"lapo": LAOM_LAM, "bc": LATENT_BC, "decoder": DECODER | {"data_path": "data/x.hdf5"}},
    train_laom_labels: {
        "lapo": LAOM_LAM | dict(labeled_loss_coef=0.01, labeled_batch_size=128, labeled_data_path="data/l.hdf5"),
        "bc": LATENT_BC,
        "decoder": DECODER,
    },
    train_idm: {
        "idm": dict(use_aug=False, grad_norm=None, batch_size=512, frame_stack=3, act_head_dim=1024)
        | dict(encoder_deep=False, weight_decay=None, encoder_scale=12, learning_rate=0.0001, total_updates=10000)
        | dict(warmup_epochs=3, encoder_dropout=0.0, act_head_dropout=0.0, future_obs_offset=1)
        | dict(encoder_num_res_blocks=2, data_path="data/l.hdf5"),
        "bc": LATENT_BC | dict(eval_episodes=25),
    },
    train_bc: {
        "bc": dict(dropout=0.0, use_aug=False, batch_size=512, frame_stack=3, encoder_deep=False, weight_decay=0)
        | dict(encoder_scale=32, eval_episodes=25, learning_rate=0.0001, total_updates=10000, warmup_epochs=0)
        | dict(cooldown_ratio=0, encoder_num_res_blocks=2, data_path="data/l.hdf5"),
    },
}


@pytest.mark.parametrize("module", list(RELEASE_YAMLS), ids=lambda m: m.__name__)
def test_release_yaml_fields_load_unchanged(module, tmp_path):
    import yaml

    sections = RELEASE_YAMLS[module]
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump({"project": "laom", "group": "g", "name": "n", **sections}))
    cfg = pyrallis.parse(module.Config, config_path=str(path), args=[])
    for section, values in sections.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, (section, key)


@pytest.mark.parametrize("module", [train_laom, train_laom_labels])
def test_cosine_loss_replaces_the_mse(module):
    pred, target = torch.randn(8, 32), torch.randn(8, 32)
    mse = module.temporal_consistency_loss(pred, target, cosine=False)
    cos = module.temporal_consistency_loss(pred, target, cosine=True)
    assert mse == pytest.approx(F.mse_loss(pred, target).item())
    assert cos == pytest.approx(1 - F.cosine_similarity(pred, target).mean().item())
    # the cosine loss ignores the scale of the prediction; the MSE does not
    assert module.temporal_consistency_loss(3 * pred, target, cosine=True) == pytest.approx(cos.item(), abs=1e-6)
    assert module.temporal_consistency_loss(3 * pred, target, cosine=False) != pytest.approx(mse.item())
