"""Evaluation with blurred frames (`--bc.eval_use_blur`, `--decoder.eval_use_blur`): the environment blurs its
frames' backgrounds the way a blurred dataset's were: true masks from MuJoCo's segmentation rendering, or depth
masks made frame by frame with the same model and parameters as the dataset's."""

import numpy as np
import pytest

from src.envs import blur_from_attrs, make_env
from src.evaluation import evaluate_for_dataset
from src.masks import segmentation_mask

ATTRS = dict(domain_name="cheetah", task_name="run", difficulty="scale_easy_video_hard", dynamic=True, img_hw=64)
ATTRS |= dict(background_source="builtin")
BLURRED = {**ATTRS, "blur_kernel": np.array([7, 7]), "blur_sigma": 2.0, "blur_masks": "true"}


def test_blur_settings_come_from_the_dataset_attributes():
    assert blur_from_attrs(BLURRED) == {"kernel": [7, 7], "sigma": 2.0, "masks": "true"}
    with pytest.raises(ValueError, match="x.hdf5 was not blurred"):
        blur_from_attrs(ATTRS, "x.hdf5")
    with pytest.raises(ValueError, match="unknown blur_masks 'sky'"):
        blur_from_attrs({**BLURRED, "blur_masks": "sky"})


def test_blurred_env_keeps_the_agent_and_blurs_the_background():
    kwargs = dict(domain_name="cheetah", task_name="run", frame_stack=1, max_episode_steps=3)
    plain = make_env(**kwargs)
    blurred = make_env(**kwargs, blur=blur_from_attrs(BLURRED))
    a, _ = plain.reset(seed=4)
    b, _ = blurred.reset(seed=4)
    mask = segmentation_mask(blurred.dcs_env.physics, 0, 64, 64)
    fg, bg = mask == 255, mask == 0
    assert fg.sum() > 50 and bg.sum() > 1000
    np.testing.assert_array_equal(a[fg], b[fg])  # the agent stays sharp
    assert np.abs(a[bg].astype(int) - b[bg].astype(int)).mean() > 1.0  # the background is blurred


def test_evaluation_uses_the_blur_when_asked():
    class Stage:
        eval_episodes, eval_seed, dcs_backgrounds_path, dcs_backgrounds_split = 1, 0, None, "train"
        eval_use_blur, data_path = True, "blurred.hdf5"

    class Run:
        eval_num_envs, eval_max_episode_steps = 1, 3

    seen = []

    def policy(obs):
        seen.append(obs.clone())
        return obs.new_zeros(obs.shape[0], 6).float()

    metrics = evaluate_for_dataset(policy, BLURRED, Stage, Run, 3, "cpu", "decoder")
    assert np.isfinite(metrics["decoder/eval_returns_mean"]) and len(seen) == 3
    Stage.eval_use_blur = False
    sharp = []
    evaluate_for_dataset(lambda o: sharp.append(o.clone()) or o.new_zeros(o.shape[0], 6).float(), BLURRED, Stage, Run,
                         3, "cpu", "decoder")  # fmt: skip
    assert not np.array_equal(seen[0].numpy(), sharp[0].numpy())  # the same episode, other frames
    Stage.eval_use_blur = True
    with pytest.raises(ValueError, match="blurred.hdf5 was not blurred"):
        evaluate_for_dataset(policy, ATTRS, Stage, Run, 3, "cpu", "decoder")


def test_streamed_depth_masks_equal_the_trajectory_ones():
    """The evaluation environment makes depth masks one frame at a time; they equal generate_masks_hdf5's."""
    from src.masks import DepthMasker, depth_masks, depth_of_frames
    from tests.test_masks import tiny_depth_model

    model = tiny_depth_model()
    env = make_env("cheetah", "run", frame_stack=1, max_episode_steps=4)
    obs, _ = env.reset(seed=1)
    frames = [obs]
    for _ in range(3):
        frames.append(env.step(np.zeros(6))[0])
    frames = np.stack(frames)
    masker = DepthMasker(model, 50.0, 0.3, (5, 5), 1.0)
    streamed = np.stack([masker(f) for f in frames])
    whole = depth_masks(depth_of_frames(model, frames), 50.0, 0.3, (5, 5), 1.0)
    diff = np.abs(streamed.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # the same masks, up to float rounding of the feathering


def test_a_depth_blurred_dataset_is_evaluated_with_depth_blur(tmp_path):
    from tests.test_masks import tiny_depth_model

    model_dir = tmp_path / "depth"
    tiny_depth_model().save_pretrained(model_dir)
    attrs = {**BLURRED, "blur_masks": "depth", "blur_encoder": "vits", "blur_percentile": 50.0}
    attrs |= {"blur_threshold_alpha": 0.1, "blur_mask_kernel": np.array([5, 5]), "blur_mask_sigma": 1.0}
    blur = blur_from_attrs(attrs, model_path=str(model_dir))
    assert blur["masks"] == "depth" and blur["mask_kernel"] == [5, 5] and blur["encoder"] == "vits"
    kwargs = dict(domain_name="cheetah", task_name="run", frame_stack=1, max_episode_steps=3)
    plain, blurred = make_env(**kwargs), make_env(**kwargs, blur=blur)
    a, _ = plain.reset(seed=2)
    b, _ = blurred.reset(seed=2)
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="does not record"):
        blur_from_attrs({**BLURRED, "blur_masks": "depth"})
