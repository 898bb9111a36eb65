"""Foreground masks and background blur (src/masks.py, scripts/generate_masks_hdf5.py, scripts/blur_hdf5_data.py)."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from src.masks import (
    DepthWeightsMissing,
    blur_background,
    depth_masks,
    depth_of_frames,
    ema_thresholds,
    load_depth_model,
    segmentation_mask,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_depth_model():
    """A randomly initialised DepthAnything (no download): DINOv2 backbone of 2 layers, hidden size 32, 56 px."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=56,
        out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        patch_size=14,
        neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1],
        fusion_hidden_size=16,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    return DepthAnythingForDepthEstimation(config).eval()


@pytest.fixture(scope="module")
def cheetah():
    """Two cheetah-run trajectories of 5 frames (64 px) with their true masks, rendered from the stored states."""
    from src.envs import make_env

    env = make_env("cheetah", "run", img_hw=64, frame_stack=1, max_episode_steps=5)
    rng = np.random.default_rng(0)
    trajs = []
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        frames, masks = [], []
        for _ in range(5):
            frames.append(obs)
            masks.append(segmentation_mask(env.dcs_env.physics, env.camera_id, 64, 64))
            obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        trajs.append((np.stack(frames), np.stack(masks)))
    return trajs


@pytest.fixture(scope="module")
def files(tmp_path_factory, cheetah):
    """A tiny dataset (released layout) and its true masks file."""
    root = tmp_path_factory.mktemp("masks")
    data, true = root / "tiny.hdf5", root / "tiny-masks-true.hdf5"
    with h5py.File(data, "w") as f, h5py.File(true, "w") as t:
        f.attrs.update({"domain_name": "cheetah", "task_name": "run", "img_hw": 64})
        t.attrs.update({"source_file": data.name, "method": "true"})
        for i, (obs, masks) in enumerate(cheetah):
            g = f.create_group(str(i))
            g.create_dataset("obs", data=obs, compression="gzip", chunks=(1, 64, 64, 3))
            g.create_dataset("actions", data=np.full((5, 6), i, np.float32))
            g.create_dataset("states", data=np.zeros((5, 17), np.float32))
            g.attrs["traj_return"] = float(i)
            t.create_group(str(i)).create_dataset("masks", data=masks, compression="gzip")
    return data, true


def test_true_masks_cover_the_agent_not_the_sky(cheetah):
    for _obs, masks in cheetah:
        assert masks.dtype == np.uint8 and masks.shape == (5, 64, 64)
        assert set(np.unique(masks)) <= {0, 255}
        fg = (masks == 255).mean(axis=(1, 2))
        assert np.all(fg > 0.005) and np.all(fg < 0.3)  # the agent, not the whole frame
        assert np.all(masks[:, 0, 0] == 0)  # top-left corner: sky
    obs, masks = cheetah[0]
    assert not np.array_equal(masks[0], masks[-1])  # follows the agent


def test_depth_masks_from_a_tiny_depth_anything():
    model = tiny_depth_model()
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    depth = depth_of_frames(load_depth_model(model=model), frames, "cpu", batch_size=2)
    assert depth.shape == (3, 64, 48) and depth.dtype == np.float32 and np.isfinite(depth).all()
    masks = depth_masks(depth, 50, 0.1, (5, 5), 1.0)
    assert masks.shape == (3, 64, 48) and masks.dtype == np.uint8
    assert masks.min() == 0 and masks.max() == 255


def test_ema_threshold_rule_on_hand_made_depth():
    # Frame t: left half depth 0, right half depth v_t (normalised to 255 unless constant); percentile 75 of a
    # half/half frame is the upper value, so raw thresholds are [255, 0, 255] (the constant frame normalises to 0).
    depth = np.zeros((3, 4, 8), np.float32)
    depth[0, :, 4:] = 1.0
    depth[2, :, 4:] = 5.0
    raw = np.array([255.0, 0.0, 255.0])
    np.testing.assert_allclose(ema_thresholds(raw, 0.5), [255.0, 127.5, 191.25])
    np.testing.assert_allclose(ema_thresholds(raw, 1.0), raw)
    # percentile 25 -> raw thresholds [0, 0, 0]: the right half (255 > 0) is foreground, the left not
    m = depth_masks(depth, 25, 0.5, 1, 1.0)
    assert np.all(m[[0, 2], :, 4:] == 255) and np.all(m[:, :, :4] == 0) and np.all(m[1] == 0)
    # percentile 75 -> raw [255, 0, 255]; with alpha 0.5 frame 2's threshold is 191.25, so its right half (255) is
    # foreground; without smoothing (alpha 1) its threshold is 255 and nothing is
    m = depth_masks(depth, 75, 0.5, 1, 1.0)
    assert np.all(m[:2] == 0) and np.all(m[2, :, 4:] == 255) and np.all(m[2, :, :4] == 0)
    assert np.all(depth_masks(depth, 75, 1.0, 1, 1.0) == 0)
    with pytest.raises(ValueError, match="threshold_alpha"):
        ema_thresholds(raw, 0.0)


def test_blur_keeps_foreground_and_changes_background(cheetah):
    obs, masks = cheetah[0]
    out = blur_background(obs, masks, 7, 2.0)
    assert out.dtype == np.uint8 and out.shape == obs.shape
    fg = masks == 255
    np.testing.assert_array_equal(out[fg], obs[fg])
    assert (out[~fg] != obs[~fg]).mean() > 0.3
    assert np.array_equal(blur_background(obs, np.full_like(masks, 255), 7, 2.0), obs)


@pytest.mark.parametrize("kernel", [4, 0, -3, (7, 6)])
def test_bad_kernels_are_errors(kernel):
    frames, masks = np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.uint8)
    with pytest.raises(ValueError, match=str(kernel if np.isscalar(kernel) else 6)):
        blur_background(frames, masks, kernel, 1.0)
    with pytest.raises(ValueError, match="kernel"):
        depth_masks(np.zeros((1, 8, 8)), 50, 0.1, kernel, 1.0)


def test_missing_weights_name_the_model_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DepthWeightsMissing, match="depth-anything/Depth-Anything-V2-Small-hf") as e:
        load_depth_model("vits", "cpu", None)
    assert "--model-path" in str(e.value) and "HF" in str(e.value)
    with pytest.raises(DepthWeightsMissing, match="Depth-Anything-V2-Base-hf"):
        load_depth_model("vitb", "cpu", tmp_path / "empty")
    with pytest.raises(ValueError, match="vitx"):
        load_depth_model("vitx", "cpu", None)


def test_generate_masks_end_to_end_resume_and_scores(tmp_path, files):
    from scripts import generate_masks_hdf5

    data, true = files
    model_dir = tmp_path / "tiny-depth"
    tiny_depth_model().save_pretrained(model_dir)
    out = tmp_path / "tiny-masks.hdf5"
    argv = ["--input", str(data), "--output", str(out), "--percentile", "50", "--model-path", str(model_dir)]
    res = generate_masks_hdf5.main(argv + ["--true-masks", str(true)])
    assert res["written"] == ["0", "1"]
    scores = res["scores"]
    assert set(scores["per_trajectory"]) == {"0", "1"} and 0 <= scores["overall"] <= 1
    assert 0 < scores["horizon_iou"] <= 1
    with h5py.File(out, "r") as f:
        assert f.attrs["source_file"] == data.name and f.attrs["method"] == "depth"
        assert float(f.attrs["percentile"]) == 50.0 and list(f.attrs["mask_kernel"]) == [5, 5]
        for k in ("0", "1"):
            m = f[k]["masks"]
            assert m.dtype == np.uint8 and m.shape == (5, 64, 64) and m.compression == "gzip"
            assert f[k].attrs["complete"]
    # complete: refused; an interrupted group is redone, the complete one skipped
    with pytest.raises(SystemExit, match="complete"):
        generate_masks_hdf5.main(argv)
    with h5py.File(out, "a") as f:
        del f["1"].attrs["complete"]
    res = generate_masks_hdf5.main(argv)
    assert res == {"written": ["1"], "skipped": ["0"], "scores": None}
    with pytest.raises(SystemExit, match="percentile"):
        generate_masks_hdf5.main(argv[:4] + ["--percentile", "40", "--model-path", str(model_dir)])
    assert generate_masks_hdf5.main(argv + ["--overwrite"])["written"] == ["0", "1"]


def test_blur_script_with_true_masks_and_depth_model(tmp_path, files, cheetah):
    from scripts import blur_hdf5_data

    data, true = files
    out = tmp_path / "tiny-blurred.hdf5"
    argv = ["--input", str(data), "--output", str(out), "--blur-kernel", "7", "7", "--blur-sigma", "2.0"]
    blur_hdf5_data.main(argv + ["--masks", str(true)])
    with h5py.File(data, "r") as fi, h5py.File(out, "r") as fo:
        assert fo.attrs["blur_masks"] == "true" and fo.attrs["blur_source"] == true.name
        assert list(fo.attrs["blur_kernel"]) == [7, 7] and fo.attrs["blur_sigma"] == 2.0
        assert fo.attrs["domain_name"] == "cheetah" and fo.attrs["blur_method"] == "gaussian"
        for k in ("0", "1"):
            assert set(fo[k]) == set(fi[k]) and fo[k].attrs["traj_return"] == fi[k].attrs["traj_return"]
            np.testing.assert_array_equal(fo[k]["actions"][()], fi[k]["actions"][()])
            obs, masks = cheetah[int(k)]
            np.testing.assert_array_equal(fo[k]["obs"][()], blur_background(obs, masks, 7, 2.0))
            assert fo[k]["obs"].compression == "gzip"
    with pytest.raises(SystemExit, match="exists"):
        blur_hdf5_data.main(argv + ["--masks", str(true)])
    with pytest.raises(SystemExit):
        blur_hdf5_data.main(argv[:4] + ["--blur-kernel", "6", "7", "--masks", str(true), "--overwrite"])
    blur_hdf5_data.main(argv + ["--overwrite"], model=tiny_depth_model())
    with h5py.File(out, "r") as fo:
        assert fo.attrs["blur_masks"] == "depth" and "Depth-Anything-V2-Small" in fo.attrs["blur_source"]
        assert fo["0"]["obs"].shape == (5, 64, 64, 3)


def test_scripts_run_as_files_and_modules():
    for cmd in (
        [sys.executable, "scripts/generate_masks_hdf5.py", "--help"],
        [sys.executable, "-m", "scripts.blur_hdf5_data", "--help"],
    ):
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert "--input" in res.stdout


CHEETAH_EXPERT = REPO.parent / "shared" / "experts" / "cheetah-run-expert"


@pytest.mark.skipif(not CHEETAH_EXPERT.exists(), reason="released cheetah-run expert not available")
def test_collector_records_true_masks_of_the_stored_frames(tmp_path):
    from scripts.data_collection.collect_data import Config, collect
    from src.envs import make_env

    save = tmp_path / "cheetah.hdf5"
    config = Config(
        checkpoint_path=str(CHEETAH_EXPERT),
        save_path=str(save),
        num_trajectories=1,
        max_episode_steps=5,
        seed=3,
        record_masks=True,
    )
    collect(config)
    collect(Config(**{**config.__dict__, "num_trajectories": 2}))  # resumed: masks of the new trajectory appended
    masks_file = tmp_path / "cheetah-masks.hdf5"
    env = make_env("cheetah", "run", img_hw=64, frame_stack=1, max_episode_steps=5)
    with h5py.File(save, "r") as fd, h5py.File(masks_file, "r") as fm:
        assert fm.attrs["method"] == "true" and fm.attrs["source_file"] == save.name
        assert sorted(fm.keys()) == ["0", "1"]
        for k in ("0", "1"):
            masks, obs = fm[k]["masks"][()], fd[k]["obs"][()]
            assert masks.dtype == np.uint8 and masks.shape == obs.shape[:3] and fm[k]["masks"].compression == "gzip"
            # replay the stored actions: each mask is the segmentation of the state its frame was rendered from
            frame, _ = env.reset(seed=int(fd[k].attrs["seed"]))
            for t, action in enumerate(fd[k]["actions"][()]):
                np.testing.assert_array_equal(frame, obs[t])
                np.testing.assert_array_equal(segmentation_mask(env.dcs_env.physics, env.camera_id, 64, 64), masks[t])
                frame, *_ = env.step(action)
    # a dataset collected without masks cannot be resumed with them
    plain = tmp_path / "plain.hdf5"
    collect(Config(**{**config.__dict__, "save_path": str(plain), "record_masks": False}))
    with pytest.raises(FileExistsError, match="without --record_masks"):
        collect(Config(**{**config.__dict__, "save_path": str(plain), "num_trajectories": 2}))
    collect(Config(**{**config.__dict__, "save_path": str(plain), "num_trajectories": 2, "overwrite": True}))
    with h5py.File(tmp_path / "plain-masks.hdf5", "r") as fm:
        assert sorted(fm.keys()) == ["0", "1"]
    assert not list(tmp_path.glob("*.partial"))
