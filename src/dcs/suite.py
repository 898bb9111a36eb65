"""Distracting Control Suite: dm_control tasks with background-video, camera and colour distractions.

A numpy / PIL port written for this project (no tensorflow). The settings follow REFERENCE-FACTS 12. Unlike the
original release, every random source (physics initialisation, video choice and playback, camera and colour
random walks) is drawn from generators derived from one episode seed: `env.seed(s); env.reset()` gives the same
frames for the same s, whatever happened before.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import dm_env  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import suite  # noqa: E402
from PIL import Image  # noqa: E402

from src.dcs import constants as C  # noqa: E402
from src.dcs.videos import check_davis_folder, load_video, select_videos  # noqa: E402


class BackgroundDistraction:
    """Writes a video frame into the skybox texture every step (all faces show it) and re-uploads the texture."""

    def __init__(self, physics, source: str, split: str, names: tuple[str, ...], dynamic: bool, ground_alpha: float):
        self.source, self.split, self.names, self.dynamic = source, split, names, dynamic
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
        self.video = None
        self.index = self.direction = 0
        self._shown = None

    def reset(self, physics, rng: np.random.Generator) -> None:
        name = self.names[rng.integers(len(self.names))]
        self.video = load_video(self.source, self.split, name)
        self.index = int(rng.integers(len(self.video)))
        self.direction = int(rng.choice([-1, 1]))
        self._shown = None
        self._apply(physics)

    def step(self, physics) -> None:
        if self.dynamic and len(self.video) > 1:
            nxt = self.index + self.direction
            if not 0 <= nxt < len(self.video):  # bounce at both ends
                self.direction = -self.direction
                nxt = self.index + self.direction
            self.index = nxt
        self._apply(physics)

    def _apply(self, physics) -> None:
        key = (id(self.video), self.index)
        if key == self._shown:
            return
        frame = Image.fromarray(self.video[self.index]).resize((C.SKYBOX_SIZE, C.SKYBOX_SIZE), Image.BILINEAR)
        n = C.SKYBOX_SIZE * C.SKYBOX_SIZE * 3
        physics.model.tex_data[self.adr : self.adr + n] = np.asarray(frame).reshape(-1)
        contexts = physics.contexts  # the renderer's GL context exists after the first render
        with contexts.gl.make_current() as ctx:
            ctx.call(mujoco.mjr_uploadTexture, physics.model.ptr, contexts.mujoco.ptr, self.tex_id)
        self._shown = key


def _look_at(pos: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """Camera frame (3 x 3, columns: right, up, backward) looking from pos at target, then rolled."""
    forward = target - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(right)
    right = right / norm if norm > 1e-8 else np.array([1.0, 0.0, 0.0])
    up = np.cross(right, forward)
    c, s = np.cos(roll), np.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    return np.stack([right, up, -forward], axis=1)


def _to_spherical(v: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(v)
    return np.array([r, np.arctan2(v[1], v[0]), np.arccos(np.clip(v[2] / r, -1.0, 1.0))])


def _to_cartesian(s: np.ndarray) -> np.ndarray:
    r, theta, phi = s
    return r * np.array([np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi)])


class CameraDistraction:
    """Random camera position (spherical coordinates around the look-at point) and roll, random-walking when
    dynamic. Tracking cameras orbit the centre of mass they track; fixed cameras their initial look-at point."""

    def __init__(self, physics, camera_id: int, scale: float, dynamic: bool, upper_quadrant: bool = True):
        self.cam, self.scale, self.upper = camera_id, scale, upper_quadrant
        model = physics.model
        tracking_modes = (int(mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM), int(mujoco.mjtCamLight.mjCAMLIGHT_TRACK))
        self.tracking = int(model.cam_mode[camera_id]) in tracking_modes
        self.body = model.cam_bodyid[camera_id]
        self.vel_std = C.CAMERA_VEL_STD * scale if dynamic else 0.0
        self.max_vel = C.CAMERA_MAX_VEL * scale if dynamic else 0.0
        self.roll_std = C.CAMERA_ROLL_STD * scale if dynamic else 0.0
        self.max_roll_vel = C.CAMERA_MAX_ROLL_VEL * scale if dynamic else 0.0

    def _target(self, physics) -> np.ndarray:
        if self.tracking:
            return physics.data.subtree_com[self.body].copy()
        return self.fixed_target

    def reset(self, physics, rng: np.random.Generator) -> None:
        data = physics.data
        cam_pos = data.cam_xpos[self.cam].copy()
        forward = -data.cam_xmat[self.cam].reshape(3, 3)[:, 2]
        centre = data.subtree_com[self.body if self.tracking else 0]
        if not self.tracking:  # the point on the viewing axis closest to the model's centre of mass
            self.fixed_target = cam_pos + forward * max(0.1, float(np.dot(centre - cam_pos, forward)))
        self.start = _to_spherical(cam_pos - self._target(physics))
        r0, theta0, phi0 = self.start
        half = np.pi / 2 * self.scale
        phi_hi = min(phi0 + half, np.pi / 2) if self.upper else phi0 + half
        self.low = np.array([(1 - 0.5 * self.scale) * r0, theta0 - half, max(phi0 - half, 1e-3)])
        self.high = np.array([(1 + 1.5 * self.scale) * r0, theta0 + half, max(phi_hi, 1e-3)])
        self.roll_range = half
        self.vel_scale = r0 / 4.0
        self.pos = rng.uniform(self.low, self.high)
        self.roll = rng.uniform(-self.roll_range, self.roll_range)
        direction = rng.normal(size=3)
        direction /= max(1e-8, np.linalg.norm(direction))
        self.vel = direction * rng.uniform(0, self.max_vel) * self.vel_scale
        self.roll_vel = rng.uniform(-self.max_roll_vel, self.max_roll_vel)
        self.rng = rng
        self._apply(physics)

    def step(self, physics) -> None:
        if self.max_vel > 0:
            vel = self.vel + self.rng.normal(scale=self.vel_std * self.vel_scale, size=3)
            speed = np.linalg.norm(vel)
            limit = self.max_vel * self.vel_scale
            if speed > limit:
                vel *= limit / speed
            old = _to_cartesian(self.pos)
            new = _to_spherical(old + vel)
            new[1] = self.start[1] + (new[1] - self.start[1] + np.pi) % (2 * np.pi) - np.pi  # angle near the start
            self.pos = np.clip(new, self.low, self.high)
            self.vel = _to_cartesian(self.pos) - old
        if self.max_roll_vel > 0:
            roll_vel = np.clip(
                self.roll_vel + self.rng.normal(scale=self.roll_std), -self.max_roll_vel, self.max_roll_vel
            )
            new_roll = np.clip(self.roll + roll_vel, -self.roll_range, self.roll_range)
            self.roll_vel, self.roll = new_roll - self.roll, new_roll
        self._apply(physics)

    def _apply(self, physics) -> None:
        target = self._target(physics)
        pos = target + _to_cartesian(self.pos)
        physics.data.cam_xpos[self.cam] = pos
        physics.data.cam_xmat[self.cam] = _look_at(pos, target, self.roll).reshape(-1)


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
        for d in self._distractions:
            d.step(self._env.physics)
        return timestep

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
    task_kwargs: dict | None = None,
    environment_kwargs: dict | None = None,
    seed: int | None = None,
) -> DistractingEnvironment:
    """A Distracting Control Suite environment.

    difficulty: one of constants.DIFFICULTIES (None = vanilla). dynamic: distractions move every step.
    background_dataset_path: a DAVIS-2017 folder, or "builtin" (also None) for the built-in videos.
    background_dataset_videos: "train" or "val" (the novel videos). camera_id: the camera the camera distraction
    moves (default: the domain's render camera). seed: the first episode's seed (see DistractingEnvironment).
    """
    if domain_name not in C.SUPPORTED_TASKS or task_name not in C.SUPPORTED_TASKS[domain_name]:
        valid = ", ".join(f"{d}-{t}" for d, ts in C.SUPPORTED_TASKS.items() for t in ts)
        raise ValueError(f"unknown domain/task {domain_name}-{task_name}; valid: {valid}")
    difficulty = difficulty or "vanilla"
    if difficulty not in C.DIFFICULTIES:
        raise ValueError(f"unknown DCS difficulty {difficulty!r}; valid: {list(C.DIFFICULTIES)}")
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
        distractions.append(CameraDistraction(physics, cam, scale, dynamic, upper_quadrant=domain_name != "reacher"))
        distractions.append(ColorDistraction(physics, scale, dynamic))
    return DistractingEnvironment(env, distractions, seed)
