"""LAPO and IDM baseline scripts: exact parameter counts (paper Table 4), FSQ, every stage end to end on tiny data,
results.json, skip-by-checkpoint, resume and the NaN stop."""

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pyrallis
import pytest
import torch

import train_idm
import train_lapo
from src.data import Shapes
from src.nn import num_params

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "example-data.hdf5"
HAS_ENV = importlib.util.find_spec("src.envs") is not None


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    """The embedded example dataset, or (until it exists) a tiny random one in the released layout."""
    if EXAMPLE.exists():
        return str(EXAMPLE)
    path = tmp_path_factory.mktemp("data") / "tiny.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        attrs = {"domain_name": "cheetah", "task_name": "run", "difficulty": "scale_easy_video_hard"}
        attrs.update({"dynamic": True, "img_hw": 64, "split": "train", "dataset_return": 0.0})
        f.attrs.update(attrs)
        for i in range(2):
            g = f.create_group(str(i))
            g["obs"] = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
            g["actions"] = rng.uniform(-1, 1, (40, 6)).astype(np.float32)
            g["states"] = rng.normal(size=(40, 17)).astype(np.float32)
            g.attrs["traj_return"] = 0.0
    return str(path)


def eval_args(*sections: str) -> list[str]:
    """One 20-step evaluation episode per evaluated stage when the environment exists, none otherwise."""
    episodes = 1 if HAS_ENV and EXAMPLE.exists() else 0
    return ["--eval_num_envs=1", "--eval_max_episode_steps=20"] + [f"--{s}.eval_episodes={episodes}" for s in sections]


def lapo_args(data: str, run_dir: Path, *extra: str) -> list[str]:
    tiny = ["--lapo.encoder_scale=1", "--lapo.latent_action_dim=32", "--lapo.batch_size=16", "--lapo.num_epochs=1"]
    tiny += ["--lapo.max_trajectories=3", "--lapo.final_probe_batches=2", "--lapo.warmup_epochs=0"]  # ridge: >= 3
    tiny += ["--bc.encoder_scale=1", "--bc.batch_size=16", "--bc.num_epochs=1", "--bc.max_trajectories=2"]
    tiny += ["--decoder.batch_size=16", "--decoder.total_updates=5", "--decoder.hidden_dim=32"]
    paths = [f"--lapo.data_path={data}", f"--bc.data_path={data}", f"--decoder.data_path={data}"]
    run = [f"--run_dir={run_dir}", "--wandb_mode=disabled", "--device=cpu", "--log_every=5", "--checkpoint_every=5"]
    return paths + tiny + run + eval_args("bc", "decoder") + list(extra)


def idm_args(data: str, run_dir: Path, *extra: str) -> list[str]:
    tiny = ["--idm.encoder_scale=1", "--idm.act_head_dim=32", "--idm.batch_size=32", "--idm.total_updates=8"]
    tiny += ["--idm.eval_every=4", "--idm.warmup_epochs=0", "--idm.max_trajectories=2"]
    tiny += ["--bc.encoder_scale=1", "--bc.batch_size=16", "--bc.num_epochs=1", "--bc.max_trajectories=2"]
    paths = [f"--idm.data_path={data}", f"--idm.eval_data_path={data}", f"--bc.data_path={data}"]
    run = [f"--run_dir={run_dir}", "--wandb_mode=disabled", "--device=cpu", "--log_every=4", "--checkpoint_every=4"]
    return paths + tiny + run + eval_args("bc") + list(extra)


def run(module, args: list[str], monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    return module.train()


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# ---------------------------------------------------------------- parameter counts, FSQ, configs


def test_parameter_counts_at_paper_configs():
    """Paper Table 4, humanoid-walk shapes: A = 21, 64 px, 3 stacked frames."""
    with torch.device("meta"):
        lapo = train_lapo.build_models(train_lapo.Config(), Shapes(21, 67, 64))
        idm = train_idm.build_models(train_idm.Config(), Shapes(21, 67, 64))
        lam_alone = train_lapo.build_lam(train_lapo.LAPOConfig(), 64)
        idm_alone = train_idm.build_idm(train_idm.IDMConfig(), 21, 64)
    assert num_params(lapo["lam"]) == num_params(lam_alone) == 211_847_849  # latent IDM + FDM (no probe)
    assert num_params(idm["idm"]) == num_params(idm_alone) == 192_258_965  # encoder + action head
    assert num_params(lapo["actor"]) == 107_541_504  # latent BC actor with 8192 outputs


def test_paper_yaml_configs_match_defaults_and_readme_command_lines_parse():
    readme = ["--lapo.data_path=data/x.hdf5", "--bc.data_path=data/x.hdf5", "--decoder.data_path=data/x.hdf5"]
    readme += [
        "--bc.dcs_backgrounds_path=DAVIS/JPEGImages/480p",
        "--decoder.dcs_backgrounds_path=DAVIS/JPEGImages/480p",
    ]
    cfg = pyrallis.parse(train_lapo.Config, config_path=str(REPO / "configs/lapo.yaml"), args=readme)
    assert cfg.lapo == train_lapo.LAPOConfig(data_path="data/x.hdf5")
    assert (cfg.lapo.encoder_scale, cfg.lapo.latent_action_dim, cfg.lapo.warmup_epochs, cfg.lapo.quantize) == (
        6,
        8192,
        3,
        "none",
    )
    assert cfg.decoder.dcs_backgrounds_path == "DAVIS/JPEGImages/480p"
    assert (cfg.decoder.total_updates, cfg.decoder.learning_rate, cfg.bc.encoder_scale) == (2500, 3e-4, 32)
    cfg = pyrallis.parse(train_idm.Config, config_path=str(REPO / "configs/idm.yaml"), args=[])
    assert cfg.idm == train_idm.IDMConfig()
    assert (cfg.idm.encoder_scale, cfg.idm.total_updates, cfg.idm.future_obs_offset, cfg.bc.num_epochs) == (
        12,
        10000,
        1,
        10,
    )
    for name, module in (("lapo", train_lapo), ("idm", train_idm)):
        pyrallis.parse(module.Config, config_path=str(REPO / f"configs/example/{name}.yaml"), args=[])


def test_fsq_quantizes_groups_of_three_with_levels_2_2_4():
    """The Fig. 5 ablation as released: [B, Z] -> [B, Z / 3, 3], each group on the FSQ grid of levels (2, 2, 4)."""
    cfg = train_lapo.LAPOConfig(latent_action_dim=24, encoder_scale=1, quantize="fsq")
    assert list(cfg.fsq_levels) == [2, 2, 4]
    lam = train_lapo.build_lam(cfg, img_hw=64)
    obs, future = torch.rand(8, 9, 64, 64) * 2 - 1, torch.rand(8, 9, 64, 64) * 2 - 1
    pred, z, quant_loss = lam(obs, future)
    assert pred.shape == (8, 9, 64, 64) and z.shape == (8, 24) and float(quant_loss) == 0.0
    groups = z.detach().reshape(8, 8, 3)
    # levels 2 -> {-1, 0}; levels 4 -> {-1, -0.5, 0, 0.5} (FSQ's grid, rescaled by levels // 2)
    assert set(groups[..., 0].unique().tolist()) <= {-1.0, 0.0} and set(groups[..., 1].unique().tolist()) <= {-1.0, 0.0}
    assert set(groups[..., 2].unique().tolist()) <= {-1.0, -0.5, 0.0, 0.5}
    # every code of a group is reachable: feed the quantizer directly with a wide range
    codes = lam.quantizer(torch.linspace(-6, 6, 3 * 200).reshape(200, 3).repeat(1, 8))[0].reshape(-1, 3)
    assert [len(codes[:, i].unique()) for i in range(3)] == [2, 2, 4]
    pred.pow(2).mean().backward()
    assert lam.idm.encoder.blocks[0].conv.weight.grad.abs().sum() > 0  # straight-through gradient reaches the IDM


def test_vq_quantizes_to_codebook_entries_with_commitment_loss():
    cfg = train_lapo.LAPOConfig(latent_action_dim=32, encoder_scale=1, quantize="vq")
    lam = train_lapo.build_lam(cfg, img_hw=64)
    obs, future = torch.rand(8, 9, 64, 64) * 2 - 1, torch.rand(8, 9, 64, 64) * 2 - 1
    pred, z, quant_loss = lam(obs, future)
    assert z.shape == (8, 32) and float(quant_loss) > 0
    # tokens of 16 values, 2 codebooks (heads) of 64 codes each quantizing 8 values of a token
    distinct = {tuple(t) for t in z.detach().reshape(-1, 8).tolist()}
    assert len(distinct) <= 2 * 64
    (pred.pow(2).mean() + quant_loss).backward()
    assert lam.idm.encoder.blocks[0].conv.weight.grad.abs().sum() > 0


def test_quantizer_choice_and_sizes_are_checked():
    with pytest.raises(ValueError, match=r"valid: \['none', 'fsq', 'vq'\]"):
        train_lapo.build_lam(train_lapo.LAPOConfig(latent_action_dim=24, encoder_scale=1, quantize="True"), 64)
    with pytest.raises(ValueError, match="latent_action_dim=8192 is not a multiple of len"):
        train_lapo.build_lam(train_lapo.LAPOConfig(encoder_scale=1, quantize="fsq"), 64)
    assert train_lapo.build_lam(train_lapo.LAPOConfig(latent_action_dim=24, encoder_scale=1), 64).quantizer is None


# ---------------------------------------------------------------- end to end


def test_lapo_all_stages_then_skip_by_checkpoint(data_path, tmp_path, monkeypatch):
    run1 = tmp_path / "run1"
    run(train_lapo, lapo_args(data_path, run1), monkeypatch)
    res = read_results(run1)
    assert set(res["stages"]) == {"lapo", "bc", "decoder"}
    for name, stage in res["stages"].items():
        assert stage["seconds"] > 0 and not stage["skipped"], name
    assert np.isfinite(res["metrics"]["lapo/final_action_probe_mse"])
    # the closed-form probe
    for key in ("lapo/ridge_probe_mse", "lapo/ridge_probe_baseline_mse", "lapo/action_variance"):
        assert np.isfinite(res["metrics"][key]) and res["metrics"][key] > 0, key
    assert res["metrics"]["lapo/trained_updates"] == res["metrics"]["lapo/updates"] > 0
    if eval_args("bc")[-1].endswith("=1"):
        assert len(res["stages"]["decoder"]["decoder/eval_returns"]) == 1
        assert np.isfinite(res["metrics"]["decoder/eval_returns_mean"])
    for ckpt in ("lam.pt", "latent_bc.pt", "decoder.pt"):
        assert torch.load(run1 / ckpt, weights_only=False)["done"]

    run2 = tmp_path / "run2"  # another label budget: reuse the LAM and the latent BC, train only the decoder
    reuse = [f"--lapo.checkpoint_path={run1 / 'lam.pt'}", f"--bc.checkpoint_path={run1 / 'latent_bc.pt'}"]
    run(
        train_lapo, lapo_args(data_path, run2, *reuse, "--bc.eval_episodes=0", "--decoder.eval_episodes=0"), monkeypatch
    )
    res2 = read_results(run2)
    assert res2["stages"]["lapo"]["skipped"] and res2["metrics"]["lapo/trained_updates"] == 0
    assert res2["stages"]["bc"]["skipped"] and res2["metrics"]["bc/trained_updates"] == 0
    assert not (run2 / "lam.pt").exists() and not (run2 / "latent_bc.pt").exists()  # not trained again
    assert res2["metrics"]["decoder/trained_updates"] > 0 and (run2 / "decoder.pt").exists()


def test_idm_all_stages_then_resume_skips_finished_stages(data_path, tmp_path, monkeypatch):
    run_dir = tmp_path / "idm"
    run(train_idm, idm_args(data_path, run_dir), monkeypatch)
    res = read_results(run_dir)
    assert set(res["stages"]) == {"idm", "bc"}
    assert res["metrics"]["idm/trained_updates"] == 7  # whole epochs: 198 transitions, 7 batches (6 of 32, one of 6)
    assert np.isfinite(res["metrics"]["idm/eval_action_mse"])
    assert res["stages"]["idm"]["seconds"] > 0 and res["stages"]["bc"]["seconds"] > 0
    if eval_args("bc")[-1].endswith("=1"):
        assert np.isfinite(res["metrics"]["bc/eval_returns_mean"])
    first_mse = res["metrics"]["idm/eval_action_mse"]

    first = res["metrics"]
    run(train_idm, idm_args(data_path, run_dir), monkeypatch)  # same run again: everything is finished
    res = read_results(run_dir)
    assert res["stages"]["idm"]["skipped"] and res["stages"]["bc"]["skipped"]
    assert res["metrics"] == first  # a no-op on its results: what was trained, as it was measured
    assert res["metrics"]["idm/trained_updates"] == 7 and res["metrics"]["idm/eval_action_mse"] == first_mse


@pytest.mark.parametrize("module", [train_lapo, train_idm])
def test_nan_loss_stops_the_stage_naming_the_update(module, data_path, tmp_path, monkeypatch):
    run_dir = tmp_path / "nan"
    if module is train_lapo:
        args = lapo_args(data_path, run_dir, "--lapo.learning_rate=1e30", "--log_every=1", "--checkpoint_every=1")
        stage, ckpt = "lapo", "lam.pt"
    else:
        args = idm_args(data_path, run_dir, "--idm.learning_rate=1e30", "--log_every=1", "--checkpoint_every=1")
        stage, ckpt = "idm", "idm.pt"
    with pytest.raises(FloatingPointError, match=rf"{stage}: the loss became NaN or infinite at update (\d+)") as e:
        run(module, args, monkeypatch)
    bad = int(str(e.value).split("at update ")[1].split(";")[0])
    state = torch.load(run_dir / ckpt, weights_only=False)
    assert not state["done"] and state["step"] == bad  # the last good checkpoint: every update before the bad one
    assert str(run_dir / ckpt) in str(e.value)
    assert not (run_dir / "results.json").exists()
