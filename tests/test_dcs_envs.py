"""The Distracting Control Suite port and the gymnasium environment: real MuJoCo rendering, short episodes."""

import numpy as np
import pytest
from dm_control import suite

from src.dcs import DIFFICULTIES, load, write_builtin_as_davis
from src.dcs.constants import DAVIS17_TRAINING_VIDEOS, DAVIS17_VALIDATION_VIDEOS
from src.dcs.videos import builtin_video
from src.envs import env_kwargs_from_attrs, flatten_state, make_env, make_vec_env


def rollout(env, seed: int, steps: int, action_value: float = 0.3, clip: bool = False) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for t in range(steps):
        action = np.full(env.action_space.shape, action_value * np.sin(t + 1))
        obs, *_ = env.step(np.clip(action, -1, 1) if clip else action)
        frames.append(obs)
    return frames


def test_same_seed_gives_byte_identical_frames_and_other_seeds_differ():
    env = make_env("cheetah", "run", "scale_easy_video_hard", dynamic=True, frame_stack=1, max_episode_steps=10)
    first = rollout(env, seed=7, steps=6)
    rollout(env, seed=3, steps=4)  # whatever happens in between
    again = rollout(env, seed=7, steps=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    fresh = make_env("cheetah", "run", "scale_easy_video_hard", dynamic=True, frame_stack=1, max_episode_steps=10)
    assert all(np.array_equal(a, b) for a, b in zip(first, rollout(fresh, seed=7, steps=6), strict=True))
    other = rollout(env, seed=8, steps=6)
    assert not np.array_equal(first[0], other[0])


def test_vanilla_has_no_distractions_and_matches_plain_dm_control():
    env = make_env("walker", "run", "vanilla", dynamic=False, frame_stack=1, max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    assert env.dcs_env._distractions == []
    plain = suite.load("walker", "run")
    plain.reset()
    with plain.physics.reset_context():
        plain.physics.set_state(env.dcs_env.physics.get_state())
    assert np.array_equal(obs, plain.physics.render(64, 64, camera_id=0))


def test_background_videos_really_change_pixels():
    a, b = builtin_video("train", 0), builtin_video("train", 1)
    assert a.shape == (60, 160, 160, 3) and not np.array_equal(a, b)
    assert not np.array_equal(a[0], a[10])  # the video moves
    assert not np.array_equal(builtin_video("val", 0), a)  # val videos are other videos
    vanilla = make_env("cheetah", "run", "vanilla", dynamic=False, frame_stack=1).reset(seed=0)[0]
    env = make_env("cheetah", "run", "scale_easy_video_hard", dynamic=True, frame_stack=1)
    frames = rollout(env, seed=0, steps=3)
    sky = (slice(0, 20), slice(None))  # the top of the frame shows the skybox
    assert np.abs(frames[0][sky].astype(int) - vanilla[sky]).mean() > 10
    assert not np.array_equal(frames[1][sky], frames[3][sky])  # dynamic background


def test_camera_moves_and_colours_drift_only_when_dynamic():
    for dynamic in (True, False):
        env = make_env("cheetah", "run", "easy", dynamic=dynamic, frame_stack=1)
        env.reset(seed=1)
        physics = env.dcs_env.physics

        def camera_offset(physics=physics):
            return physics.data.cam_xpos[0] - physics.data.subtree_com[physics.model.cam_bodyid[0]]

        offsets, colours = [camera_offset().copy()], [physics.model.mat_rgba[:, :3].copy()]
        for _ in range(5):
            env.step(np.zeros(env.action_space.shape))
            offsets.append(camera_offset().copy())
            colours.append(physics.model.mat_rgba[:, :3].copy())
        moved = not np.allclose(offsets[0], offsets[-1])
        drifted = not np.allclose(colours[0], colours[-1])
        assert moved == dynamic and drifted == dynamic
    plain = suite.load("cheetah", "run")
    assert not np.allclose(colours[0], plain.physics.model.mat_rgba[:, :3])  # randomised at reset, even static


def test_corrected_camera_angle_walks_continuously_around_a_start_at_pi():
    # humanoid's camera starts at a horizontal angle of pi, where arctan2 wraps: crossing it must not jump
    env = make_env("humanoid", "walk", "hard", dynamic=True, frame_stack=1, camera_mode="corrected")
    env.reset(seed=0)
    cam = env.dcs_env._distractions[1]
    assert abs(abs(cam.start[1]) - np.pi) < 1e-6
    cam.vel_std = 0.0  # a steady walk in +theta through the start angle
    r, _, phi = cam.pos
    cam.pos = np.array([r, cam.start[1] - 0.03, phi])
    cam.vel = np.array([-np.sin(cam.pos[1]), np.cos(cam.pos[1]), 0.0]) * r * np.sin(phi) * 0.01
    angles = [cam.pos[1]]
    for _ in range(8):
        cam.step(env.dcs_env.physics)
        angles.append(cam.pos[1])
    assert np.all(np.diff(angles) > 0.005) and np.all(np.diff(angles) < 0.02)
    assert angles[-1] > cam.start[1]


def test_frame_stack_padding_channel_order_clipping_truncation_and_state():
    env = make_env("walker", "walk", "vanilla", dynamic=False, frame_stack=3, max_episode_steps=4)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 9) and obs.dtype == np.uint8
    assert np.array_equal(obs[..., 0:3], obs[..., 3:6]) and np.array_equal(obs[..., 3:6], obs[..., 6:9])
    single = make_env("walker", "walk", "vanilla", dynamic=False, frame_stack=1, max_episode_steps=4)
    singles = rollout(single, seed=0, steps=4, action_value=5.0)  # out-of-range actions are clipped
    stacked = rollout(env, seed=0, steps=4, action_value=5.0, clip=True)
    assert not np.array_equal(stacked[4], rollout(env, seed=0, steps=4, action_value=1.0)[4])
    for t in range(2, 5):
        assert np.array_equal(stacked[t], np.concatenate(singles[t - 2 : t + 1], axis=-1))  # oldest first
    env.reset(seed=0)
    done = [env.step(np.zeros(6))[3] for _ in range(4)]
    assert done == [False, False, False, True]
    # proprioceptive state: keys in alphabetical order (walker: height 1, orientations 14, velocity 9)
    assert info["state"].dtype == np.float32 and info["state"].shape == (24,)
    obs_dict = env.dcs_env.task.get_observation(env.dcs_env.physics)
    assert np.allclose(flatten_state(obs_dict)[:1], obs_dict["height"])


def test_davis_layout_folder_loads_and_bad_inputs_are_named(tmp_path):
    names = write_builtin_as_davis(str(tmp_path / "davis"), split="train", num_videos=4, num_frames=5)
    assert names == list(DAVIS17_TRAINING_VIDEOS[:4]) and len(DAVIS17_VALIDATION_VIDEOS) == 30
    assert sorted(p.name for p in (tmp_path / "davis" / "bear").iterdir()) == [f"{i:05d}.jpg" for i in range(5)]
    env = make_env("cheetah", "run", "easy", backgrounds_path=str(tmp_path / "davis"), frame_stack=1)
    assert env.reset(seed=0)[0].shape == (64, 64, 3)
    with pytest.raises(FileNotFoundError, match="lacks 56 video"):
        make_env("cheetah", "run", "hard", backgrounds_path=str(tmp_path / "davis"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_env("cheetah", "run", "easy", backgrounds_path=str(tmp_path / "nowhere"))
    for f in (tmp_path / "davis" / "boat").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="boat' has no frames"):
        make_env("cheetah", "run", "easy", backgrounds_path=str(tmp_path / "davis"))
    with pytest.raises(ValueError, match="unknown DCS difficulty 'impossible'; valid: .*scale_easy_video_hard"):
        load("cheetah", "run", "impossible")
    with pytest.raises(ValueError, match="unknown domain/task cheetah-fly; valid: .*walker-run"):
        load("cheetah", "fly", "vanilla")
    assert set(DIFFICULTIES) == {"vanilla", "easy", "medium", "hard", "scale_easy_video_hard"}


def test_env_from_dataset_attributes():
    attrs = dict(domain_name="hopper", task_name="hop", difficulty="scale_easy_video_hard", dynamic=True, img_hw=64)
    with pytest.raises(ValueError, match="DAVIS backgrounds"):
        env_kwargs_from_attrs(attrs)  # the paper's released files: DAVIS, the folder must be given
    kwargs = env_kwargs_from_attrs({**attrs, "background_source": "builtin"}, split="val", max_episode_steps=3)
    assert kwargs["backgrounds_path"] == "builtin" and kwargs["backgrounds_split"] == "val"
    assert kwargs["camera_mode"] == "release"  # files without the attribute (the paper's): the release's camera
    corrected = {**attrs, "background_source": "builtin", "dcs_camera_mode": "corrected"}
    assert env_kwargs_from_attrs(corrected)["camera_mode"] == "corrected"
    with pytest.raises(KeyError, match="img_hw"):
        env_kwargs_from_attrs({k: v for k, v in attrs.items() if k != "img_hw"})


def test_vector_env_with_two_workers():
    kwargs = dict(domain_name="cheetah", task_name="run", difficulty="easy", max_episode_steps=3)
    envs = make_vec_env(kwargs, num_envs=2, seed=0)
    try:
        obs, _ = envs.reset(seed=[5, 5])
        assert obs.shape == (2, 64, 64, 9) and np.array_equal(obs[0], obs[1])
        obs, reward, terminated, truncated, _ = envs.step(np.zeros((2, 6)))
        assert obs.shape == (2, 64, 64, 9) and reward.shape == (2,)
    finally:
        envs.close()
