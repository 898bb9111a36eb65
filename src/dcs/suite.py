"""Distracting Control Suite: dm_control tasks with background-video, camera and colour distractions.

A numpy / PIL port written for this project (no tensorflow) that behaves as the released reference code that made
the paper's datasets (docs/FAITHFULNESS.md): difficulties, ranges and random walks, the camera's look-at point and
upper-quadrant clamp, the bicubic pre-resized video frames and their bounce. One deliberate difference: every
random source (physics initialisation, video choice and playback, camera and colour random walks) is drawn from
generators derived from one episode seed, so `env.seed(s); env.reset()` gives the same frames for the same s,
whatever happened before (the release leaves some sources unseeded).
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

# MuJoCo warnings that say nothing about this project's environments, dropped from dm_control's absl log by their
# message: dm_control's own task XMLs (cheetah.xml, ...) set `<compiler settotalmass=...>`, which MuJoCo 3.x still
# applies and reports as deprecated each time a model is compiled, i.e. once per environment built.
HARMLESS_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


class _DropHarmlessWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(HARMLESS_MUJOCO_WARNINGS)


logging.getLogger("absl").addFilter(_DropHarmlessWarnings())


class BackgroundDistraction:
    """A video in the skybox texture (all faces show it), as the release plays it (docs/FAITHFULNESS.md).

    On reset: a random video of the list (static: one random frame of it), a random start frame and direction, the
    frames resized to the texture (bicubic). Each step (dynamic only) the index moves by one and bounces: moving
    forward past the last frame it is clamped back to the last frame, which is therefore shown twice, and turns;
    moving backward it turns on reaching frame 0, shown once. The current frame is written into the texture and
    uploaded. cache_resized=False is the release's way, for benchmarks: every frame read and resized at each reset.
    """

    def __init__(
        self,
        physics,
        source: str,
        split: str,
        names: tuple[str, ...],
        dynamic: bool,
        ground_alpha: float,
        cache_resized: bool = True,
    ):
        self.source, self.split, self.names, self.dynamic = source, split, names, dynamic
        self.cache_resized = cache_resized
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
        self.frames = None
        self.video = self.index = self.direction = 0
        self.shown = None

    def reset(self, physics, rng: np.random.Generator) -> None:
        self.video = int(rng.integers(len(self.names)))
        name = self.names[self.video]
        # static backgrounds use one frame: resized on first use (the release's way only matters when dynamic)
        cache = self.cache_resized or not self.dynamic
        frames = skybox_frames(self.source, self.split, name, C.SKYBOX_SIZE, cache=cache)
        if self.dynamic:
            self.frames = frames
            self.shown = None
            self.index = int(rng.integers(len(frames)))
            self.direction = int(rng.choice([-1, 1]))
        else:  # one random frame of the video
            self.shown = int(rng.integers(len(frames)))
            self.frames = [frames[self.shown]]
            self.index, self.direction = 0, 0
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
        """The distractor's state of the current frame (docs/DATA.md, "distractors"): background [video (its index
        in the split's list), frame (the video frame shown), direction (+1 / -1 while playing, 0 when static)]."""
        frame = self.index if self.shown is None else self.shown
        return {"background": np.array([self.video, frame, self.direction], dtype=np.float32)}

    def _apply(self, physics) -> None:
        frame = self.frames[self.index]  # [SKYBOX_SIZE, SKYBOX_SIZE, 3]
        texture_bytes(physics.model)[self.adr : self.adr + frame.size] = frame.reshape(-1)
        contexts = physics.contexts  # the renderer's GL context exists after the first render
        with contexts.gl.make_current() as ctx:
            ctx.call(mujoco.mjr_uploadTexture, physics.model.ptr, contexts.mujoco.ptr, self.tex_id)


def texture_bytes(model) -> np.ndarray:
    """The model's texture bytes: MjModel.tex_data, called tex_rgb in MuJoCo 3.2.0 (the release's pin, see
    requirements-reference.txt)."""
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


def _roll(xmat: np.ndarray, roll: float) -> np.ndarray:
    """The camera frame rotated by roll around its viewing axis."""
    c, s = np.cos(roll), np.sin(roll)
    return xmat @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


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
    """The point a camera looks at, as the release defines it (docs/FAITHFULNESS.md): on the camera's viewing axis
    (-z of its frame), as far from the camera as the centre of mass of body 1's subtree (the agent). The camera
    pose is MuJoCo's own for the current physics state, not a distracted pose written earlier."""
    mujoco.mj_camlight(physics.model.ptr, physics.data.ptr)
    data = physics.data
    pos = data.cam_xpos[camera_id].copy()
    distance = np.linalg.norm(pos - data.subtree_com[1])
    return pos - distance * data.cam_xmat[camera_id].reshape(3, 3)[:, 2]


class CameraDistraction:
    """Random camera position in spherical coordinates and roll, random-walking when dynamic (docs/FAITHFULNESS.md).

    Tracking cameras: the position is held around the agent (centre of mass of body 1's subtree) and the camera
    looks at its look-at point of the current step. Fixed cameras look at their initial look-at point; the release
    holds their position around the world origin, the corrected mode around that look-at point.
    Ranges: angles +- pi/2 * scale around the start, restricted to the upper quadrant (except reacher); radius
    (1 - 0.5 * scale) to (1 + 1.5 * scale) times the start radius; roll +- pi/2 * scale. camera_mode "release"
    restricts as the released code does, clamping the horizontal angle to [-pi, 0] and the vertical one to
    [0, pi/2] after adding the ranges: a camera starting at horizontal angle pi (humanoid) is pinned at 0, the far
    side of the body. "corrected" only caps the vertical angle at pi/2 and keeps the horizontal angle continuous
    around its start.
    """

    def __init__(
        self, physics, camera_id: int, scale: float, dynamic: bool, upper_quadrant: bool = True, mode: str = "release"
    ):
        if mode not in C.CAMERA_MODES:
            raise ConfigError(f"unknown camera mode {mode!r}; valid: {list(C.CAMERA_MODES)}")
        self.cam, self.scale, self.upper, self.mode = camera_id, scale, upper_quadrant, mode
        model = physics.model
        tracking_modes = (int(mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM), int(mujoco.mjtCamLight.mjCAMLIGHT_TRACK))
        self.tracking = int(model.cam_mode[camera_id]) in tracking_modes
        self.vel_std = C.CAMERA_VEL_STD * scale if dynamic else 0.0
        self.max_vel = C.CAMERA_MAX_VEL * scale if dynamic else 0.0
        self.roll_std = C.CAMERA_ROLL_STD * scale if dynamic else 0.0
        self.max_roll_vel = C.CAMERA_MAX_ROLL_VEL * scale if dynamic else 0.0

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
        """The distracted camera against the nominal one (MuJoCo's own pose of the camera for the same physics
        state): camera [position offset x, y, z (world frame, metres), orientation offset as a rotation vector
        x, y, z (world frame, radians: the rotation taking the nominal camera frame to the distracted one)]."""
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
        xmat = _roll(look_at(pos, target), self.roll)
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
            self.rgb = np.clip(
                self.rgb + self.rng.normal(scale=self.step_std, size=self.rgb.shape), self.low, self.high
            )
            physics.model.mat_rgba[:, :3] = self.rgb


class DistractingEnvironment(dm_env.Environment):
    """A dm_control environment with distractions applied after every reset and step (dm_env interface).

    Physics and distractions draw from generators derived from the seed given to `seed()` (or at construction);
    each reset after `seed(s)` is reproducible. Distractions are applied to the model and to the camera pose the
    renderer reads, so `physics.render(...)` shows them.
    """

    def __init__(self, env, distractions: list, seed: int | None = None):
        self._env = env
        self._distractions = distractions
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        seq = np.random.SeedSequence(seed)
        physics_seed, *children = seq.spawn(1 + len(self._distractions))
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
        """The state of every active distraction for the frame the physics shows now (after reset / step):
        {"background": [3], "camera": [6], "color": [3 * materials]}, float32 (docs/DATA.md, "distractors"). Empty
        without distractions (vanilla)."""
        out = {}
        for d in self._distractions:
            out |= d.state()
        return out

    def observation_spec(self):
        return self._env.observation_spec()

    def action_spec(self):
        return self._env.action_spec()

    @property
    def physics(self):
        return self._env.physics

    @property
    def task(self):
        return self._env.task

    def control_timestep(self) -> float:
        return self._env.control_timestep()

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
    """A Distracting Control Suite environment.

    difficulty: one of constants.DIFFICULTIES (None = vanilla). dynamic: distractions move every step.
    background_dataset_path: a DAVIS-2017 folder, or "builtin" (also None) for the built-in videos.
    background_dataset_videos: "train" or "val" (the novel videos). camera_id: the camera the camera distraction
    moves (default: the domain's render camera). camera_mode: "release" (the released code's upper-quadrant clamp,
    which pins humanoid's camera on the far side of the body) or "corrected" (angles around every camera's start);
    see CameraDistraction. seed: the first episode's seed (see DistractingEnvironment).
    """
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
