"""Expert loading (released PPO and SAC checkpoints) and the expert trainers at tiny budgets."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.data_collection.experts import DMCStateEnv, PPOExpert, SACExpert, load_expert, resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]
EXPERTS = REPO.parent / "shared" / "experts"
RELEASED_PPO_KEYS = {
    "actor_logstd",
    "obs_rms.mean",
    "obs_rms.var",
    "obs_rms.count",
    *(f"{net}.{i}.{p}" for net in ("actor_mean", "critic") for i in (0, 2, 4) for p in ("weight", "bias")),
}


def needs(path: Path) -> Path:
    if not path.exists() and not path.with_name(path.name + ".zip").exists():
        pytest.skip(f"released expert not available: {path.name}")
    return path


def episode_return(expert, domain: str, task: str, seed: int = 0) -> float:
    env = DMCStateEnv(domain, task)
    state, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        state, reward, terminated, truncated, _ = env.step(expert.act(state[None])[0])
        total, done = total + reward, terminated or truncated
    return total


def test_released_ppo_cheetah_expert_runs_well_on_states():
    expert = load_expert(needs(EXPERTS / "cheetah-run-expert"))
    assert isinstance(expert, PPOExpert)
    assert (expert.obs_dim, expert.action_dim, expert.domain_name, expert.task_name) == (17, 6, "cheetah", "run")
    states = np.random.default_rng(0).normal(size=(5, 17)).astype(np.float32)
    actions = expert.act(states)
    assert actions.shape == (5, 6) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[2], expert.act(states[2:3])[0], rtol=1e-5, atol=1e-5)  # batched == single
    assert episode_return(expert, "cheetah", "run") > 780  # README: 839 greedy


def test_released_sac_humanoid_expert_loads_and_walks():
    expert = load_expert(needs(EXPERTS / "sac-humanoid-walk"))  # ".zip" left out, as SB3 allows
    assert isinstance(expert, SACExpert)
    assert (expert.obs_dim, expert.action_dim) == (67, 21)
    actions = expert.act(np.zeros((3, 67), dtype=np.float32))
    assert actions.shape == (3, 21) and np.abs(actions).max() <= 1.0
    assert episode_return(expert, "humanoid", "walk") > 500  # paper: 617


def test_size_mismatch_names_checkpoint_and_both_sizes():
    expert = load_expert(needs(EXPERTS / "cheetah-run-expert"))
    with pytest.raises(ValueError, match=r"cheetah-run-expert.*17.*6.*walker-run.*24.*6"):
        expert.check_fits(24, 6, "walker-run")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        resolve_checkpoint(tmp_path / "nothing")
    (tmp_path / "config.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        resolve_checkpoint(tmp_path)


def run_module(module: str, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_tiny_ppo_training_writes_the_released_format(tmp_path):
    out = tmp_path / "ppo"
    run_module(
        "scripts.data_collection.cleanrl_ppo",
        "--domain=cheetah",
        "--task=run",
        "--total_timesteps=2048",
        "--num_envs=4",
        "--num_steps=128",
        f"--checkpoint_path={out}",
        "--cuda=False",
    )
    state_dict = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(state_dict) == RELEASED_PPO_KEYS
    assert state_dict["actor_mean.0.weight"].shape == (512, 17) and state_dict["actor_logstd"].shape == (1, 6)
    assert state_dict["obs_rms.count"] > 2048  # statistics were updated on every transition
    config = torch.load(out / "config.pt", weights_only=True)
    assert (config["domain"], config["task"], config["hidden_dim"]) == ("cheetah", "run", 512)
    expert = load_expert(out)
    assert expert.act(np.zeros((2, 17), dtype=np.float32)).shape == (2, 6)
    if (EXPERTS / "cheetah-run-expert").exists():  # same layout as the released checkpoint
        released = torch.load(EXPERTS / "cheetah-run-expert" / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert list(released) == list(state_dict)
        assert {k: v.shape for k, v in released.items()} == {k: v.shape for k, v in state_dict.items()}


def test_tiny_sac_training_reloads(tmp_path):
    out = tmp_path / "sac"
    run_module(
        "scripts.data_collection.sb3_sac",
        "--domain=cartpole",
        "--task=swingup",
        "--total_timesteps=300",
        "--learning_starts=100",
        f"--save_path={out}",
        "--verbose=0",
        "--cuda=False",
    )
    expert = load_expert(out)
    assert isinstance(expert, SACExpert) and (expert.obs_dim, expert.action_dim) == (5, 1)
    assert expert.act(np.zeros((4, 5), dtype=np.float32)).shape == (4, 1)
