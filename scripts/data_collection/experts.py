"""Expert policies on proprioceptive states (`src.envs.flatten_state`), as released: PPO (`cleanrl_ppo.py`: greedy =
actor mean of the normalised state, NOT clipped, as the datasets store it) and SAC (`sb3_sac.py`:
`predict(deterministic=True)`); loading, acting, and the state environment.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from src.errors import ConfigError, MissingFileError, MissingKeyError

PPO_CONFIG_NAME = "config.pt"
PPO_CHECKPOINT_NAME = "checkpoint.pt"


class DMCStateEnv(gym.Env):
    """A dm_control task as a gymnasium env over flattened states, to train experts; reset(seed=s) reloads it seeded."""

    def __init__(self, domain_name: str, task_name: str, seed: int | None = None, dtype: np.dtype = np.float32):
        from dm_control import suite

        self._suite = suite
        self.domain_name, self.task_name, self._dtype = domain_name, task_name, dtype
        self._env = suite.load(domain_name, task_name, task_kwargs={"random": seed})
        obs_size = sum(int(np.prod(spec.shape)) for spec in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=dtype)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=self._env.action_spec().shape, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env = self._suite.load(self.domain_name, self.task_name, task_kwargs={"random": seed})
        return self._state(self._env.reset()), {}

    def step(self, action):
        time_step = self._env.step(np.clip(action, -1.0, 1.0))
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated  # the suite's time limit
        return self._state(time_step), float(time_step.reward or 0.0), terminated, truncated, {}

    def _state(self, time_step) -> np.ndarray:
        # Imported after dm_control: src.envs sets MUJOCO_GL=egl when unset; state-only envs must work without EGL.
        from src.envs import flatten_state

        return flatten_state(time_step.observation, self._dtype)


class Expert:
    """A greedy policy over proprioceptive states. `act`: [N, obs_dim] -> [N, action_dim] float32."""

    def __init__(self, name: str, obs_dim: int, action_dim: int, domain_name: str | None, task_name: str | None):
        self.name, self.obs_dim, self.action_dim = name, obs_dim, action_dim  # name: the checkpoint, for messages
        self.domain_name, self.task_name = domain_name, task_name  # None where the checkpoint does not say (SB3 zip)

    def check_fits(self, obs_dim: int, action_dim: int, env_name: str) -> None:
        if (obs_dim, action_dim) != (self.obs_dim, self.action_dim):
            raise ConfigError(
                f"Checkpoint {self.name} expects states of size {self.obs_dim} and actions of size "
                f"{self.action_dim}, but {env_name} has states of size {obs_dim} and actions of size {action_dim}."
            )


class RunningMeanStd(nn.Module):
    """Running mean / variance of observations (parallel algorithm), stored as buffers `mean`, `var`, `count`."""

    def __init__(self, shape: tuple[int, ...], epsilon: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(epsilon))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        batch_mean, batch_var, batch_count = x.mean(0), x.var(0, unbiased=False), x.shape[0]  # x: [B, S]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # as CleanRL / gymnasium's NormalizeObservation: eps 1e-8, clipped to +-10
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-10.0, 10.0)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-Tanh-Linear-Tanh-Linear: the layout of the released `actor_mean` and `critic` (indices 0, 2, 4)."""
    layers = [nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, hidden_dim), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(hidden_dim, out_dim))


class PPOExpert(Expert):
    """Actor of a CleanRL-style PPO checkpoint: actor_mean(normalise(state)), the raw (unclipped) mean."""

    def __init__(self, folder: Path, checkpoint_name: str = PPO_CHECKPOINT_NAME, device: str = "cpu"):
        checkpoint_path = folder / checkpoint_name
        config = torch.load(folder / PPO_CONFIG_NAME, map_location=device, weights_only=True)
        state_dict = torch.load(checkpoint_path, map_location=device, weights_only=True)
        layers = [f"actor_mean.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
        missing = [key for key in ("obs_rms.mean", "obs_rms.var", *layers) if key not in state_dict]
        if missing:
            raise MissingKeyError(
                f"PPO checkpoint {checkpoint_path} has no key(s) {missing}; found {sorted(state_dict)}."
            )
        hidden_dim, obs_dim = state_dict["actor_mean.0.weight"].shape
        action_dim = state_dict["actor_mean.4.weight"].shape[0]
        super().__init__(str(checkpoint_path), obs_dim, action_dim, config.get("domain"), config.get("task"))
        self.device = torch.device(device)
        layers = OrderedDict(obs_rms=RunningMeanStd((obs_dim,)), actor_mean=mlp(obs_dim, hidden_dim, action_dim))
        self.policy = nn.Sequential(layers)  # actor_mean(obs_rms(state)), its keys those of the checkpoint
        self.policy.load_state_dict(state_dict, strict=False)  # acting needs neither the critic nor actor_logstd
        self.policy.to(self.device).eval()

    @torch.no_grad()
    def act(self, states: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(states, dtype=np.float32), device=self.device)  # [N, S]
        return self.policy(x).cpu().numpy()  # [N, A], raw: the environment clips what it executes


class SACExpert(Expert):
    """stable-baselines3 SAC policy, greedy (`predict(deterministic=True)`)."""

    def __init__(self, zip_path: Path, device: str = "cpu"):
        from stable_baselines3 import SAC

        # The pickled lr_schedule does not load across Pythons; SB3 rebuilds it from learning_rate: a placeholder.
        self.model = SAC.load(str(zip_path), device=device, custom_objects={"lr_schedule": lambda _: 0.0})
        obs_space, action_space = self.model.observation_space, self.model.action_space
        if len(obs_space.shape) != 1 or len(action_space.shape) != 1:
            raise ConfigError(
                f"SAC checkpoint {zip_path} has observation space {obs_space} and action space {action_space}; "
                "expected flat vectors of proprioceptive states and actions."
            )
        super().__init__(str(zip_path), obs_space.shape[0], action_space.shape[0], None, None)
        self._obs_dtype = obs_space.dtype

    def act(self, states: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(np.asarray(states, dtype=self._obs_dtype), deterministic=True)
        return np.asarray(actions, dtype=np.float32)  # the policy's action as it gives it (no extra clipping)


def resolve_checkpoint(checkpoint_path: str | os.PathLike, checkpoint_name: str = PPO_CHECKPOINT_NAME) -> tuple:
    """(kind, path) of a checkpoint without loading it: a folder with `config.pt` is "ppo", a `.zip` (suffix
    optional) "sac"; else a MissingFileError."""
    path = Path(checkpoint_path)
    if path.is_dir():
        if not (path / PPO_CONFIG_NAME).is_file() or not (path / checkpoint_name).is_file():
            raise MissingFileError(
                f"Checkpoint folder {path} must hold {PPO_CONFIG_NAME} and {checkpoint_name} (a PPO checkpoint)."
            )
        return "ppo", path
    for candidate in (path, path.with_name(path.name + ".zip")):
        if candidate.is_file() and candidate.suffix == ".zip":
            return "sac", candidate
    raise MissingFileError(
        f"No checkpoint at {path}: expected a PPO folder with {PPO_CONFIG_NAME} and {checkpoint_name}, "
        "or a stable-baselines3 SAC .zip file."
    )


def load_expert(
    checkpoint_path: str | os.PathLike, checkpoint_name: str = PPO_CHECKPOINT_NAME, device: str = "cpu"
) -> Expert:
    """Load a PPO checkpoint folder or an SB3 SAC zip (format detected) as a greedy `Expert`."""
    kind, path = resolve_checkpoint(checkpoint_path, checkpoint_name)
    return PPOExpert(path, checkpoint_name, device) if kind == "ppo" else SACExpert(path, device)
