"""Gymnasium DCS environments as the datasets see them (make_env): uint8 [H, W, 3k], oldest frame first (repeated at
reset); actions clipped to [-1, 1]; `info["state"]` flat float32; `reset(seed=s)` reseeds physics and distractions."""

import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections import deque  # noqa: E402
from collections.abc import Mapping  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from shimmy.dm_control_compatibility import DmControlCompatibilityV0  # noqa: E402

from src.data import REQUIRED_ROOT_ATTRS, plain_attr  # noqa: E402
from src.dcs import constants as C  # noqa: E402
from src.dcs.suite import load  # noqa: E402
from src.errors import ConfigError, DatasetError  # noqa: E402


def flatten_state(obs: Mapping[str, np.ndarray], dtype: np.dtype = np.float32) -> np.ndarray:
    """dm_control observation dict -> flat vector [S], keys in alphabetical order."""
    return np.concatenate([np.asarray(obs[k], dtype=dtype).reshape(-1) for k in sorted(obs)])


class PixelEnv(gym.Wrapper):
    def __init__(self, dcs_env, img_hw: int, frame_stack: int, max_episode_steps: int, camera_id: int, blur):
        render_kwargs = {"height": img_hw, "width": img_hw, "camera_id": camera_id}
        env = DmControlCompatibilityV0(dcs_env, render_mode="rgb_array", render_kwargs=render_kwargs)
        super().__init__(env)
        self.camera_id, self.blur, self.dcs_env, self.img_hw = camera_id, blur, dcs_env, img_hw
        self.frame_stack, self.max_episode_steps = frame_stack, max_episode_steps
        self.observation_space = gym.spaces.Box(0, 255, (img_hw, img_hw, 3 * frame_stack), np.uint8)
        low, high = env.action_space.low, env.action_space.high
        low, high = np.maximum(low, -1.0).astype(np.float32), np.minimum(high, 1.0).astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._masker = None  # depth masks made frame by frame, as the dataset's were
        if blur is not None and blur["masks"] == "depth":
            from src.masks import DepthMasker, load_depth_model

            model = load_depth_model(blur["encoder"], "cpu", blur.get("model_path"))
            args = [blur[k] for k in ("percentile", "threshold_alpha", "mask_kernel", "mask_sigma")]
            self._masker = DepthMasker(model, *args)

    def _render(self) -> np.ndarray:
        frame = self.env.render()
        if self.blur is None:
            return frame
        from src.masks import blur_background, segmentation_mask

        if self.blur["masks"] == "true":
            mask = segmentation_mask(self.dcs_env.physics, self.camera_id, self.img_hw, self.img_hw)
        else:
            mask = self._masker(frame)
        return blur_background(frame[None], mask[None], tuple(self.blur["kernel"]), float(self.blur["sigma"]))[0]

    def reset(self, *, seed: int | None = None, options=None):
        if seed is not None:
            self.dcs_env.seed(seed)
        state, info = self.env.reset(seed=seed, options=options)
        if self._masker is not None:
            self._masker.reset()  # a new episode: a new threshold
        self.frames = deque([self._render()] * self.frame_stack, maxlen=self.frame_stack)  # first frame k times
        self.steps = 0
        return np.concatenate(self.frames, axis=-1), {**info, "state": flatten_state(state)}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), self.action_space.low, self.action_space.high)
        state, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(self._render())
        self.steps += 1
        truncated = bool(truncated) or self.steps >= self.max_episode_steps
        obs = np.concatenate(self.frames, axis=-1)
        return obs, float(reward), bool(terminated), truncated, {**info, "state": flatten_state(state)}


def make_env(
    domain_name: str,
    task_name: str,
    difficulty: str = "scale_easy_video_hard",
    dynamic: bool = True,
    img_hw: int = 64,
    backgrounds_path: str | None = C.BUILTIN,
    backgrounds_split: str = "train",
    frame_stack: int = 3,
    max_episode_steps: int = 1000,
    seed: int | None = None,
    camera_mode: str = "release",
    blur: Mapping | None = None,
) -> PixelEnv:
    """backgrounds_path: DAVIS-2017 folder, "builtin" or None; seed: the first episode's; blur: blur_from_attrs's."""
    cam = C.RENDER_CAMERA_ID.get(domain_name, 0)
    dcs_env = load(
        domain_name, task_name, difficulty, dynamic, backgrounds_path, backgrounds_split, cam, camera_mode, seed=seed
    )
    return PixelEnv(dcs_env, img_hw, frame_stack, max_episode_steps, cam, blur)


def blur_from_attrs(attrs: Mapping, path: str = "the dataset", model_path: str | None = None) -> dict:
    """make_env's `blur` redoing a blurred dataset's blur (model_path: DepthAnything folder; None: HF cache)."""
    if "blur_kernel" not in attrs:
        raise DatasetError(f"{path} was not blurred (no blur_kernel root attribute); eval_use_blur needs one that was")
    masks = str(attrs.get("blur_masks", "depth"))
    kernel = [int(k) for k in np.asarray(attrs["blur_kernel"]).reshape(-1)]
    blur = {"kernel": kernel * 2 if len(kernel) == 1 else kernel, "sigma": float(np.asarray(attrs["blur_sigma"]))}
    blur["masks"] = masks
    if masks == "depth":
        needed = ["blur_encoder", "blur_percentile", "blur_threshold_alpha", "blur_mask_kernel", "blur_mask_sigma"]
        missing = [k for k in needed if k not in attrs]
        if missing:
            raise DatasetError(f"{path} was blurred with depth masks but does not record {missing}: cannot redo them")
        blur |= {k.removeprefix("blur_"): plain_attr(attrs[k]) for k in needed}
        blur["model_path"] = model_path
    elif masks != "true":
        raise DatasetError(f"{path}: unknown blur_masks {masks!r}; expected 'true' or 'depth'")
    return blur


def env_kwargs_from_attrs(attrs: Mapping, backgrounds_path: str | None = None, split: str | None = None, **overrides):
    """make_env arguments from a dataset's root attributes; DAVIS backgrounds (the paper's) need backgrounds_path."""
    missing = [k for k in REQUIRED_ROOT_ATTRS if k not in attrs]
    if missing:
        raise KeyError(f"dataset root attribute(s) {missing} missing: cannot rebuild its environment")
    source = plain_attr(attrs.get("background_source", "davis"))
    difficulty = str(attrs["difficulty"])
    if backgrounds_path is None:
        if source == C.BUILTIN:
            backgrounds_path = C.BUILTIN
        elif C.DIFFICULTIES.get(difficulty, (0, 0))[1] != 0:
            raise ConfigError(
                f"the dataset was recorded with DAVIS backgrounds (difficulty {difficulty}): pass the DAVIS folder "
                "(e.g. --bc.dcs_backgrounds_path=DAVIS/JPEGImages/480p) to rebuild its evaluation environment"
            )
    kwargs = dict(domain_name=str(attrs["domain_name"]), task_name=str(attrs["task_name"]), difficulty=difficulty)
    kwargs |= dict(dynamic=bool(attrs["dynamic"]), img_hw=int(attrs["img_hw"]), backgrounds_path=backgrounds_path)
    camera_mode = str(attrs.get("dcs_camera_mode", "release"))  # the paper's files: the release's camera
    return kwargs | dict(backgrounds_split=split or "train", camera_mode=camera_mode) | overrides


def make_vec_env(env_kwargs: dict, num_envs: int, seed: int, asynchronous: bool = True) -> gym.vector.VectorEnv:
    """num_envs copies of make_env(**env_kwargs); worker processes (spawned, EGL-safe) when asynchronous."""
    fns = [functools.partial(make_env, **env_kwargs, seed=seed + i) for i in range(num_envs)]
    if asynchronous and num_envs > 1:
        return gym.vector.AsyncVectorEnv(fns, context="spawn")
    return gym.vector.SyncVectorEnv(fns)
