"""SAC expert on proprioceptive dm_control states with stable-baselines3 defaults (the paper's humanoid-walk expert),
saved as the zip `experts.load_expert` loads.

    python -m scripts.data_collection.sb3_sac --save_path=checkpoints/sac-humanoid-walk
"""

from dataclasses import dataclass

import numpy as np
import pyrallis
import torch
from stable_baselines3 import SAC

from scripts.data_collection.experts import DMCStateEnv


@dataclass
class Config:
    domain: str = "humanoid"  # dm_control domain
    task: str = "walk"  # dm_control task
    total_timesteps: int = 2_000_000  # environment transitions
    learning_starts: int = 100  # random-action steps before learning (SB3's default)
    save_path: str = "checkpoints/sac-humanoid-walk"  # output zip (".zip" is appended by SB3 when missing)
    seed: int = 0  # seed of env, networks and replay sampling
    cuda: bool = True  # use CUDA when available
    verbose: int = 1  # SB3 logging level


def train(config: Config) -> None:
    device = "cuda" if config.cuda and torch.cuda.is_available() else "cpu"
    env = DMCStateEnv(config.domain, config.task, seed=config.seed, dtype=np.float64)
    kwargs = dict(learning_starts=config.learning_starts, seed=config.seed, device=device, verbose=config.verbose)
    model = SAC("MlpPolicy", env, **kwargs)
    model.learn(total_timesteps=config.total_timesteps)
    model.save(config.save_path)
    print(f"Saved {config.save_path}")


if __name__ == "__main__":
    train(pyrallis.parse(config_class=Config))
