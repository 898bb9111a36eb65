"""The DCS port behaves as the released reference code that made the paper's datasets (docs/FAITHFULNESS.md).

Each test pins one behaviour of the release that the port once lacked: real MuJoCo rendering, short episodes.
"""

from collections import OrderedDict

import numpy as np
import pytest
from dm_control import suite
from PIL import Image

from src.dcs import constants as C
from src.dcs import load, videos
from src.dcs.suite import BackgroundDistraction, CameraDistraction, _to_cartesian, texture_bytes
from src.envs import make_env

ZERO = np.zeros(6)


def distraction(env, kind):
    return next(d for d in env._distractions if isinstance(d, kind))


def mujoco_camera(domain: str, task: str, physics, cam: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo's own (undistracted) camera pose for the state of physics: a plain dm_control copy of it."""
    plain = suite.load(domain, task)
    with plain.physics.reset_context():
        plain.physics.set_state(physics.get_state())
    return plain.physics.data.cam_xpos[cam].copy(), plain.physics.data.cam_xmat[cam].reshape(3, 3).copy()


def angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b)))


def test_release_camera_pins_humanoid_on_the_far_side_and_corrected_jitters_around_pi():
    half = np.pi / 2 * 0.1  # scale_easy_video_hard: angles +- pi/2 * 0.1
    for dynamic in (True, False):  # the release clamps even a static camera
        env = load("humanoid", "walk", "scale_easy_video_hard", dynamic=dynamic, seed=0)
        env.reset()
        cam = distraction(env, CameraDistraction)
        assert cam.start[1] == np.pi  # humanoid's tracking camera looks from behind (-x)
        for t in range(4):
            assert cam.pos[1] == 0.0  # pinned at 0 (np.clip with low > high gives high), no jitter
            offset = env.physics.data.cam_xpos[0] - env.physics.data.subtree_com[1]
            assert offset[0] > 2.0 and abs(offset[1]) < 1e-9  # on the +x side: the opposite of the undistracted view
            env.step(np.full(21, 0.2 * np.sin(t)))
    env = load("humanoid", "walk", "scale_easy_video_hard", dynamic=True, camera_mode="corrected", seed=0)
    env.reset()
    cam = distraction(env, CameraDistraction)
    angles = []
    for _ in range(6):
        env.step(np.zeros(21))
        angles.append(cam.pos[1])
        offset = env.physics.data.cam_xpos[0] - env.physics.data.subtree_com[1]
        assert offset[0] < -2.0  # seen from behind, as undistracted
    assert np.all(np.abs(np.array(angles) - np.pi) <= half + 1e-12) and np.ptp(angles) > 1e-4
    with pytest.raises(ValueError, match=r"unknown DCS camera mode 'sideways'; valid: \['release', 'corrected'\]"):
        load("humanoid", "walk", "easy", camera_mode="sideways")
    with pytest.raises(ValueError, match="valid: .*corrected"):
        make_env("cheetah", "run", camera_mode="fixed")


def _spy_first_walk_step(cam: CameraDistraction) -> list:
    """Records (position, velocity) each time the walk steps, before it moves."""
    seen, step = [], cam.step

    def spy(physics):
        seen.append((cam.pos.copy(), cam.vel.copy()))
        step(physics)

    cam.step = spy
    return seen


def test_initial_camera_velocity_is_not_scaled_by_the_radius():
    physics = suite.load("walker", "run").physics  # start radius 2.36: a radius-scaled speed would stay <= 0.59 max
    cam = CameraDistraction(physics, 0, scale=0.1, dynamic=True)
    seen = _spy_first_walk_step(cam)
    for seed in range(300):
        cam.reset(physics, np.random.default_rng(seed))
    speeds = np.array([np.linalg.norm(vel) for _, vel in seen])
    assert len(speeds) == 300 and 0.55 < cam.vel_scale < 0.6
    assert speeds.max() <= cam.max_vel + 1e-12 and speeds.max() > 0.95 * cam.max_vel  # uniform in [0, max_vel]
    assert 0.4 < speeds.mean() / cam.max_vel < 0.6


def test_reset_applies_one_walk_step_before_the_first_frame():
    env = load("cheetah", "run", "scale_easy_video_hard", dynamic=True, seed=3)
    cam = distraction(env, CameraDistraction)
    seen = _spy_first_walk_step(cam)
    env.reset()
    assert len(seen) == 1  # the walk stepped once during reset
    sampled, vel = seen[0]
    assert not np.allclose(sampled, cam.pos)  # the first frame's camera already moved
    moved = _to_cartesian(cam.pos) - _to_cartesian(sampled)
    assert np.linalg.norm(moved) <= cam.max_vel * cam.vel_scale + 1e-12  # by one clipped step
    data = env.physics.data
    assert np.allclose(data.cam_xpos[0], data.subtree_com[1] + _to_cartesian(cam.pos))  # what the renderer shows


def test_tracking_camera_looks_at_the_look_at_point_not_the_centre_of_mass():
    env = load("cheetah", "run", "easy", dynamic=True, seed=1)
    env.reset()
    cam = distraction(env, CameraDistraction)
    for t in range(4):
        env.step(np.full(6, np.sin(t + 1)))
        physics = env.physics
        pos, xmat = mujoco_camera("cheetah", "run", physics)  # MuJoCo's own tracking-camera pose of this step
        com = physics.data.subtree_com[1].copy()
        look_at = pos - np.linalg.norm(pos - com) * xmat[:, 2]  # |cam - com| along the viewing axis (-z)
        cam_pos = physics.data.cam_xpos[0]
        forward = -physics.data.cam_xmat[0].reshape(3, 3)[:, 2]
        assert angle(forward, look_at - cam_pos) < 1e-9
        assert angle(forward, com - cam_pos) > 0.01  # not at the centre of mass
        assert np.allclose(cam_pos, com + _to_cartesian(cam.pos))  # held around the centre of mass
        c, s = np.cos(cam.roll), np.sin(cam.roll)
        unrolled = physics.data.cam_xmat[0].reshape(3, 3) @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
        assert abs(unrolled[2, 0]) < 1e-9 and abs(cam.roll) > 1e-4  # looks without roll, then rolled


def test_fixed_camera_orbits_the_world_origin_and_looks_at_its_initial_look_at_point():
    env = load("cartpole", "swingup", "easy", dynamic=True, seed=2)
    env.reset()
    pos0, xmat0 = mujoco_camera("cartpole", "swingup", env.physics)
    look_at = pos0 - np.linalg.norm(pos0 - env.physics.data.subtree_com[1]) * xmat0[:, 2]
    r0 = np.linalg.norm(pos0)
    for _ in range(3):
        env.step(np.ones(1))
        cam_pos = env.physics.data.cam_xpos[0]
        assert (1 - 0.05) * r0 - 1e-9 <= np.linalg.norm(cam_pos) <= (1 + 0.15) * r0 + 1e-9  # radius about the origin
        assert angle(-env.physics.data.cam_xmat[0].reshape(3, 3)[:, 2], look_at - cam_pos) < 1e-9


def texture(env, bg: BackgroundDistraction) -> np.ndarray:
    n = C.SKYBOX_SIZE * C.SKYBOX_SIZE * 3
    return texture_bytes(env.physics.model)[bg.adr : bg.adr + n].reshape(C.SKYBOX_SIZE, C.SKYBOX_SIZE, 3)


def test_background_bounces_as_released_with_bicubic_frames_resized_once_per_reset(monkeypatch):
    calls = []
    resize = videos.resize_frame
    monkeypatch.setattr(videos, "resize_frame", lambda frame, size: calls.append(size) or resize(frame, size))
    monkeypatch.setattr(videos, "_skybox_cache", OrderedDict())
    env = load("cheetah", "run", "scale_easy_video_hard", dynamic=True, seed=4)
    env.reset()
    bg = distraction(env, BackgroundDistraction)
    video, start = bg.frames.video, bg.index
    num = len(video)

    def expected(i):  # PIL's default Image.resize resampling: bicubic
        return np.asarray(Image.fromarray(video[i]).resize((C.SKYBOX_SIZE, C.SKYBOX_SIZE)))

    assert np.array_equal(texture(env, bg), expected(bg.index))
    shown, all_shown = [], {start}
    bg.index, bg.direction = num - 3, 1
    for _ in range(5):
        env.step(ZERO)
        shown.append(bg.index)
        assert np.array_equal(texture(env, bg), expected(bg.index))
    assert shown == [num - 2, num - 1, num - 1, num - 2, num - 3]  # the last frame twice
    all_shown.update(shown)
    shown = []
    bg.index, bg.direction = 2, -1
    for _ in range(4):
        env.step(ZERO)
        shown.append(bg.index)
        assert np.array_equal(texture(env, bg), expected(bg.index))
    assert shown == [1, 0, 1, 2]  # frame 0 once
    assert len(calls) == len(all_shown | set(shown))  # each frame shown resized once
    calls.clear()
    env.seed(4)
    env.reset()  # the same video again: its resized frames are reused, with the same pixels
    assert calls == [] and np.array_equal(texture(env, bg), expected(bg.index))

    release = load("cheetah", "run", "scale_easy_video_hard", dynamic=True, seed=4)
    distraction(release, BackgroundDistraction).cache_resized = False  # the release's way: every frame at reset
    release.reset()
    assert len(calls) == num and all(size == C.SKYBOX_SIZE for size in calls)
    release.step(ZERO)
    assert len(calls) == num  # steps only write the pre-resized frame


def test_episode_reproducible_from_its_seed_whatever_came_before():
    env = load("humanoid", "walk", "scale_easy_video_hard", dynamic=True, camera_mode="corrected", seed=5)

    def episode(seed):
        env.seed(seed)
        env.reset()
        frames = [env.physics.render(32, 32, camera_id=0)]
        for t in range(3):
            env.step(np.full(21, 0.3 * np.cos(t)))
            frames.append(env.physics.render(32, 32, camera_id=0))
        return frames

    first = episode(5)
    episode(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, episode(5), strict=True))


def test_step_after_the_last_resets_the_distractions(monkeypatch):
    env = load("cheetah", "run", "easy", dynamic=True, task_kwargs={"time_limit": 0.02}, seed=0)
    env.reset()
    resets = []
    for d in env._distractions:
        monkeypatch.setattr(d, "reset", lambda physics, rng, d=d: resets.append(type(d).__name__))
    assert not env.step(ZERO).last() and env.step(ZERO).last()
    assert env.step(ZERO).first()  # dm_control reset itself: the release sets its distractions up again
    assert resets == ["BackgroundDistraction", "CameraDistraction", "ColorDistraction"]
