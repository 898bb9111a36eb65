"""LAOM and LAOM + supervision: exact parameter counts (paper, Table 4) and the real three-stage pipeline on tiny
data (results.json, stage checkpoints, skip by checkpoint, resume, config and dataset errors)."""

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import src.data
import train_laom
import train_laom_labels
from src.data import DatasetError, Shapes
from src.nn import num_params

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"
HAS_ENV = importlib.util.find_spec("src.envs") is not None


def write_dataset(path: Path, num_traj: int = 3, steps: int = 40, act_dim: int = 6, state_dim: int = 17) -> Path:
    """A small HDF5 file in the released layout (random frames, cheetah-run attributes)."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs.update(domain_name="cheetah", task_name="run", difficulty="scale_easy_video_hard", dynamic=True)
        f.attrs.update(img_hw=64, split="train", dataset_return=0.0)
        for i in range(num_traj):
            g = f.create_group(str(i))
            g.create_dataset("obs", data=rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8))
            g.create_dataset("actions", data=rng.uniform(-1, 1, (steps, act_dim)).astype(np.float32))
            g.create_dataset("states", data=rng.normal(size=(steps, state_dim)).astype(np.float32))
            g.attrs["traj_return"] = 0.0
    return path


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    """The example dataset when it exists, otherwise a random one of the same layout."""
    if EXAMPLE.exists():
        return str(EXAMPLE)
    return str(write_dataset(tmp_path_factory.mktemp("data") / "tiny.hdf5"))


def eval_args() -> list[str]:
    """One short evaluation episode when the environment and real data exist, none otherwise."""
    if HAS_ENV and EXAMPLE.exists():
        return ["--eval_max_episode_steps=20", "--eval_num_envs=1", "--bc.eval_episodes=1", "--decoder.eval_episodes=1"]
    return ["--bc.eval_episodes=0", "--decoder.eval_episodes=0"]


def tiny_args(data: str, run_dir: Path) -> list[str]:
    return [
        f"--run_dir={run_dir}",
        "--wandb_mode=disabled",
        "--device=cpu",
        "--log_every=2",
        "--checkpoint_every=3",
        f"--lapo.data_path={data}",
        "--lapo.max_trajectories=3",  # the ridge probe holds out whole trajectories: 3 at least
        "--lapo.encoder_scale=1",
        "--lapo.latent_action_dim=32",
        "--lapo.act_head_dim=32",
        "--lapo.obs_head_dim=32",
        "--lapo.batch_size=16",
        "--lapo.num_epochs=1",
        "--lapo.warmup_epochs=0.5",
        "--lapo.final_probe_batches=2",
        f"--bc.data_path={data}",
        "--bc.max_trajectories=2",
        "--bc.encoder_scale=1",
        "--bc.batch_size=16",
        "--bc.num_epochs=1",
        "--decoder.batch_size=16",
        "--decoder.hidden_dim=32",
        "--decoder.total_updates=10",
        *eval_args(),
    ]


def laom_args(data: str, run_dir: Path) -> list[str]:
    """LAOM takes its decoder's labeled trajectories explicitly (here the same tiny file)."""
    return [*tiny_args(data, run_dir), f"--decoder.data_path={data}"]


def run(module, args: list[str], monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    return module.train()


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def check_results(res: dict) -> None:
    m = res["metrics"]
    for key in ("lapo/final_action_probe_mse", "lapo/final_state_probe_mse", "lapo/final_obs_action_probe_mse"):
        assert np.isfinite(m[key]) and m[key] > 0, key
    # the closed-form probe
    for key in ("lapo/ridge_probe_mse", "lapo/ridge_probe_baseline_mse", "lapo/action_variance"):
        assert np.isfinite(m[key]) and m[key] > 0, key
    for stage in ("lapo", "bc", "decoder"):
        assert res["stages"][stage]["seconds"] > 0
    assert "decoder/eval_returns_mean" in m and "bc/eval_returns_mean" in m
    if HAS_ENV and EXAMPLE.exists():
        assert np.isfinite(m["decoder/eval_returns_mean"]) and np.isfinite(m["bc/eval_returns_mean"])
        assert len(res["stages"]["decoder"]["decoder/eval_returns"]) == 1


def stage_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


# ---------------------------------------------------------------- parameter counts (paper, Table 4)


def test_parameter_counts_at_paper_configs():
    with torch.device("meta"):  # 192M parameters: shapes only
        models = train_laom.build_models(train_laom.Config(), Shapes(21, 67, 64))
        laom = models["lam"]
        labels = train_laom_labels.build_models(train_laom_labels.Config(), Shapes(21, 67, 64), "lam")["lam"]
    assert num_params(laom) == 192_307_136
    assert num_params(labels) == 192_479_189
    assert num_params(labels) - num_params(laom) == 8192 * 21 + 21  # the Linear(8192 -> 21) head
    assert num_params(models["actor"]) == 107_541_504


def test_paper_configs_match_defaults():
    """configs/*.yaml hold the Appendix F values, which are also the dataclass defaults (paths aside)."""
    import pyrallis

    for module, name in ((train_laom, "laom"), (train_laom_labels, "laom-labels")):
        cfg = pyrallis.parse(module.Config, config_path=str(ROOT / "configs" / f"{name}.yaml"), args=[])
        default = module.Config()
        for section in ("lapo", "bc", "decoder"):
            got, want = vars(getattr(cfg, section)), vars(getattr(default, section))
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k] and "path" not in k}
            assert not diff, (name, section, diff)
    assert cfg.lapo.labeled_loss_coef == 0.01 and cfg.lapo.labeled_batch_size == 128


# ---------------------------------------------------------------- LAOM end to end, skip, resume


@pytest.fixture(scope="module")
def laom_run(data_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("laom") / "run1"
    with pytest.MonkeyPatch.context() as mp:
        run(train_laom, laom_args(data_path, run_dir), mp)
    return run_dir


def test_laom_runs_all_stages(laom_run):
    res = results(laom_run)
    check_results(res)
    m = res["metrics"]
    assert m["lapo/trained_updates"] == m["lapo/updates"] > 0
    assert m["bc/trained_updates"] > 0 and m["decoder/trained_updates"] > 0
    for name in ("lam.pt", "latent_bc.pt", "decoder.pt"):
        assert stage_state(laom_run / name)["done"]


def test_laom_skips_stages_loaded_from_another_run(laom_run, data_path, tmp_path, monkeypatch):
    args = laom_args(data_path, tmp_path / "run2")
    run(train_laom, [*args, f"--lapo.checkpoint_path={laom_run / 'lam.pt'}"], monkeypatch)
    m = results(tmp_path / "run2")["metrics"]
    assert m["lapo/trained_updates"] == 0  # stage 1 not trained
    assert m["bc/trained_updates"] > 0 and m["decoder/trained_updates"] > 0
    # The reused LAM reports the probe of the run that trained it (same weights, same metric).
    base = results(laom_run)["metrics"]
    assert m["lapo/final_action_probe_mse"] == base["lapo/final_action_probe_mse"]


def test_reused_stages_read_no_frames_of_the_full_dataset(laom_run, data_path, tmp_path, monkeypatch):
    # A budget run of the sweep: LAM and latent BC from the base run, only the decoder trains, on a labeled file.
    labeled = write_dataset(tmp_path / "labeled.hdf5", num_traj=2, steps=40)
    args = [
        *tiny_args(data_path, tmp_path / "budget"),
        f"--decoder.data_path={labeled}",
        f"--lapo.checkpoint_path={laom_run / 'lam.pt'}",
        f"--bc.checkpoint_path={laom_run / 'latent_bc.pt'}",
        "--bc.eval_episodes=0",
        "--decoder.eval_episodes=0",
    ]
    monkeypatch.setattr(src.data, "_CACHE", {})
    run(train_laom, args, monkeypatch)
    full = [d for d in src.data._CACHE.values() if d.path == data_path]
    assert full and all(d._frames is None for d in full)  # metadata only: the frames were never read
    m = results(tmp_path / "budget")["metrics"]
    assert m["lapo/trained_updates"] == m["bc/trained_updates"] == 0 and m["decoder/trained_updates"] > 0
    base = results(laom_run)["metrics"]
    assert m["lapo/final_action_probe_mse"] == base["lapo/final_action_probe_mse"]  # the base run's metric


def test_laom_resumes_an_interrupted_stage(laom_run, data_path, tmp_path, monkeypatch):
    run_dir = tmp_path / "run3"
    run_dir.mkdir()
    state = stage_state(laom_run / "lam.pt")
    total = state["step"]
    state.update(step=3, done=False)  # as saved by checkpoint_every=3 before an interruption
    torch.save(state, run_dir / "lam.pt")
    run(train_laom, laom_args(data_path, run_dir), monkeypatch)
    m = results(run_dir)["metrics"]
    assert m["lapo/updates"] == m["lapo/trained_updates"] == total  # continued from update 3: all trained by this run
    assert stage_state(run_dir / "lam.pt")["done"] and stage_state(run_dir / "lam.pt")["step"] == total

    # A finished run re-run: every stage is skipped and results.json still describes the same training (the
    # probe MSEs are not drawn again, trained_updates stay what they were).
    before = results(run_dir)
    run(train_laom, laom_args(data_path, run_dir), monkeypatch)
    after = results(run_dir)
    assert after["metrics"] == before["metrics"] and after["metrics"]["lapo/trained_updates"] == total
    assert all(after["stages"][name]["skipped"] for name in ("lapo", "bc", "decoder"))
    # Without results.json (deleted), the stored stage metrics give the same numbers again.
    (run_dir / "results.json").unlink()
    run(train_laom, laom_args(data_path, run_dir), monkeypatch)
    assert results(run_dir)["metrics"] == before["metrics"]


def test_unknown_config_field_is_an_error(data_path, tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        run(train_laom, [*laom_args(data_path, tmp_path / "r"), "--lapo.not_a_field=1"], monkeypatch)
    with pytest.raises(SystemExit):
        run(train_laom_labels, [*tiny_args(data_path, tmp_path / "r"), "--decoder.bogus=1"], monkeypatch)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lapo:\n  latent_action_dim: 64\n  not_a_field: 1\n")
    with pytest.raises(Exception, match="not_a_field"):
        run(train_laom, [f"--config_path={bad}", *laom_args(data_path, tmp_path / "r")], monkeypatch)


# ---------------------------------------------------------------- LAOM + supervision


def test_laom_labels_runs_all_stages(data_path, tmp_path, monkeypatch):
    run_dir = tmp_path / "labels"
    args = [
        *tiny_args(data_path, run_dir),
        f"--lapo.labeled_data_path={data_path}",
        f"--lapo.eval_data_path={data_path}",
        "--lapo.labeled_batch_size=8",
        "--lapo.use_ema_target=False",
    ]
    run(train_laom_labels, args, monkeypatch)
    res = results(run_dir)
    check_results(res)
    assert res["config"]["decoder"]["data_path"] == data_path  # the decoder learns from the LAM's labels
    assert np.isfinite(res["metrics"]["lapo/eval_action_mse"]) and res["metrics"]["lapo/eval_action_mse"] > 0
    assert "target_encoder" not in stage_state(run_dir / "lam.pt")["objects"]  # stop-grad target


def test_laom_labels_rejects_a_labeled_set_with_another_action_size(data_path, tmp_path, monkeypatch):
    other = write_dataset(tmp_path / "other-actions.hdf5", num_traj=1, steps=20, act_dim=3)
    args = [*tiny_args(data_path, tmp_path / "bad"), f"--lapo.labeled_data_path={other}"]
    with pytest.raises(DatasetError) as err:
        run(train_laom_labels, args, monkeypatch)
    assert str(other) in str(err.value) and data_path in str(err.value) and "action size" in str(err.value)


# ---------------------------------------------------------------- stage-1 batches: one augmenter pass


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # numerics compared on one thread (multi-threaded kernels may split work differently)
    yield
    torch.set_num_threads(threads)


def test_stage1_batches_augment_in_one_pass_as_the_released_separate_calls(tmp_path, one_thread):
    """The stage-1 batch of LAOM (3 observations) and of LAOM + supervision (5) goes through the augmenter in one
    pass; it equals, number for number, the release's way (one augmenter call per observation, the labeled batch
    drawn between), restated here, from the same random state."""
    from src.augs import Augmenter
    from src.data import load_dataset, normalize_obs

    path = str(write_dataset(tmp_path / "tiny.hdf5", num_traj=2, steps=30))
    data = load_dataset(path, "cpu", 3, min_offset=10)
    valid = data.valid_indices(10)
    c = train_laom_labels.LAOMLabelsConfig(batch_size=6, labeled_batch_size=4)
    aug = Augmenter()

    def separate_calls(labeled: bool) -> list[torch.Tensor]:
        b = data.batch(valid[:6], 3, future_offset=10, next_obs=True)
        out = [aug(normalize_obs(b[k])) for k in ("obs", "future_obs", "next_obs")]
        if labeled:
            lb = data.batch(data.sample(valid, 4), 3, 10)
            out += [aug(normalize_obs(lb["obs"])), aug(normalize_obs(lb["future_obs"]))]
        return out

    torch.manual_seed(0)
    want = separate_calls(labeled=True)
    torch.manual_seed(0)
    got, _, lb = train_laom_labels.stage1_batch(data, valid[:6], c, aug, (data, valid))
    assert [g.shape for g in got] == [(6, 9, 64, 64)] * 3 + [(4, 9, 64, 64)] * 2 and lb["actions"].shape == (4, 6)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    assert not torch.equal(got[0], normalize_obs(data.batch(valid[:6], 3)["obs"]))  # augmented

    torch.manual_seed(1)
    want = separate_calls(labeled=False)
    torch.manual_seed(1)
    got = train_laom.stage1_batch(data, valid[:6], train_laom.LAOMConfig(), aug)[:3]
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)
    torch.manual_seed(1)
    got, _, lb = train_laom_labels.stage1_batch(data, valid[:6], c, aug)
    assert lb is None and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
