"""Evaluation rollouts in the (vectorized) DCS environment and normalised scores (paper, Table 3)."""

import os
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from src import dist

Policy = Callable[[torch.Tensor], torch.Tensor]  # uint8 observations [N, 3k, H, W] -> actions [N, A] (any float)
# BC on the full labeled data (paper, Table 3), in src.dcs.constants.PAPER_ENVS order (tests/test_consolidation.py)
NORMALIZING_RETURNS = {
    "cheetah-run": {"distractors": 823.0, "vanilla": 840.0},
    "walker-run": {"distractors": 749.0, "vanilla": 735.0},
    "hopper-hop": {"distractors": 253.0, "vanilla": 300.0},
    "humanoid-walk": {"distractors": 428.0, "vanilla": 601.0},
}


def normalized_score(attrs: dict, mean_return: float | None) -> float | None:
    """mean_return / NORMALIZING_RETURNS of the dataset's environment and setting; None for other environments."""
    env = f"{attrs['domain_name']}-{attrs['task_name']}"
    if mean_return is None or env not in NORMALIZING_RETURNS:
        return None
    setting = "vanilla" if attrs["difficulty"] == "vanilla" else "distractors"
    return mean_return / NORMALIZING_RETURNS[env][setting]


def evaluate_for_dataset(policy: Policy, attrs: dict, stage, run, frame_stack, device, prefix, normalize=True):
    """`<prefix>/eval_returns_mean`, `_std`, `eval_returns` (and `normalized_score`) in the dataset's environment."""
    env_kwargs = {}
    if stage.eval_episodes > 0:
        from src.envs import blur_from_attrs, env_kwargs_from_attrs  # dm_control only where environments are used

        limits = dict(max_episode_steps=run.eval_max_episode_steps, frame_stack=frame_stack)
        env_kwargs = env_kwargs_from_attrs(attrs, stage.dcs_backgrounds_path, stage.dcs_backgrounds_split, **limits)
        if getattr(stage, "eval_use_blur", False):
            path = getattr(stage, "data_path", None) or "the dataset"
            env_kwargs["blur"] = blur_from_attrs(attrs, path, getattr(stage, "eval_blur_model_path", None))
    ev = evaluate(policy, env_kwargs, stage.eval_episodes, stage.eval_seed, run.eval_num_envs, device, f"{prefix} eval")
    metrics = {f"{prefix}/eval_returns_mean": ev["mean"], f"{prefix}/eval_returns_std": ev["std"]}
    if normalize:
        metrics[f"{prefix}/normalized_score"] = normalized_score(attrs, ev["mean"])
    return {**metrics, f"{prefix}/eval_returns": ev["returns"]}


@torch.no_grad()
def evaluate(policy: Policy, env_kwargs: dict, num_episodes: int, seed: int, num_envs=1, device="cpu", desc="eval"):
    """{"returns", "mean", "std"} of episodes seeded seed + i; rank r plays i % world_size == r, gets all."""
    if num_episodes <= 0:
        return {"returns": [], "mean": None, "std": None}
    episodes = list(range(dist.rank(), num_episodes, dist.world_size()))  # this rank's share
    mine = _rollouts(policy, env_kwargs, episodes, seed, num_envs, torch.device(device), desc) if episodes else []
    returns = [0.0] * num_episodes
    for r, share in enumerate(dist.gather_objects(mine)):
        returns[r :: dist.world_size()] = share
    return {"returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns))}


def _rollouts(policy: Policy, env_kwargs: dict, episodes: list[int], seed: int, num_envs: int, device, desc: str):
    from src.envs import make_vec_env

    _note_software_rendering(device)
    num_envs = max(1, min(num_envs, len(episodes)))
    envs = make_vec_env(env_kwargs, num_envs=num_envs, seed=seed)
    returns = []
    try:
        bar = tqdm(total=len(episodes), desc=desc, leave=False, disable=not dist.is_main())
        for first in range(0, len(episodes), num_envs):
            chunk = episodes[first : first + num_envs]
            n = len(chunk)
            seeds = [seed + i for i in chunk] + [seed + chunk[-1] + 1 + j for j in range(num_envs - n)]
            obs, _ = envs.reset(seed=seeds)
            ep_return = np.zeros(num_envs)
            done = np.zeros(num_envs, dtype=bool)
            while not done[:n].all():
                with torch.autocast(device.type, enabled=False):  # rollouts in fp32, as released
                    frames = torch.as_tensor(obs, device=device).permute(0, 3, 1, 2).contiguous()  # [N, 3k, H, W]
                    actions = policy(frames).float().cpu().numpy()
                obs, reward, terminated, truncated, _ = envs.step(actions)
                ep_return += np.where(done, 0.0, reward)
                done |= terminated | truncated
            returns.extend(ep_return[:n].tolist())
            bar.update(n)
        bar.close()
    finally:
        envs.close()
    return returns


_noted: list[str] = []  # the software-rendering note, once per process


def _note_software_rendering(device: torch.device) -> None:
    if device.type != "cuda" or _noted or os.environ.get("MUJOCO_GL", "egl") != "egl":
        return
    from dm_control._render.pyopengl import egl_ext, egl_renderer

    vendor = egl_ext.eglQueryString(egl_renderer.EGL_DISPLAY, egl_ext.EGL_VENDOR).decode()  # "NVIDIA" or "Mesa Project"
    if "NVIDIA" not in vendor:
        _noted.append(vendor)
        tqdm.write(
            f"note: rendering on the CPU ({vendor} EGL, not the GPU's): the NVIDIA EGL library (libEGL_nvidia) is "
            "not installed or not registered with glvnd; evaluation episodes are slower (docs/DOCKER.md)"
        )
