"""Distracting Control Suite: dm_control tasks with background-video, camera and colour distractions.

A numpy / PIL port (no tensorflow) that behaves as the released code that made the paper's datasets
(docs/FAITHFULNESS.md). One deliberate difference: every random source is drawn from generators derived from one
episode seed, so `env.seed(s); env.reset()` gives the same frames whatever came before (the release leaves some
sources unseeded).
"""

import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import dm_env  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import suite  # noqa: E402

from src.dcs import constants as C  # noqa: E402
from src.dcs.videos import check_davis_folder, select_videos, skybox_frames  # noqa: E402
from src.errors import ConfigError  # noqa: E402

# dm_control's own task XMLs set `<compiler settotalmass=...>`, which MuJoCo 3.x still applies and reports as
# deprecated each time a model is compiled (once per environment built): dropped from dm_control's absl log.
HARMLESS_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)
logging.getLogger("absl").addFilter(lambda record: not record.getMessage().startswith(HARMLESS_MUJOCO_WARNINGS))


class BackgroundDistraction:
    """A video in the skybox texture (all faces show it), as the release plays it (docs/FAITHFULNESS.md).

    On reset: a random video of the list, start frame and direction (static: that frame only). Each step (dynamic)
    the index moves by one and bounces: forward past the last frame it is clamped back to it (shown twice) and turns;
    backward it turns on reaching frame 0 (shown once). Setting cache_resized = False gives the release's way (for
    benchmarks): every frame of the video read and resized at each reset.
    """

    def __init__(self, physics, source: str, split: str, names: tuple, dynamic: bool, ground_alpha: float):
        self.source, self.split, self.names, self.dynamic = source, split, names, dynamic
        self.cache_resized = True
        model = physics.model
        self.tex_id = model.name2id("skybox", "texture")
        side = C.SKYBOX_SIZE
        if model.tex_width[self.tex_id] != side or model.tex_height[self.tex_id] < side:
            raise ValueError(f"skybox texture is {model.tex_width[self.tex_id]} wide; expected {side}")
        model.tex_height[self.tex_id] = side  # one square image: the renderer repeats it on every face
        self.adr = model.tex_adr[self.tex_id]
        grid = model.name2id("grid", "material")
        if grid >= 0:
            model.mat_rgba[grid, 3] = ground_alpha

    def reset(self, physics, rng: np.random.Generator) -> None:
        self.video = int(rng.integers(len(self.names)))
        # static backgrounds use one frame: resized on first use (the release's way only matters when dynamic)
        cache = self.cache_resized or not self.dynamic
        self.frames = skybox_frames(self.source, self.split, self.names[self.video], C.SKYBOX_SIZE, cache=cache)
        self.index = int(rng.integers(len(self.frames)))
        self.direction = int(rng.choice([-1, 1])) if self.dynamic else 0
        self._apply(physics)

    def step(self, physics) -> None:
        if not self.dynamic:
            return
        self.index += self.direction
        if self.index <= 0:
            self.index, self.direction = 0, 1
        if self.index >= len(self.frames):
            self.index, self.direction = len(self.frames) - 1, -1
        self._apply(physics)

    def state(self) -> dict[str, np.ndarray]:
        """background [video (its index in the split's list), frame shown, direction (+1 / -1; 0 when static)]."""
        return {"background": np.array([self.video, self.index, self.direction], dtype=np.float32)}

    def _apply(self, physics) -> None:
        frame = self.frames[self.index]  # [SKYBOX_SIZE, SKYBOX_SIZE, 3]
        texture_bytes(physics.model)[self.adr : self.adr + frame.size] = frame.reshape(-1)
        contexts = physics.contexts  # the renderer's GL context exists after the first render
        with contexts.gl.make_current() as ctx:
            ctx.call(mujoco.mjr_uploadTexture, physics.model.ptr, contexts.mujoco.ptr, self.tex_id)


def texture_bytes(model) -> np.ndarray:
    """MjModel.tex_data, called tex_rgb in MuJoCo 3.2.0 (the release's pin, see requirements-reference.txt)."""
    return model.tex_data if hasattr(model, "tex_data") else model.tex_rgb


def _look_at_no_roll(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera frame (3 x 3, columns: right, up, backward) looking from pos at target, its right axis horizontal."""
    forward = target - pos
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(right)
    right = right / norm if norm > 1e-8 else np.array([1.0, 0.0, 0.0])
    up = np.cross(right, forward)
    return np.stack([right, up, -forward], axis=1)


def _look_at_shortest(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera frame looking from pos at target by the shortest rotation of the default view (-z): no jumps near
    the pole, some roll. The release uses it for reacher, seen from above; its axis is divided by |axis| + 1e-4."""
    forward = target - pos
    forward = forward / np.linalg.norm(forward)
    down = np.array([0.0, 0.0, -1.0])
    axis = np.cross(down, forward)
    sin, cos = np.linalg.norm(axis), float(np.dot(forward, down))
    axis = axis / (sin + 1e-4)
    skew = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return cos * np.eye(3) + sin * skew + (1 - cos) * np.outer(axis, axis)  # Rodrigues' rotation formula


def _rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis * angle (radians, in [0, pi]) of a 3 x 3 rotation matrix."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    sin2 = np.linalg.norm(axis)  # 2 sin(angle)
    if sin2 < 1e-9:
        if angle < 1e-6:  # no rotation
            return np.zeros(3)
        # a half turn: the axis is the eigenvector of eigenvalue 1, up to sign
        axis = np.sqrt(np.clip((np.diag(rot) + 1.0) / 2.0, 0.0, None))
        return axis / np.linalg.norm(axis) * angle
    return axis / sin2 * angle


def _to_spherical(v: np.ndarray) -> np.ndarray:
    """(x, y, z) -> (radius, horizontal angle atan2(y, x) in (-pi, pi], vertical angle from +z in [0, pi])."""
    return np.array([np.linalg.norm(v), np.arctan2(v[1], v[0]), np.arctan2(np.hypot(v[0], v[1]), v[2])])


def _to_cartesian(s: np.ndarray) -> np.ndarray:
    r, theta, phi = s
    return r * np.array([np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi)])


def look_at_point(physics, camera_id: int) -> np.ndarray:
    """The release's look-at point: on the viewing axis (-z) of MuJoCo's own camera pose for this physics state (not a
    distracted pose written earlier), as far from the camera as the agent (centre of mass of body 1's subtree)."""
    mujoco.mj_camlight(physics.model.ptr, physics.data.ptr)
    data = physics.data
    pos = data.cam_xpos[camera_id].copy()
    distance = np.linalg.norm(pos - data.subtree_com[1])
    return pos - distance * data.cam_xmat[camera_id].reshape(3, 3)[:, 2]


class CameraDistraction:
    """Random camera position in spherical coordinates and roll, random-walking when dynamic (docs/FAITHFULNESS.md).

    Tracking cameras are held around the agent (centre of mass of body 1's subtree) and look at this step's look-at
    point; fixed cameras look at their initial one, held around the world origin (release) or that point (corrected).
    Ranges (C.CAMERA_*) are restricted to the upper quadrant except for reacher. "release" clamps as the released
    code does, the horizontal angle to [-pi, 0] and the vertical one to [0, pi/2] after adding the ranges: a camera
    starting at horizontal angle pi (humanoid) is pinned at 0, the far side of the body. "corrected" only caps the
    vertical angle at pi/2 and keeps the horizontal angle continuous around its start.
    """

    def __init__(self, physics, camera_id: int, scale: float, dynamic: bool, upper_quadrant=True, mode="release"):
        self.cam, self.scale, self.upper, self.mode = camera_id, scale, upper_quadrant, mode
        model = physics.model
        tracking_modes = (int(mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM), int(mujoco.mjtCamLight.mjCAMLIGHT_TRACK))
        self.tracking = int(model.cam_mode[camera_id]) in tracking_modes
        walk = scale if dynamic else 0.0  # the random walk's scale: a static camera keeps its random start
        self.vel_std, self.max_vel = C.CAMERA_VEL_STD * walk, C.CAMERA_MAX_VEL * walk
        self.roll_std, self.max_roll_vel = C.CAMERA_ROLL_STD * walk, C.CAMERA_MAX_ROLL_VEL * walk

    def _centre(self, physics) -> np.ndarray:
        """The point the spherical coordinates are held around."""
        if self.tracking:
            return physics.data.subtree_com[1].copy()
        return self.fixed_target if self.mode == "corrected" else np.zeros(3)

    def reset(self, physics, rng: np.random.Generator) -> None:
        self.fixed_target = look_at_point(physics, self.cam)  # used by fixed cameras only
        self.start = _to_spherical(physics.data.cam_xpos[self.cam] - self._centre(physics))
        r0, h0, v0 = self.start
        half = np.pi / 2 * self.scale
        low = np.array([(1 - C.CAMERA_ZOOM_IN * self.scale) * r0, h0 - half, v0 - half])
        high = np.array([(1 + C.CAMERA_ZOOM_OUT * self.scale) * r0, h0 + half, v0 + half])
        if self.mode == "release" and self.upper:  # clamped after adding the ranges: low > high is possible
            low[1], high[1] = max(low[1], -np.pi), min(high[1], 0.0)
            low[2], high[2] = max(low[2], 0.0), min(high[2], np.pi / 2)
        elif self.mode == "corrected":
            high[2] = min(high[2], np.pi / 2) if self.upper else high[2]
            low[2], high[2] = max(low[2], 1e-3), max(high[2], 1e-3)
        self.low, self.high = low, high
        self.roll_range = half
        self.vel_scale = r0 / 4.0  # the random walk's steps scale with the start radius
        # uniform in [low, high] (as numpy's legacy uniform, also when low > high; the first step clamps it)
        self.pos = low + (high - low) * rng.random(3)
        self.roll = rng.uniform(-self.roll_range, self.roll_range)
        direction = rng.normal(size=3)
        self.vel = direction / np.linalg.norm(direction) * rng.uniform(0.0, self.max_vel)  # not radius-scaled
        self.roll_vel = rng.uniform(-self.max_roll_vel, self.max_roll_vel)
        self.rng = rng
        self.step(physics)  # the first frame is already one step of the walk away

    def step(self, physics) -> None:
        vel = self.vel + self.rng.normal(size=3) * self.vel_std * self.vel_scale
        speed, limit = np.linalg.norm(vel), self.max_vel * self.vel_scale
        if speed > limit:
            vel = vel * (limit / speed)
        roll_vel = np.clip(self.roll_vel + self.rng.normal() * self.roll_std, -self.max_roll_vel, self.max_roll_vel)
        old = _to_cartesian(self.pos)
        new = _to_spherical(old + vel)
        if self.mode == "corrected":  # the horizontal angle continuous around its start (no jump where atan2 wraps)
            new[1] = self.start[1] + (new[1] - self.start[1] + np.pi) % (2 * np.pi) - np.pi
        self.pos = np.minimum(np.maximum(new, self.low), self.high)  # as np.clip: the upper bound wins if low > high
        self.vel = _to_cartesian(self.pos) - old  # the velocity becomes the clipped move
        new_roll = np.clip(self.roll + roll_vel, -self.roll_range, self.roll_range)
        self.roll_vel, self.roll = new_roll - self.roll, new_roll
        self._apply(physics)

    def state(self) -> dict[str, np.ndarray]:
        """camera [position offset x, y, z (metres), rotation vector x, y, z (radians) taking the nominal camera frame
        (MuJoCo's own for this physics state) to the distracted one], in the world frame."""
        offset = self.pose[0] - self.nominal[0]
        rotation = _rotation_vector(self.pose[1] @ self.nominal[1].T)
        return {"camera": np.concatenate([offset, rotation]).astype(np.float32)}

    def _apply(self, physics) -> None:
        mujoco.mj_camlight(physics.model.ptr, physics.data.ptr)  # the nominal pose, kept for state()
        data = physics.data
        self.nominal = (data.cam_xpos[self.cam].copy(), data.cam_xmat[self.cam].reshape(3, 3).copy())
        target = look_at_point(physics, self.cam) if self.tracking else self.fixed_target
        pos = self._centre(physics) + _to_cartesian(self.pos)
        look_at = _look_at_no_roll if self.upper else _look_at_shortest
        c, s = np.cos(self.roll), np.sin(self.roll)  # rolled around the viewing axis
        xmat = look_at(pos, target) @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        physics.data.cam_xpos[self.cam] = pos
        physics.data.cam_xmat[self.cam] = xmat.reshape(-1)
        self.pose = (pos.copy(), xmat)


class ColorDistraction:
    """Every material's RGB starts uniformly within +-max_delta of the original and random-walks (clipped)."""

    def __init__(self, physics, scale: float, dynamic: bool):
        self.original = physics.model.mat_rgba[:, :3].copy()
        self.max_delta = scale
        self.step_std = C.COLOR_STEP_STD * scale if dynamic else 0.0

    def reset(self, physics, rng: np.random.Generator) -> None:
        self.rng = rng
        self.low = np.clip(self.original - self.max_delta, 0.0, 1.0)
        self.high = np.clip(self.original + self.max_delta, 0.0, 1.0)
        self.rgb = rng.uniform(self.low, self.high)
        physics.model.mat_rgba[:, :3] = self.rgb

    def state(self) -> dict[str, np.ndarray]:
        """color [R, G, B offsets from the original colour of every material of the model, material by material]."""
        return {"color": (self.rgb - self.original).reshape(-1).astype(np.float32)}

    def step(self, physics) -> None:
        if self.step_std > 0:
            noise = self.rng.normal(scale=self.step_std, size=self.rgb.shape)
            self.rgb = np.clip(self.rgb + noise, self.low, self.high)
            physics.model.mat_rgba[:, :3] = self.rgb


class DistractingEnvironment(dm_env.Environment):
    """A dm_control environment with distractions applied to the model and the camera pose after every reset and step,
    so `physics.render(...)` shows them. Each reset after `seed(s)` (or the seed given at construction) is reproducible.
    """

    def __init__(self, env, distractions: list, seed: int | None = None):
        self._env, self._distractions = env, distractions
        self.physics, self.task = env.physics, env.task  # dm_control keeps both for the environment's life
        self.control_timestep = env.control_timestep
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        physics_seed, *children = np.random.SeedSequence(seed).spawn(1 + len(self._distractions))
        self._env.task._random = np.random.RandomState(physics_seed.generate_state(1)[0])
        self._rngs = [np.random.default_rng(c) for c in children]

    def reset(self):
        timestep = self._env.reset()
        if self._distractions:
            self._env.physics.render(8, 8)  # make sure the GL context exists before textures are uploaded
        for d, rng in zip(self._distractions, self._rngs, strict=True):
            d.reset(self._env.physics, rng)
        return timestep

    def step(self, action):
        timestep = self._env.step(action)
        if timestep.first():  # dm_control reset itself (a step after the last one): new distractions, as the release
            for d, rng in zip(self._distractions, self._rngs, strict=True):
                d.reset(self._env.physics, rng)
            return timestep
        for d in self._distractions:
            d.step(self._env.physics)
        return timestep

    def distractor_state(self) -> dict[str, np.ndarray]:
        """The active distractions' state for the frame shown now: {"background": [3], "camera": [6], "color":
        [3 * materials]}, float32 (docs/DATA.md, "distractors"); empty for vanilla."""
        return {key: value for d in self._distractions for key, value in d.state().items()}

    def observation_spec(self):
        return self._env.observation_spec()

    def action_spec(self):
        return self._env.action_spec()

    def close(self):
        self._env.close()


def load(
    domain_name: str,
    task_name: str,
    difficulty: str | None = None,
    dynamic: bool = False,
    background_dataset_path: str | None = None,
    background_dataset_videos: str = "train",
    camera_id: int | None = None,
    camera_mode: str = "release",
    task_kwargs: dict | None = None,
    environment_kwargs: dict | None = None,
    seed: int | None = None,
) -> DistractingEnvironment:
    """A Distracting Control Suite environment. difficulty: constants.DIFFICULTIES (None: vanilla); background path: a
    DAVIS-2017 folder or "builtin" (also None); videos: "train" or "val" (novel); camera_id: default the domain's
    render camera; camera_mode: see CameraDistraction; seed: the first episode's."""
    if domain_name not in C.SUPPORTED_TASKS or task_name not in C.SUPPORTED_TASKS[domain_name]:
        valid = ", ".join(f"{d}-{t}" for d, ts in C.SUPPORTED_TASKS.items() for t in ts)
        raise ConfigError(f"unknown domain/task {domain_name}-{task_name}; valid: {valid}")
    difficulty = difficulty or "vanilla"
    if difficulty not in C.DIFFICULTIES:
        raise ConfigError(f"unknown DCS difficulty {difficulty!r}; valid: {list(C.DIFFICULTIES)}")
    if camera_mode not in C.CAMERA_MODES:
        raise ConfigError(f"unknown DCS camera mode {camera_mode!r}; valid: {list(C.CAMERA_MODES)}")
    scale, num_videos = C.DIFFICULTIES[difficulty]
    source = background_dataset_path or C.BUILTIN
    names = select_videos(background_dataset_videos, num_videos) if num_videos != 0 else ()
    if names and source != C.BUILTIN:
        check_davis_folder(source, names)
    env = suite.load(domain_name, task_name, task_kwargs=task_kwargs, environment_kwargs=environment_kwargs)
    physics = env.physics
    distractions = []
    if names:
        alpha = C.GROUND_PLANE_ALPHA.get(domain_name, C.DEFAULT_GROUND_PLANE_ALPHA)
        distractions.append(BackgroundDistraction(physics, source, background_dataset_videos, names, dynamic, alpha))
    if scale > 0:
        cam = C.RENDER_CAMERA_ID.get(domain_name, 0) if camera_id is None else camera_id
        upper = domain_name != "reacher"
        distractions.append(CameraDistraction(physics, cam, scale, dynamic, upper_quadrant=upper, mode=camera_mode))
        distractions.append(ColorDistraction(physics, scale, dynamic))
    return DistractingEnvironment(env, distractions, seed)
